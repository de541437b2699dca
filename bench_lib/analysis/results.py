"""Benchmark files in, one tidy table out.

Reads pytest-benchmark JSON files written by the suite (``--benchmark-json``) and the suite's
JSON-lines journals (``RUN.json.journal.jsonl``), told apart by their content, not their name.
:func:`load_run` checks a file and returns a :class:`Run` (both from
:mod:`bench_lib.analysis.reading`, re-exported here); :func:`tidy` turns runs into one
:class:`pandas.DataFrame` with one row per case per file. Every problem with an input file raises
:class:`InputError`, whose message is one line naming the file and the problem.

The table keeps the record's units: bytes are bytes and seconds are seconds. :func:`scale`
picks a display unit (KiB, ms, ...) for renderers; nothing here rounds.

This module, like the whole analysing side, never imports torch: everything it knows, machine
information included, comes from the files.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..axes import freeze_record_fields, identity_record_fields, record_defaults, step_axes
from ..record import FIELDS
from ..vocab import MECHANISMS, PATTERN_CHOICES
from .reading import KNOWN_SCHEMA_VERSIONS, Entry, InputError, Run, load_run, load_runs

__all__ = [
    "AXIS_DEFAULTS",
    "BASELINE_KEY",
    "BYTE_UNITS",
    "COLUMNS",
    "EN_DASH",
    "FREEZE_AXES",
    "IDENTITY_AXES",
    "KNOWN_SCHEMA_VERSIONS",
    "MACHINE_KEYS",
    "NOISE_THRESHOLD",
    "OPTIONAL_FIELDS",
    "SECOND_UNITS",
    "TIMES",
    "Entry",
    "InputError",
    "Run",
    "has_adapter",
    "has_step_axis",
    "is_baseline_row",
    "is_missing",
    "load_run",
    "load_runs",
    "mechanism_order",
    "order_names",
    "pattern_label",
    "pattern_label_order",
    "pattern_order",
    "safe_ratio",
    "scale",
    "setup_key",
    "table_csv",
    "tidy",
]

#: Values of the axes that files written before them lack: such a file ran the default
#: (from the axis table, :func:`bench_lib.axes.record_defaults`).
AXIS_DEFAULTS: dict[str, Any] = record_defaults()

#: Record fields that files written before they existed lack. A missing one becomes a null
#: column, and renderers say "not measured in this run" instead of failing.
OPTIONAL_FIELDS: tuple[str, ...] = (
    "valid",
    "verdict",
    "verdict_detail",
    "flops_forward",
    "flops_backward",
    "flops_ratio",
    "flops_uncounted_ops",
    "forward_s",
    "backward_s",
    "optimizer_s",
    # Schema 2: memory alive that is not the workload's, the libraries' workspace, and where a
    # case's time went.
    "foreign_bytes",
    "workspace_bytes",
    "pass_seconds",
    # Real models, factories and freezing by name.
    "factory",
    "n_blocks",
    "family_sizes",
    "freeze_globs",
    "frozen_param_names",
    "frozen_modules",
    "tied_frozen",
    # Step axes and adapters.
    *AXIS_DEFAULTS,
    "lora_rank",
    "adapter_params",
    # What the step axes did: autocast's weight copies, the axis twin, dynamo's counts.
    "autocast_weight_bytes",
    "axis_twin",
    "axis_twin_ratio",
    "axis_twin_ratio_ci_low",
    "axis_twin_ratio_ci_high",
    "compile_s",
    "compiled_frames",
    "graph_breaks",
    "recompiles",
    # Data parallelism (parallel and world_size are among AXIS_DEFAULTS).
    "rank_peak_memory_bytes",
    "comm_bytes",
    "ddp_buckets",
)

#: ``machine_info`` keys copied into ``machine_<key>`` columns (absent ones are null).
MACHINE_KEYS: tuple[str, ...] = (
    "node",
    "system",
    "release",
    "machine",
    "python_implementation",
    "python_version",
    "torch_version",
    "torch_cuda_version",
    "cuda_available",
    "gpu_name",
    "gpu_count",
    "gpu_memory_bytes",
    "cpu_model",
    "cpu_count_logical",
    "cpu_count_physical",
    "memory_total_bytes",
    "torch_threads",
    "torch_interop_threads",
    "omp_num_threads",
)

#: pytest-benchmark ``stats`` keys copied into columns, and the column each becomes.
_STATS_COLUMNS: dict[str, str] = {
    "median": "median_s",
    "iqr": "iqr_s",
    "mean": "mean_s",
    "min": "min_s",
    "stddev": "stddev_s",
    "rounds": "stats_rounds",
    "data": "samples",
}

#: The axes that identify a case inside one run (what ``case_id`` encodes, field by field),
#: from the axis table: every axis's record field, with the family sizes ``seq_len`` and
#: ``image_size`` that a Case carries in ``extra`` (``family_sizes`` is not an axis: files
#: before it lack it, and comparisons across versions must still match).
IDENTITY_AXES: tuple[str, ...] = identity_record_fields()


#: The identity axes that say what is frozen and how; every other axis is shared with the
#: case's baseline (from the axis table: the axes whose role the baseline resets).
FREEZE_AXES: tuple[str, ...] = freeze_record_fields()

#: The fields that make a case's baseline (in the same file): same everything, nothing frozen.
BASELINE_KEY: tuple[str, ...] = (
    "source",
    *(a for a in IDENTITY_AXES if a not in FREEZE_AXES),
)

#: A case's time ratio is *noisy* when its 95% interval is wider than this fraction of the
#: ratio, or when the run had too few pairs to give an interval at all.
NOISE_THRESHOLD = 0.10

#: Derived and bookkeeping columns of :func:`tidy`'s table: name -> (unit, meaning). Record
#: fields are documented in :data:`bench_lib.record.FIELDS`.
COLUMNS: dict[str, tuple[str, str]] = {
    "source": ("-", "the file the row came from, as given on the command line"),
    "source_label": ("-", "short unique name of that file (its base name)"),
    "source_format": ("-", "`pytest-benchmark` or `journal`"),
    "run_datetime": ("-", "when the run was written (the file's `datetime`)"),
    "profile": ("-", "the sweep profile of the run"),
    "name": ("-", "pytest-benchmark's benchmark name"),
    "group": ("-", "pytest-benchmark's group (the baseline's case id)"),
    "median_s": ("s", "median step time of the timed rounds"),
    "iqr_s": ("s", "interquartile range of the timed rounds"),
    "mean_s": ("s", "mean step time of the timed rounds"),
    "min_s": ("s", "fastest timed round"),
    "stddev_s": ("s", "standard deviation of the timed rounds"),
    "stats_rounds": ("rounds", "timed rounds pytest-benchmark kept"),
    "samples": ("list of s", "every timed round (pytest-benchmark's stats.data)"),
    "validity": ("-", "`valid`, `invalid`, `failed` (status not ok) or `unknown` (not measured)"),
    "pattern_label": (
        "-",
        "the pattern as shown: `explicit [1, 3]` with its blocks, ` (eval)` for frozen eval mode",
    ),
    "ratio_ci_width": ("fraction", "(ci_high - ci_low) / time_ratio; null without an interval"),
    "noisy": ("bool", f"ratio interval wider than {NOISE_THRESHOLD:.0%} of the ratio, or none"),
    "has_baseline": ("bool", "the baseline of this case is in the same file"),
    "base_median_s": ("s", "the baseline's median step time"),
    "base_peak_memory_bytes": ("bytes", "the baseline's peak memory"),
    "base_saved_activation_bytes": ("bytes", "the baseline's saved activations"),
    "base_grad_bytes": ("bytes", "the baseline's gradient bytes"),
    "base_flops_backward": ("FLOPs", "the baseline's backward FLOPs"),
    "base_backward_s": ("s", "the baseline's backward phase time"),
    "peak_ratio": ("ratio", "peak_memory_bytes / the baseline's peak_memory_bytes"),
    "saved_activation_ratio": ("ratio", "saved_activation_bytes / the baseline's"),
    "flops_backward_ratio": ("ratio", "flops_backward / the baseline's"),
    "backward_ratio": ("ratio", "backward_s / the baseline's backward_s"),
}
for _key in MACHINE_KEYS:
    COLUMNS[f"machine_{_key}"] = ("-", f"machine_info.{_key} of the file")
del _key

#: Columns that say where a row came from, first in the table.
_FILE_COLUMNS: tuple[str, ...] = (
    "source",
    "source_label",
    "source_format",
    "run_datetime",
    "profile",
    "name",
    "group",
)

#: Columns copied from a case's baseline row into ``base_<column>``.
_BASE_COPIES: tuple[str, ...] = (
    "median_s",
    "peak_memory_bytes",
    "saved_activation_bytes",
    "grad_bytes",
    "flops_backward",
    "backward_s",
)

#: Ratios to the baseline: column -> (numerator, denominator).
_BASE_RATIOS: dict[str, tuple[str, str]] = {
    "peak_ratio": ("peak_memory_bytes", "base_peak_memory_bytes"),
    "saved_activation_ratio": ("saved_activation_bytes", "base_saved_activation_bytes"),
    "flops_backward_ratio": ("flops_backward", "base_flops_backward"),
    "backward_ratio": ("backward_s", "base_backward_s"),
}

#: Characters renderers share: the multiplication sign of ratios (0.62x) and the en dash of
#: ranges, as escapes so that the source stays ASCII-unambiguous.
TIMES = "\u00d7"
EN_DASH = "\u2013"

#: Display units, largest first: (name, size in the stored unit).
BYTE_UNITS: tuple[tuple[str, float], ...] = (
    ("GiB", 2.0**30),
    ("MiB", 2.0**20),
    ("KiB", 2.0**10),
    ("B", 1.0),
)
SECOND_UNITS: tuple[tuple[str, float], ...] = (
    ("s", 1.0),
    ("ms", 1e-3),
    ("µs", 1e-6),
    ("ns", 1e-9),
)


def is_missing(value: Any) -> bool:
    """True for None, NaN and pandas' NA/NaT (not for lists, which pd.isna would map)."""
    if value is None:
        return True
    if isinstance(value, (list, tuple, dict, np.ndarray)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def scale(value: float, units: Sequence[tuple[str, float]]) -> tuple[float, str]:
    """``value`` in the largest unit of ``units`` it is at least 1 of: 1536 B -> (1.5, 'KiB')."""
    magnitude = abs(value)
    for name, size in units:
        if magnitude >= size:
            return value / size, name
    name, size = units[-1]
    return value / size, name


def order_names(names: Iterable[str], known: Sequence[str]) -> list[str]:
    """Distinct ``names``: those in ``known`` first in its order, the others alphabetically.

    Mechanisms and patterns are open strings (trap variants are welcome); this keeps the six
    known mechanisms in their usual order and appends anything else.
    """
    distinct = {str(n) for n in names if not is_missing(n)}
    first = [k for k in known if k in distinct]
    return first + sorted(distinct - set(first))


def pattern_label(row: Mapping[str, Any]) -> str:
    """``middle``, ``explicit [1, 3]`` (its blocks), ``prefix (eval)`` (frozen blocks in eval
    mode): a pattern as tables and figures show it, one label per distinct frozen setting."""
    label = str(row.get("pattern"))
    blocks: Any = row.get("frozen_blocks")
    if label == "explicit" and isinstance(blocks, (list, tuple)):
        label += " [" + ", ".join(str(b) for b in blocks) + "]"
    mode: Any = row.get("frozen_mode")
    if not is_missing(mode) and mode != "train":
        label += f" ({mode})"
    return label


def pattern_label_order(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Distinct pattern labels of ``rows``, in :func:`pattern_order` of their patterns."""
    pairs = {(str(r.get("pattern")), str(r.get("pattern_label"))) for r in rows}
    order = pattern_order(p for p, _ in pairs)
    return [label for _, label in sorted(pairs, key=lambda x: (order.index(x[0]), x[1]))]


def mechanism_order(names: Iterable[str]) -> list[str]:
    return order_names(names, MECHANISMS)


def pattern_order(names: Iterable[str]) -> list[str]:
    return order_names(names, PATTERN_CHOICES)


# ---------------------------------------------------------------------------- the tidy table


def _labels(runs: Sequence[Run]) -> list[str]:
    """Short unique labels: base names, with the parent folder added where two collide."""
    names = [os.path.basename(r.path) or r.path for r in runs]
    out = []
    for r, n in zip(runs, names, strict=True):
        out.append(r.path if names.count(n) > 1 else n)
    return out


def _row(run: Run, label: str, entry: Entry) -> dict[str, Any]:
    row: dict[str, Any] = {
        "source": run.path,
        "source_label": label,
        "source_format": run.format,
        "run_datetime": run.datetime,
        "profile": run.profile,
        "name": entry.name,
        "group": entry.group,
    }
    row.update(entry.record)
    stats = entry.stats or {}
    for key, column in _STATS_COLUMNS.items():
        value = stats.get(key)
        row[column] = list(value) if key == "data" and value is not None else value
    for key in MACHINE_KEYS:
        row[f"machine_{key}"] = run.machine_info.get(key)
    return row


def _validity(row: Mapping[str, Any]) -> str:
    if row.get("status") != "ok":
        return "failed"
    valid = row.get("valid")
    if not is_missing(valid):
        return "valid" if bool(valid) else "invalid"
    verdict = row.get("verdict")
    if not is_missing(verdict):
        return "valid" if verdict == "ok" else "invalid"
    return "unknown"


def _ci_width(row: Mapping[str, Any]) -> float:
    lo: Any = row.get("time_ratio_ci_low")
    hi: Any = row.get("time_ratio_ci_high")
    ratio: Any = row.get("time_ratio")
    if is_missing(lo) or is_missing(hi) or is_missing(ratio) or not ratio:
        return math.nan
    return (float(hi) - float(lo)) / float(ratio)


def _key_tuple(row: Mapping[str, Any], columns: Sequence[str]) -> tuple[Any, ...]:
    return tuple(None if is_missing(row.get(c)) else _hashable(row.get(c)) for c in columns)


def _hashable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def is_baseline_row(row: Mapping[Any, Any]) -> bool:
    """Nothing frozen and no adapter (LoRA with pattern ``none`` is a case, not a baseline)."""
    return (
        row.get("mechanism") == "none"
        and row.get("pattern") == "none"
        and row.get("adapter") in (None, "none")
    )


def has_adapter(row: Mapping[Any, Any]) -> bool:
    """The case trains an adapter (LoRA): the findings about freezing mechanisms leave it out."""
    adapter = row.get("adapter")
    return not is_missing(adapter) and adapter != "none"


def has_step_axis(row: Mapping[Any, Any]) -> bool:
    """The case sets a step axis (autocast, compile, checkpointing): the findings about eager
    float32 steps leave it out, the step axes' findings take it."""
    return any(
        not is_missing(row.get(axis)) and row.get(axis) != values[0]
        for axis, values in step_axes().items()
    )


def setup_key(row: Mapping[str, Any], columns: Sequence[str] = BASELINE_KEY) -> tuple[Any, ...]:
    """The values of ``columns`` in ``row`` as a hashable tuple (nulls as None, lists as tuples)."""
    return _key_tuple(row, columns)


def tidy(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per case per file: record fields, stats, file and machine columns, derived columns.

    Columns: every :data:`~bench_lib.record.FIELDS` key and :data:`OPTIONAL_FIELDS` key (null
    where a file lacks it), any further record keys a newer writer added, and :data:`COLUMNS`.
    Failed cases (status ``oom``/``error``) are rows with null stats. Rows keep file order.
    """
    labels = _labels(runs)
    rows = [
        _row(run, label, e) for run, label in zip(runs, labels, strict=True) for e in run.entries
    ]
    fixed = list(_FILE_COLUMNS) + list(FIELDS) + list(OPTIONAL_FIELDS)
    fixed += [c for c in _STATS_COLUMNS.values()] + [f"machine_{k}" for k in MACHINE_KEYS]
    extra = sorted({k for r in rows for k in r} - set(fixed))
    columns = list(dict.fromkeys(fixed + extra))
    records = [{c: r.get(c) for c in columns} for r in rows]
    for r in records:
        for axis, default in AXIS_DEFAULTS.items():
            if is_missing(r.get(axis)):
                r[axis] = default
        r["validity"] = _validity(r)
        r["pattern_label"] = pattern_label(r)
        width = _ci_width(r)
        r["ratio_ci_width"] = width
        r["noisy"] = r["status"] == "ok" and not (width <= NOISE_THRESHOLD)
    baselines: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        if is_baseline_row(r) and r["status"] == "ok":
            baselines.setdefault(setup_key(r), r)
    for r in records:
        base = baselines.get(setup_key(r))
        r["has_baseline"] = base is not None
        for c in _BASE_COPIES:
            r[f"base_{c}"] = None if base is None else base.get(c)
        for c, (num, den) in _BASE_RATIOS.items():
            r[c] = safe_ratio(r.get(num), r.get(den))
    frame = pd.DataFrame.from_records(records, columns=columns + _DERIVED)
    return frame


_DERIVED: list[str] = [
    "validity",
    "pattern_label",
    "ratio_ci_width",
    "noisy",
    "has_baseline",
    *(f"base_{c}" for c in _BASE_COPIES),
    *_BASE_RATIOS,
]


def safe_ratio(num: Any, den: Any) -> float:
    """``num / den`` as a float; NaN when either is missing or ``den`` is 0."""
    if is_missing(num) or is_missing(den) or not den:
        return math.nan
    return float(num) / float(den)


def table_csv(frame: pd.DataFrame) -> str:
    """The tidy table as CSV text: list and mapping columns as JSON, the raw timed rounds left
    out (they stay in the benchmark files); bytes and seconds unscaled."""
    out = frame.drop(columns=["samples"], errors="ignore").copy()
    for column in out.columns:
        if out[column].map(_structured).any():
            out[column] = out[column].map(
                lambda v: json.dumps(v if isinstance(v, dict) else list(v)) if _structured(v) else v
            )
    text: str = out.to_csv(index=False, lineterminator="\n")
    return text


def _structured(value: Any) -> bool:
    return isinstance(value, (list, tuple, dict))
