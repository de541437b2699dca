"""The axes of a case, as one table: each axis is declared once, here, and everything else
derives from the declarations.

An :class:`Axis` holds the axis's name (the :class:`~bench_lib.measuring.spec.Case` field), its
values and default, its command-line option and help, its field names in a profile's grid (and
in the command-line filters) and in the record, its fragment of the case id and its title in
reports, its role, whether a case's baseline keeps it, the combinations that cannot exist
(:class:`Constraint`: a usage error) and those that cannot run (:class:`SkipRule`: a visible
skip with the reason users read).

Derived from :data:`AXES`: the ``--bench-*`` options and their validation (``conftest.py``,
:mod:`bench_lib.session`), the command-line filters and the grids (:mod:`.measuring.sweep`,
:mod:`.measuring.profiles`), the ``Case`` dataclass itself with its id, baseline and
``axis_off`` (:mod:`.measuring.spec`), the identity entries of the record schema
(:mod:`bench_lib.record`), the analysing side's axis lists and set-up titles, and the options
table of the docs.

An axis that changes what a step does (autocast, compile, checkpointing, an adapter) has an
*effect*: one module in ``bench_lib.measuring.effects`` (found by discovery), or, for an axis
declared outside this package, the module its ``effect`` names. Axes declared outside are
loaded from the modules listed in the environment variable ``FREEZE_BENCH_AXES`` (comma
separated, importable, torch-free): each module-level :class:`Axis` there joins the table after
the built-in ones. This is how a new axis is added without editing any other file.

Plain Python: read by the measuring and the analysing side alike (no torch, no pandas).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .vocab import (
    ADAPTERS,
    AMPS,
    CHECKPOINTS,
    COMPILES,
    DEVICES,
    DTYPES,
    FROZEN_MODES,
    MECHANISMS,
    MODELS,
    OPTIMIZERS,
    PARALLEL,
    PATTERN_CHOICES,
    SCENARIOS,
)

__all__ = [
    "AXES",
    "AXES_ENV",
    "ROLES",
    "Axis",
    "AxisError",
    "Constraint",
    "SkipRule",
    "baseline_axes",
    "check_values",
    "constraint_error",
    "freeze_record_fields",
    "grid_axes",
    "id_fragments",
    "identity_record_fields",
    "load_axes",
    "options_markdown",
    "record_values",
    "skip_reason",
    "step_axes",
    "step_parts",
]

#: The environment variable naming modules that declare more axes.
AXES_ENV = "FREEZE_BENCH_AXES"

#: What an axis is for:
#:
#: * ``identity``: what is measured (model, sizes, optimizer, device, ...): the baseline keeps it;
#: * ``freeze``: what is frozen and how (pattern, blocks, globs, mechanism, frozen mode): the
#:   baseline sets it to its default;
#: * ``step``: how the step runs (autocast, compile, checkpointing): the baseline keeps it, and a
#:   case with a step axis on is also timed against its twin with the axis off;
#: * ``adapter``: what is trained instead of (or beside) the weights: the baseline drops it
#:   (full fine-tuning of the same model);
#: * ``setup``: where the step runs (data-parallel set-up and world size): the baseline keeps it.
ROLES: tuple[str, ...] = ("identity", "freeze", "step", "adapter", "setup")

Values = Mapping[str, Any]


class AxisError(ValueError):
    """An axis value outside its choices, or a combination that cannot exist."""


@dataclass(frozen=True)
class Constraint:
    """A combination that cannot exist: ``check(values)`` returns the message of the usage
    error, or ``None``."""

    name: str
    check: Callable[[Values], str | None]


@dataclass(frozen=True)
class SkipRule:
    """A combination that exists but cannot run here: ``reason(values)`` returns the reason
    users read beside the skipped case, or ``None``."""

    name: str
    reason: Callable[[Values], str | None]


@dataclass(frozen=True)
class Axis:
    """One axis of a case. See the module docstring."""

    #: The Case field (and, unless ``record`` says otherwise, the record field).
    name: str
    #: One line: the option's help and the docs' description.
    doc: str
    #: ``choice`` (one of ``values``), ``int`` (an integer >= ``minimum``), ``ints`` (a tuple of
    #: integers), ``strs`` (a tuple of strings), ``text`` (a string), ``sizes`` (name -> int).
    kind: str = "choice"
    values: tuple[str, ...] = ()
    #: The value of a case that does not set it (for ``choice`` the first of ``values``).
    default: Any = None
    role: str = "identity"
    #: The ``--bench-*`` option that replaces the axis's values in every grid ("" for none).
    option: str = ""
    #: The field in a profile's grid and in the command-line filters (a tuple of values); ""
    #: when the axis is not swept that way.
    grid: str = ""
    #: A grid's values when it does not name them ("" -> ``(default,)``).
    grid_default: tuple[Any, ...] = ()
    #: Where a profile sets the axis: ``grid`` (per grid), ``profile`` (for the whole profile:
    #: device, threads), ``run`` (the command line only: seed), or ``case`` (set by sweep
    #: generation from other axes: depth, pattern's blocks, globs, the factory, sizes).
    scope: str = "grid"
    #: The record field ("" -> ``name``).
    record: str = ""
    #: The record field's unit, and when it is null.
    unit: str = "-"
    null_when: str = ""
    #: The case id's fragment for the axis's value (``None``: nothing), given all the case's
    #: values; fragments join with "-" in ``id_rank`` order.
    fragment: Callable[[Values], str | None] | None = None
    id_rank: float = 100.0
    #: The axis's part of a set-up's title in reports (``None``: nothing), given a row.
    title: Callable[[Values], str | None] | None = None
    #: Another axis this one depends on: when that axis is at its default, this one is too
    #: (``lora_rank`` needs an adapter, ``world`` a parallel set-up), and the sweep pairs
    #: this axis's values only with the other's non-default values.
    depends_on: str = ""
    minimum: int = 1
    constraints: tuple[Constraint, ...] = ()
    skips: tuple[SkipRule, ...] = ()
    #: An axis declared outside this package: the module holding its effect ("" for none, or
    #: for a built-in axis, whose effect is found in ``bench_lib.measuring.effects``).
    effect: str = ""
    #: Files written before the axis existed lack its record field: they ran the default.
    optional_in_record: bool = True
    #: The option's metavar and extra help for the docs table.
    metavar: str = "LIST"
    docs_default: str = ""
    #: Every case gives it (no default): model, depth, width, batch size.
    required: bool = False

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise AxisError(f"axis {self.name!r}: role={self.role!r} is not one of {ROLES}")
        if self.kind == "choice" and self.default is None and self.values and not self.required:
            object.__setattr__(self, "default", self.values[0])

    @property
    def record_field(self) -> str:
        return self.record or self.name

    @property
    def baseline_keeps(self) -> bool:
        """Whether a case's baseline keeps this axis's value (else: its default)."""
        return self.role in ("identity", "step", "setup")

    @property
    def grid_values(self) -> tuple[Any, ...]:
        return self.grid_default or (self.default,)

    def check(self, value: Any) -> Any:
        """``value`` if it is valid for this axis; else :class:`AxisError` naming the axis, the
        value and the choices."""
        if self.kind == "choice":
            if value not in self.values:
                raise AxisError(f"{self.name}={value!r} is not one of: {', '.join(self.values)}")
        elif self.kind == "int" and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or (value < self.minimum and value != self.default)
        ):
            what = "a positive integer" if self.minimum == 1 else f"an integer >= {self.minimum}"
            raise AxisError(f"{self.name}={value!r} must be {what}")
        return value


# ------------------------------------------------------------------------------ constraints


def _needs_factory(v: Values) -> str | None:
    if (v["model"] == "factory") != bool(v["factory"]):
        return (
            f"model={v['model']!r} with factory={v['factory']!r}: model 'factory' needs a "
            "factory (--bench-model-factory MODULE:FUNCTION) and no other model takes one"
        )
    return None


def _names_needs_globs(v: Values) -> str | None:
    if (v["pattern"] == "names") != bool(v["freeze"]):
        return (
            f"pattern={v['pattern']!r} with freeze={list(v['freeze'])}: pattern 'names' needs "
            "parameter-name globs (--bench-freeze) and no other pattern takes them"
        )
    return None


def _seed_scenario_is_xy(v: Values) -> str | None:
    if v["scenario"] == "seed" and v["model"] != "xy":
        return f"scenario 'seed' is the X-feeds-Y model: model={v['model']!r} must be 'xy'"
    return None


def _rank_needs_adapter(v: Values) -> str | None:
    if v["adapter"] == "none" and v["lora_rank"] != 0:
        return f"lora_rank={v['lora_rank']!r} needs adapter 'lora'"
    if v["adapter"] != "none" and not (isinstance(v["lora_rank"], int) and v["lora_rank"] >= 1):
        return f"lora_rank={v['lora_rank']!r} must be a positive integer with adapter 'lora'"
    return None


def _world_needs_parallel(v: Values) -> str | None:
    if v["parallel"] == "none" and v["world"] != 1:
        return (
            f"world={v['world']} with parallel='none': a world size needs a parallel set-up "
            f"(--bench-parallel {', '.join(PARALLEL[1:])})"
        )
    return None


def _baseline_pairs(v: Values) -> str | None:
    if (v["pattern"] == "none") != (v["mechanism"] == "none"):
        return (
            f"pattern={v['pattern']!r} with mechanism={v['mechanism']!r}: the baseline is "
            "pattern 'none' with mechanism 'none'; every other pattern needs a mechanism"
        )
    if v["pattern"] == "names" and v["frozen_blocks"]:
        return "pattern 'names' freezes parameters by name: frozen_blocks stay empty"
    return None


# ------------------------------------------------------------------------------ skip rules


def _amp_with_low_precision(v: Values) -> str | None:
    if v["amp"] != "none" and v["dtype"] != "float32":
        return (
            f"--bench-amp {v['amp']} autocasts a float32 model; with --bench-dtype {v['dtype']} "
            "the whole model is already cast, a different set-up"
        )
    return None


def _fp16_needs_cuda(v: Values) -> str | None:
    if v["amp"] == "fp16" and v["device"] != "cuda":
        return "--bench-amp fp16 (autocast with torch.amp.GradScaler) runs on CUDA only"
    return None


def _checkpoint_needs_trainable_blocks(v: Values) -> str | None:
    if v["checkpoint"] == "on" and v["pattern"] == "all_but_head":
        return (
            "--bench-checkpoint on checkpoints the blocks the pattern leaves trainable; "
            "all_but_head leaves none (the same step as without it)"
        )
    return None


def _compile_under_fsdp1(v: Values) -> str | None:
    if v["compile"] == "on" and v["parallel"] == "fsdp1":
        return (
            "--bench-compile on with --bench-parallel fsdp1: torch.compile compiles no frame of "
            "the step in FSDP1's (FullyShardedDataParallel, flat parameters) workers with this "
            "torch, so the step would run eager; FSDP2 (fsdp) and fsdp1_orig_params compile"
        )
    return None


def _compile_ddp_unused(v: Values) -> str | None:
    if (
        v["compile"] == "on"
        and v["parallel"] == "ddp"
        and v["mechanism"] in ("no_grad", "inference_mode", "inference_mode_nocopy")
        and v["pattern"] != "none"
    ):
        return (
            f"--bench-compile on with plain ddp and {v['mechanism']}: the frozen blocks' "
            "parameters are unused, which plain DDP refuses in eager steps (its reduction "
            "error); compiled, the step runs, but the case's eager passes (the FLOP count, the "
            "compile-off twin) are refused, so it cannot be measured whole: use ddp_find_unused"
        )
    return None


def _adapter_needs_trainable_blocks(v: Values) -> str | None:
    if v["adapter"] != "none" and v["pattern"] == "all_but_head":
        return "pattern all_but_head with an adapter leaves no block to adapt"
    return None


# ------------------------------------------------------------------------------ fragments


def _pattern_fragment(v: Values) -> str:
    if v["pattern"] == "explicit":
        return "blocks" + ".".join(str(i) for i in v["frozen_blocks"])
    return str(v["pattern"])


def _factory_label(spec: str) -> str:
    """How a case id names a factory: ``mymodule.build`` for ``mymodule:build``, and the file's
    stem for a path (``mine.build`` for ``path/to/mine.py:build``)."""
    target, _, function = spec.rpartition(":")
    if target.endswith(".py") or "/" in target or "\\" in target:
        target = target.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py")
    return f"{target}.{function}"


def _off_or(text: Callable[[Any], str], default: Any, name: str) -> Callable[[Values], str | None]:
    """A fragment or title: ``text(value)`` unless the axis ``name`` is at ``default``."""

    def render(v: Values) -> str | None:
        value = v.get(name, default)
        return None if value in (default, None) else text(value)

    return render


def _is_parallel(v: Values) -> bool:
    return v.get("parallel", "none") not in ("none", None)


#: The built-in axes, in Case field order (positional construction follows it).
_BUILTIN: tuple[Axis, ...] = (
    Axis(
        "model",
        "model families",
        required=True,
        values=MODELS,
        role="identity",
        option="--bench-model",
        grid="models",
        scope="case",
        id_rank=1,
        fragment=lambda v: (
            f"factory:{_factory_label(v['factory'])}" if v["factory"] else v["model"]
        ),
        optional_in_record=False,
        docs_default="the profile's",
    ),
    Axis(
        "depth",
        "depths (layers)",
        required=True,
        kind="int",
        option="--bench-depth",
        grid="depths",
        scope="case",
        unit="layers",
        id_rank=2,
        fragment=lambda v: f"d{v['depth']}",
        optional_in_record=False,
        docs_default="the profile's",
    ),
    Axis(
        "width",
        "widths (hidden size, d_model, or channels)",
        required=True,
        kind="int",
        option="--bench-width",
        grid="widths",
        scope="case",
        unit="features",
        id_rank=3,
        fragment=lambda v: f"w{v['width']}",
        optional_in_record=False,
        docs_default="the profile's",
    ),
    Axis(
        "batch_size",
        "batch sizes (per rank under data parallelism)",
        required=True,
        kind="int",
        option="--bench-batch",
        grid="batch_sizes",
        scope="case",
        unit="samples",
        id_rank=4,
        fragment=lambda v: f"b{v['batch_size']}",
        optional_in_record=False,
        docs_default="the profile's",
    ),
    Axis(
        "pattern",
        "frozen-layer patterns",
        values=PATTERN_CHOICES,
        role="freeze",
        option="--bench-pattern",
        grid="patterns",
        scope="case",
        id_rank=10,
        fragment=_pattern_fragment,
        optional_in_record=False,
        docs_default="the profile's",
    ),
    Axis(
        "frozen_blocks",
        "frozen block indices, resolved from the pattern",
        kind="ints",
        default=(),
        role="freeze",
        scope="case",
        unit="block indices",
        id_rank=10.5,
        optional_in_record=False,
    ),
    Axis(
        "mechanism",
        "freeze mechanisms",
        values=MECHANISMS,
        role="freeze",
        option="--bench-mechanism",
        grid="mechanisms",
        scope="case",
        id_rank=11,
        fragment=lambda v: str(v["mechanism"]),
        optional_in_record=False,
        docs_default="the profile's",
    ),
    Axis(
        "optimizer",
        "optimizers (AdamW, SGD with momentum 0.9; weight decay 0.01, lr 1e-3)",
        values=OPTIMIZERS,
        option="--bench-optimizer",
        grid="optimizers",
        id_rank=13,
        fragment=lambda v: str(v["optimizer"]),
        optional_in_record=False,
        docs_default="the profile's",
    ),
    Axis(
        "device",
        "devices",
        values=DEVICES,
        option="--bench-device",
        grid="devices",
        scope="profile",
        id_rank=14,
        fragment=lambda v: str(v["device"]),
        optional_in_record=False,
        docs_default="`cpu` (`cuda` for `gpu` and `full`)",
    ),
    Axis(
        "dtype",
        "dtypes of the whole model",
        values=DTYPES,
        option="--bench-dtype",
        grid="dtypes",
        id_rank=15,
        fragment=lambda v: str(v["dtype"]),
        optional_in_record=False,
        docs_default="the profile's",
    ),
    Axis(
        "threads",
        "torch intra-op thread counts, pinned per case",
        kind="int",
        default=1,
        option="--bench-threads",
        grid="threads",
        scope="profile",
        unit="threads",
        id_rank=25,
        fragment=_off_or(lambda t: f"t{t}", 1, "threads"),
        optional_in_record=False,
        docs_default="`1`",
    ),
    Axis(
        "frozen_mode",
        "modes of the frozen blocks (eval: BatchNorm uses running statistics)",
        values=FROZEN_MODES,
        role="freeze",
        option="--bench-frozen-mode",
        grid="frozen_modes",
        scope="case",
        id_rank=12,
        fragment=_off_or(lambda m: str(m), "train", "frozen_mode"),
        optional_in_record=False,
        docs_default="the profile's",
    ),
    Axis(
        "seed",
        "seeds of the model initialisation (the batch uses seed + 1)",
        kind="int",
        default=0,
        minimum=0,
        option="--bench-seed",
        grid="seeds",
        scope="run",
        optional_in_record=False,
        docs_default="`0`",
    ),
    Axis(
        "scenario",
        "`sweep`, or `seed` for the X-feeds-Y scenario",
        values=SCENARIOS,
        scope="case",
        id_rank=0,
        fragment=_off_or(lambda s: "seed", "sweep", "scenario"),
        optional_in_record=False,
        constraints=(Constraint("seed is xy", _seed_scenario_is_xy),),
    ),
    Axis(
        "extra",
        "family sizes beside depth, width and batch (seq_len, image_size, ...)",
        kind="sizes",
        default=(),
        scope="case",
        record="",
        optional_in_record=False,
    ),
    Axis(
        "factory",
        "your own model (a function returning the model, its blocks and a batch maker; makes "
        "`factory` the only model unless --bench-model is given)",
        kind="text",
        default="",
        option="--bench-model-factory",
        scope="case",
        metavar="MODULE:FUNCTION",
        null_when="the model is not `factory`",
        constraints=(Constraint("factory", _needs_factory),),
        docs_default="quick: the example U-Net",
    ),
    Axis(
        "freeze",
        "parameter-name globs of pattern 'names' (fnmatch)",
        kind="strs",
        default=(),
        role="freeze",
        option="--bench-freeze",
        scope="case",
        record="freeze_globs",
        metavar="GLOBS",
        docs_default="-",
        null_when="the pattern is not `names`",
        constraints=(Constraint("names", _names_needs_globs),),
    ),
    Axis(
        "amp",
        "autocast around forward and loss (float32 parameters; fp16 with GradScaler)",
        values=AMPS,
        role="step",
        option="--bench-amp",
        grid="amps",
        id_rank=20,
        fragment=_off_or(lambda a: f"amp_{a}", "none", "amp"),
        title=_off_or(lambda a: f"autocast {a}", "none", "amp"),
        skips=(
            SkipRule("amp with low precision", _amp_with_low_precision),
            SkipRule("fp16 needs cuda", _fp16_needs_cuda),
        ),
        docs_default="`none`",
    ),
    Axis(
        "compile",
        "torch.compile (default backend) of the step's forward and loss",
        values=COMPILES,
        role="step",
        option="--bench-compile",
        grid="compiles",
        id_rank=21,
        fragment=_off_or(lambda c: "compiled", "off", "compile"),
        title=_off_or(lambda c: "compiled", "off", "compile"),
        skips=(
            SkipRule("compile under fsdp1", _compile_under_fsdp1),
            SkipRule("compile with ddp and unused parameters", _compile_ddp_unused),
        ),
        docs_default="`off`",
    ),
    Axis(
        "checkpoint",
        "non-reentrant activation checkpointing of the trainable blocks",
        values=CHECKPOINTS,
        role="step",
        option="--bench-checkpoint",
        grid="checkpoints",
        id_rank=22,
        fragment=_off_or(lambda c: "ckpt", "off", "checkpoint"),
        title=_off_or(lambda c: "checkpointed", "off", "checkpoint"),
        skips=(SkipRule("checkpoint needs trainable blocks", _checkpoint_needs_trainable_blocks),),
        docs_default="`off`",
    ),
    Axis(
        "adapter",
        "adapters on the blocks the pattern leaves trainable (peft)",
        values=ADAPTERS,
        role="adapter",
        option="--bench-adapter",
        grid="adapters",
        id_rank=23,
        fragment=lambda v: None if v["adapter"] == "none" else f"{v['adapter']}{v['lora_rank']}",
        skips=(SkipRule("adapter needs trainable blocks", _adapter_needs_trainable_blocks),),
        docs_default="`none`",
    ),
    Axis(
        "lora_rank",
        "LoRA ranks (with --bench-adapter lora)",
        kind="int",
        default=0,
        role="adapter",
        option="--bench-lora-rank",
        grid="lora_ranks",
        grid_default=(8,),
        depends_on="adapter",
        null_when="adapter is `none`",
        constraints=(Constraint("rank needs adapter", _rank_needs_adapter),),
        docs_default="`8`",
    ),
    Axis(
        "parallel",
        "data-parallel set-ups (none: one process)",
        values=PARALLEL,
        role="setup",
        option="--bench-parallel",
        grid="parallel",
        id_rank=30,
        fragment=lambda v: v["parallel"] if _is_parallel(v) else None,
        docs_default="the profile's (`none`, and grids of their own)",
    ),
    Axis(
        "world",
        "world sizes (ranks) of the parallel set-ups; on CUDA one GPU each",
        kind="int",
        default=1,
        role="setup",
        option="--bench-world",
        grid="worlds",
        grid_default=(2,),
        record="world_size",
        unit="ranks",
        id_rank=31,
        depends_on="parallel",
        fragment=lambda v: f"w{v['world']}" if _is_parallel(v) else None,
        constraints=(Constraint("world needs parallel", _world_needs_parallel),),
        docs_default="`2`",
    ),
)

#: Constraints that tie several axes together (checked after every axis's own).
CROSS_CONSTRAINTS: tuple[Constraint, ...] = (Constraint("baseline", _baseline_pairs),)


def load_axes(extra_modules: Iterable[str] = ()) -> dict[str, Axis]:
    """The built-in axes, then those declared at module level in ``extra_modules`` (by default
    the modules named in ``$FREEZE_BENCH_AXES``). Raises :class:`AxisError` for a module that
    cannot be imported or an axis whose name is taken."""
    axes = {a.name: a for a in _BUILTIN}
    for module_name in extra_modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise AxisError(f"{AXES_ENV}: cannot import {module_name!r}: {e}") from None
        for obj in vars(module).values():
            if isinstance(obj, Axis):
                if obj.name in axes and axes[obj.name] is not obj:
                    raise AxisError(f"{module_name}: axis {obj.name!r} is declared twice")
                axes[obj.name] = obj
    return axes


def _env_modules() -> list[str]:
    return [m.strip() for m in os.environ.get(AXES_ENV, "").split(",") if m.strip()]


#: Every axis by name: the built-in ones, then those of ``$FREEZE_BENCH_AXES``.
AXES: dict[str, Axis] = load_axes(_env_modules())


# ------------------------------------------------------------------------------ derived views


def grid_axes() -> list[Axis]:
    """The axes a profile sweeps as a tuple of values per grid or profile (not ``case``)."""
    return [a for a in AXES.values() if a.scope != "case" and a.grid]


def step_axes() -> dict[str, tuple[str, ...]]:
    """The step axes by name, with their values (default first)."""
    return {a.name: a.values for a in AXES.values() if a.role == "step"}


def baseline_axes() -> list[Axis]:
    """The axes a baseline resets to their defaults."""
    return [a for a in AXES.values() if not a.baseline_keeps]


#: Record fields that identify a case beside the axes' own: the family sizes a Case carries in
#: ``extra`` (``family_sizes`` is not one: files before it lack it).
_SIZE_FIELDS = ("seq_len", "image_size")


def identity_record_fields() -> tuple[str, ...]:
    """The record fields that identify a case inside one run (what ``case_id`` encodes): every
    axis's record field, with ``extra`` spelled as the family sizes."""
    out: list[str] = []
    for a in AXES.values():
        if a.name == "extra":
            continue
        out.append(a.record_field)
        if a.name == "batch_size":
            out.extend(_SIZE_FIELDS)
    first = ["scenario", "model", "factory"]
    return (*first, *(f for f in out if f not in first))


