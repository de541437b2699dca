"""``freeze-bench advise MODEL``: argument parsing, the run, and the screen.

Exit codes: 0 done; 2 usage (an option's value, a ``--freeze`` spec that matches nothing or
everything, a stack name that is no submodule); 3 an input that cannot be used (a path that is
not a model, a hub id not in the local cache, a factory that fails, inputs that cannot be built
from the config, a model too big for the device's free memory). On 2 and 3 one line
``freeze-bench advise: problem`` goes to stderr, and nothing is written: every check runs
before the output directory is touched.

Outputs in ``-o DIR``: ``advise.json`` (a normal freeze-bench run) and its journal, the
generated ``advise_factory.py``, ``advise-pytest.log``, ``advise.md`` (the screen and the
per-mechanism table), the backward map PNG where it can be drawn, and with ``--freeze-sweep``
``sweep-*.json`` and ``advise-sweep.png``. Text outputs are written to a temporary file and
renamed.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ..vocab import AMPS, PARALLEL
from . import running, screen
from .errors import AdviseError, input_error, usage_error
from .freezespec import FREEZE_PATTERNS, FreezeSpec, parse_freeze
from .snippet import snippet

__all__ = ["MECHANISMS", "add_arguments", "advise", "main"]

#: The candidates: every freeze mechanism but the traps.
MECHANISMS = ("no_grad", "inference_mode", "requires_grad", "optimizer_only", "backward_inputs")
PREFIX = "freeze-bench advise"
#: Frozen fractions of ``--freeze-sweep`` (prefixes), then all_but_head.
SWEEP_FRACTIONS = (0.25, 0.5, 0.75)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``advise`` (shared by ``freeze-bench advise`` and this module's main)."""
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a directory with config.json (save_pretrained), a hub id in the local Hugging "
        "Face cache, or a factory MODULE:FUNCTION / path/file.py:FUNCTION",
    )
    parser.add_argument(
        "--freeze",
        default=None,
        metavar="SPEC",
        help=f"what to freeze: a pattern ({', '.join(FREEZE_PATTERNS)}; default prefix), block "
        "indices (0-5, 0,2,4) or parameter-name globs ('model.layers.[0-3].*')",
    )
    parser.add_argument(
        "--freeze-sweep",
        action="store_true",
        help="also measure 0, 1/4, 1/2, 3/4 of the blocks frozen as prefixes and all_but_head "
        "(requires_grad), and draw time and peak against the frozen fraction",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--amp", choices=AMPS, default="none", help="autocast dtype")
    parser.add_argument("--compile", action="store_true", help="torch.compile the step")
    parser.add_argument("--checkpoint", action="store_true", help="activation checkpointing")
    parser.add_argument("--parallel", choices=PARALLEL, default="none")
    parser.add_argument(
        "--world", type=_positive, default=2, metavar="N", help="ranks of --parallel (default 2)"
    )
    parser.add_argument("--lora", action="store_true", help="add LoRA (peft) candidates")
    parser.add_argument("--batch", type=_positive, default=8, metavar="N", help="default 8")
    parser.add_argument(
        "--seq", type=_positive, default=128, metavar="N", help="tokens per sequence (default 128)"
    )
    parser.add_argument(
        "--image-size",
        type=_positive,
        default=None,
        metavar="N",
        help="image side (default: the config's, else 224)",
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        default=None,
        metavar="N",
        help="torch threads (default: the machine's physical cores)",
    )
    parser.add_argument(
        "--block-names",
        default=None,
        metavar="NAMES",
        help="override block discovery: one stack's path (e.g. encoder.block) or a comma list "
        "of submodules, each a block, in forward order",
    )
    parser.add_argument(
        "-o",
        "--out",
        default=None,
        metavar="DIR",
        help="output directory (default advise-MODELNAME)",
    )
    parser.add_argument(
        "--pairs",
        type=_positive,
        default=None,
        metavar="N",
        help="fixed rounds for the decision group instead of the stop rule (which runs until "
        "every needed interval is --margin wide, or --time)",
    )
    parser.add_argument(
        "--margin",
        type=_seconds,
        default=None,
        metavar="FRACTION",
        help="decision margin: equivalent within 1 +/- margin (default 0.05 on CPU, 0.02 on CUDA)",
    )
    parser.add_argument(
        "--time",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="time cap in seconds of the decision group's rounds (default 30; it always "
        "covers 16 rounds, however long a step takes)",
    )


def _physical_cores() -> int:
    try:
        import psutil

        return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:
        return os.cpu_count() or 1


def _write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _check_globs(spec: FreezeSpec, names: Sequence[str], model_class: str) -> None:
    for glob in spec.globs:
        if not any(fnmatch.fnmatchcase(n, glob) for n in names):
            raise usage_error(
                f"--freeze={spec.text!r}: {glob!r} matches no parameter of {model_class} (names "
                f"look like {', '.join(names[:3])})"
            )
    if all(any(fnmatch.fnmatchcase(n, g) for g in spec.globs) for n in names):
        raise usage_error(
            f"--freeze={spec.text!r} matches every parameter of {model_class}: nothing would train"
        )


def _suite_options(
    args: argparse.Namespace, factory: str, depth: int, width: int, threads: int
) -> list[str]:
    opts = [
        "--bench-profile",
        "quick",
        "--bench-model-factory",
        factory,
        "--bench-depth",
        str(depth),
        "--bench-width",
        str(width),
        "--bench-batch",
        str(args.batch),
        "--bench-threads",
        str(threads),
        "--bench-device",
        args.device,
        "--bench-group-time",
        str(args.time),
        # The baseline is timed in the decision group: the question is which mechanism, and a
        # twin's rounds cost a big model minutes.
        "--bench-no-twin",
        # A big model's step takes seconds: the cap covers 16 rounds whatever --time says.
        "--bench-group-rounds",
        "16",
    ]
    if args.pairs is not None:
        opts += ["--bench-pairs", str(args.pairs)]
    if args.margin is not None:
        opts += ["--bench-margin", str(args.margin)]
    if args.amp != "none":
        opts += ["--bench-amp", args.amp]
    if args.compile:
        opts += ["--bench-compile", "on"]
    if args.checkpoint:
        opts += ["--bench-checkpoint", "on"]
    if args.parallel != "none":
        opts += ["--bench-parallel", args.parallel, "--bench-world", str(args.world)]
    if args.lora:
        opts += ["--bench-adapter", "none,lora"]
    return opts


def _load_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise input_error(f"{path}: cannot read the run's JSON: {e}") from None
    assert isinstance(data, dict)
    return data


def _backward_map(json_path: str, png: str) -> str:
    """Draw the backward map through the analysing side (in a subprocess, so that this torch
    process never loads matplotlib); the screen's line."""
    if importlib.util.find_spec("bench_lib.analysis.backward_map") is None:
        return "not drawn: this tree has no bench_lib/analysis/backward_map.py yet"
    code = (
        "import json, os, sys\nfrom pathlib import Path\n"
        "from bench_lib.analysis.backward_map import draw_backward_map\n"
        "data = json.load(open(sys.argv[1]))\n"
        "entries = data['benchmarks'] + (data.get('freeze_bench') or {}).get('failed', [])\n"
        "tmp = Path(sys.argv[2] + '.tmp.png')\n"
        "draw_backward_map([e['extra_info'] for e in entries], tmp)\n"
        "os.replace(tmp, sys.argv[2])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json_path, png], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not os.path.exists(png):
        why = (proc.stderr.strip().splitlines() or ["no figure written"])[-1]
        return f"not drawn: {why[:80]}"
    return png


def _sweep(
    args: argparse.Namespace, base_opts: list[str], n_blocks: int, out: str, progress: TextIO | None
) -> str:
    """Freeze 1/4, 1/2, 3/4 of the blocks as prefixes and all_but_head under requires_grad
    (0 is the baseline); one run each; returns the screen's line (the PNG's path)."""
    points: list[tuple[float, dict[str, Any]]] = []
    specs: list[tuple[str, list[str]]] = []
    for f in SWEEP_FRACTIONS:
        k = max(1, round(f * n_blocks))
        if k < n_blocks:
            specs.append(
                (
                    f"{f:g}",
                    [
                        "--bench-pattern",
                        "none,explicit",
                        "--bench-blocks",
                        ",".join(str(i) for i in range(k)),
                    ],
                )
            )
    specs.append(("all_but_head", ["--bench-pattern", "none,all_but_head"]))
    for label, opts in specs:
        path = os.path.join(out, f"sweep-{label}.json")
        running.run_cases(
            [*base_opts, *opts, "--bench-mechanism", "requires_grad"],
            path,
            os.path.join(out, f"sweep-{label}.log"),
            2,
            progress,
            f" sweep {label}",
        )
        data = _load_json(path)
        for row in screen.rows_from_json(data):
            if row.mechanism == "requires_grad":
                points.append(
                    (
                        len(row.frozen_blocks) / n_blocks,
                        {"ratio": row.ratio, "peak": row.peak, "ms": row.ms},
                    )
                )
            elif row.mechanism == "none" and not any(p[0] == 0 for p in points):
                points.append((0.0, {"ratio": 1.0, "peak": row.peak, "ms": row.ms}))
    points.sort(key=lambda p: p[0])
    table = os.path.join(out, "advise-sweep.json")
    _write_text(table, json.dumps([{"frozen_fraction": f, **v} for f, v in points], indent=1))
    png = os.path.join(out, "advise-sweep.png")
    code = (
        "import json, sys\nimport matplotlib\nmatplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n"
        "pts = json.load(open(sys.argv[1]))\n"
        "x = [p['frozen_fraction'] for p in pts]\n"
        "fig, ax = plt.subplots(figsize=(6, 3.5))\n"
        "ax.plot(x, [p['ratio'] for p in pts], 'o-', label='step time / baseline')\n"
        "base = pts[0]['peak'] or 1\n"
        "peaks = [(p['peak'] or 0) / base for p in pts]\n"
        "ax.plot(x, peaks, 's--', label='peak memory / baseline')\n"
        "ax.set_xlabel('fraction of blocks frozen (prefix; last point all_but_head)')\n"
        "ax.set_ylabel('ratio to training everything'); ax.set_ylim(bottom=0); ax.legend()\n"
        "fig.tight_layout(); fig.savefig(sys.argv[2] + '.tmp.png', dpi=110)\n"
        "import os; os.replace(sys.argv[2] + '.tmp.png', sys.argv[2])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, table, png], capture_output=True, text=True, check=False
    )
    shown = ", ".join(f"{f:.2f}: {v['ratio']:.2f}x" for f, v in points if v["ratio"] is not None)
    where = png if proc.returncode == 0 else "no figure (matplotlib failed)"
    return f"time ratio by frozen fraction {shown}; {where}"


def advise(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Run ``advise`` on parsed ``args``; raises :class:`~.errors.AdviseError` for bad input."""
    from . import loading  # torch comes in here, never at the analysing side's import time

    t0 = time.perf_counter()
    bench = running.benchmarks_dir()
    source = loading.resolve_model(args.model)
    names = [n.strip() for n in args.block_names.split(",")] if args.block_names else None
    if names is not None and not all(names):
        raise usage_error(f"--block-names={args.block_names!r} has an empty name")
    probe = loading.probe(
        source,
        batch_size=args.batch,
        seq_len=args.seq,
        image_size=args.image_size,
        block_names=names,
        device=args.device,
    )
    disc = probe.discovery
    n_blocks = len(disc.blocks)
    spec = parse_freeze(args.freeze, n_blocks)
    if spec.pattern == "names":
        _check_globs(spec, probe.param_names, probe.model_name)
        frozen_params = sum(
            n
            for name, n in probe.param_sizes.items()
            if any(fnmatch.fnmatchcase(name, g) for g in spec.globs)
        )
    else:
        frozen_params = sum(disc.params[i] for i in spec.blocks)
        if len(spec.blocks) == n_blocks and not probe.head_params:
            raise usage_error(
                f"--freeze={spec.text!r} freezes every block of {probe.model_name}, and nothing "
                "runs after them: nothing would train"
            )
    threads = args.threads or _physical_cores()
    out = args.out or f"advise-{os.path.basename(os.path.normpath(args.model.split(':')[0]))}"
    if os.path.exists(out) and not os.path.isdir(out):
        raise usage_error(f"-o {out}: is a file, not a directory")
    os.makedirs(out, exist_ok=True)
    out = os.path.abspath(out)

    factory = loading.write_factory(
        os.path.join(out, "advise_factory.py"), args.model, probe.settings
    )
    depth = max(1, n_blocks - (1 if disc.input_block else 0))
    base_opts = _suite_options(args, factory, depth, max(1, probe.hidden), threads)
    json_path = os.path.join(out, "advise.json")
    total = (1 + len(MECHANISMS)) * (2 if args.lora else 1)
    opts = [*base_opts, *spec.pytest_args(), "--bench-mechanism", ",".join(MECHANISMS)]
    result = running.run_cases(
        opts, json_path, os.path.join(out, "advise-pytest.log"), total, stderr
    )
    rows = screen.rows_from_json(_load_json(json_path))
    if not rows:
        raise input_error(f"the run measured nothing (log: {result.log})")
    sweep = _sweep(args, base_opts, n_blocks, out, stderr) if args.freeze_sweep else ""
    png = _backward_map(json_path, os.path.join(out, "advise-backward-map.png"))

    best = screen.equivalent_set(rows)
    frozen_blocks = [disc.blocks[i] for i in spec.blocks]
    code = snippet(best[0].mechanism, frozen_blocks, disc.stacks, spec.globs) if best else []
    notes = []
    if probe.random_weights:
        notes.append("no weights in the directory: random weights from config.json")
    zeroed = f" ({', '.join(probe.dropout_zeroed)} were not 0)" if probe.dropout_zeroed else ""
    notes.append(f"dropout off everywhere (modules and config){zeroed}: verdicts compare gradients")
    if probe.head == "base":
        notes.append("no head and no loss: stand-in loss mean(last_hidden_state ** 2)")
    report = os.path.join(out, "advise.md")
    advice = screen.Advice(
        model=args.model,
        model_class=probe.model_name,
        params=probe.params,
        blocks=disc.blocks,
        block_params=disc.params,
        stacks=disc.stacks,
        how=disc.how,
        frozen=spec.describe(n_blocks),
        frozen_params=frozen_params,
        notes=notes,
        inputs=probe.inputs_text,
        json_path=json_path,
        report_path=report,
        wall_s=time.perf_counter() - t0,
        backward_map=png,
        globs=list(spec.globs),
        sweep=sweep,
    )
    lines = screen.render(advice, rows, code)
    _write_text(report, screen.markdown(advice, rows, lines))
    print("\n".join(lines), file=stdout)
    del bench
    return 0


def build_parser(prog: str = "freeze-bench advise") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Measure the ways to freeze MODEL on this machine and answer on one screen.",
        epilog=__doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else None,
    )
    add_arguments(parser)
    return parser


def run(
    args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """``advise`` with its errors as one line and an exit code (2 usage, 3 input)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        return advise(args, out, err)
    except AdviseError as e:
        print(f"{PREFIX}: {e}", file=err)
        return e.code


def main(argv: list[str] | None = None, prog: str = "freeze-bench advise") -> int:
    """``freeze-bench advise MODEL ...`` (also ``python -m bench_lib.advise.cli``)."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