def freeze_record_fields() -> tuple[str, ...]:
    """The identity record fields that say what is frozen and how (the baseline resets them)."""
    return tuple(a.record_field for a in baseline_axes())


def record_defaults() -> dict[str, Any]:
    """The value of each optional axis's record field in files written before it existed."""
    out: dict[str, Any] = {}
    for a in AXES.values():
        if a.optional_in_record and a.kind in ("choice", "int") and a.name != "lora_rank":
            out[a.record_field] = a.default
    return out


def id_fragments(values: Values) -> str:
    """The case id of ``values`` (every axis's value by Case field name)."""
    parts = sorted(
        ((a.id_rank, a.fragment(values)) for a in AXES.values() if a.fragment is not None),
        key=lambda t: t[0],
    )
    return "-".join(str(p) for _, p in parts if p)


def step_parts(row: Values) -> list[tuple[str, str]]:
    """The step axes a record row sets (every axis of role ``step``, declared here or outside),
    as (title, id fragment) pairs: ``("autocast bf16", "amp_bf16")``. A value that is missing
    (``None``: a file written before the axis) is the axis's default."""
    out = []
    for a in AXES.values():
        if a.role != "step" or a.title is None:
            continue
        value = row.get(a.record_field)
        values = {**row, a.name: a.default if value is None else value}
        title = a.title(values)
        if title:
            fragment = a.fragment(values) if a.fragment is not None else None
            out.append((title, fragment or a.name))
    return out


def check_values(values: Values) -> None:
    """Every axis's value checked, then every constraint; raises :class:`AxisError`."""
    for a in AXES.values():
        a.check(values[a.name])
    if (message := constraint_error(values)) is not None:
        raise AxisError(message)


def constraint_error(values: Values) -> str | None:
    """The first constraint ``values`` break, or ``None``."""
    for a in AXES.values():
        for c in a.constraints:
            if (message := c.check(values)) is not None:
                return message
    for c in CROSS_CONSTRAINTS:
        if (message := c.check(values)) is not None:
            return message
    return None


def skip_reason(values: Values) -> str | None:
    """Why a case of ``values`` cannot run (the first declared skip rule that applies)."""
    for a in AXES.values():
        for rule in a.skips:
            if (reason := rule.reason(values)) is not None:
                return reason
    return None


def options_markdown() -> str:
    """The options table of the docs, one row per axis with an option."""
    lines = ["| option | values | default |", "| --- | --- | --- |"]
    for a in AXES.values():
        if not a.option:
            continue
        if a.kind == "choice":
            values = ", ".join(f"`{v}`" for v in a.values)
        elif a.kind == "int":
            values = "non-negative integers" if a.minimum == 0 else "positive integers"
        else:
            values = a.metavar
        default = a.docs_default or f"`{a.default}`"
        lines.append(f"| `{a.option}` | {a.doc}: {values} | {default} |")
    return "\n".join(lines)


def record_values(values: Values) -> dict[str, Any]:
    """A case's axis values as record fields: each under its record name, tuples as lists,
    and ``None`` where the axis declares when it is null and holds its default (``factory``
    of a built-in model, the globs of a block pattern, the rank without an adapter)."""
    out: dict[str, Any] = {}
    for a in AXES.values():
        if a.name == "extra":
            continue
        value = values[a.name]
        if a.null_when and value == a.default:
            value = None
        elif a.kind in ("ints", "strs"):
            value = list(value)
        out[a.record_field] = value
    return out
