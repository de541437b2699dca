"""Command line of the analysing side: ``python -m bench_lib report`` and ``... compare``.

Exit codes: 0 done; 2 usage error (argparse, or ``-o`` that would overwrite an input, or a
``--ignore`` that makes cases collide); 3 an input file cannot be used (missing, empty,
truncated, not pytest-benchmark output, unknown schema). On 2 and 3 one line is printed to
stderr (``freeze-bench: FILE: problem`` for input files; argparse prints its usage as well) and
nothing is written. Outputs are written atomically: each file goes to a temporary file in the
output directory and is renamed over its final name, the markdown last.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import TextIO

from matplotlib.figure import Figure

from . import compare as comparing
from . import compare_report, plots, report, results

__all__ = ["EXIT_INPUT", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INPUT = 3

PROG = "freeze-bench"
_EXIT_CODES = (
    "exit codes: 0 done; 2 usage error, or -o would overwrite an input (nothing written); "
    "3 an input file cannot be used: missing, empty, truncated, not pytest-benchmark output, "
    "or an unknown record schema_version (one line 'freeze-bench: FILE: problem' on stderr, "
    "nothing written)"
)


class _UsageError(Exception):
    """A usage problem found after parsing (exit 2, one line)."""


def _axes(text: str) -> tuple[str, ...] | None:
    """``--ignore``: ``auto`` -> None, ``none`` -> (), else a comma list of identity axes."""
    if text == "auto":
        return None
    if text == "none":
        return ()
    axes = tuple(a.strip() for a in text.split(","))
    for a in axes:
        if a not in results.IDENTITY_AXES:
            raise argparse.ArgumentTypeError(
                f"{a!r} is not an identity axis; choose from: {', '.join(results.IDENTITY_AXES)}"
                ", or 'auto', or 'none'"
            )
    return axes


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _alpha(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1 (exclusive)")
    return value


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 0 and below 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of both commands (``report`` and ``compare``)."""
    prog = "python -m bench_lib" if sys.argv[0].endswith("__main__.py") else PROG
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Analyse freeze-bench runs: turn pytest-benchmark JSON files (--benchmark-json) or "
            "freeze-bench journals (RUN.json.journal.jsonl) into a markdown report with figures, "
            "or compare two runs. Does not need torch."
        ),
        epilog=_EXIT_CODES,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    rep = sub.add_parser(
        "report",
        epilog=_EXIT_CODES,
        help="write DIR/report.md, its figures and DIR/results.csv from one or more runs",
        description=(
            "Write DIR/report.md (at a glance: every finding's headline and the cheapest valid "
            "mechanism per model family and pattern; the run's header; each finding in detail, "
            "built from the run's numbers; tables per model family), the PNG figures it "
            "links, and DIR/results.csv (the tidy table: one row per case per file, bytes and "
            "seconds unscaled). Several files (shards, or runs to see together) make one table."
        ),
    )
    rep.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="pytest-benchmark JSON file or freeze-bench journal (by content)",
    )
    rep.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="DIR",
        help="output directory (created if missing; files in it are replaced)",
    )
    rep.set_defaults(func=_report)
    cmp = sub.add_parser(
        "compare",
        epilog=_EXIT_CODES,
        help="write DIR/compare.md and its figures: NEW against BASE, case by case",
        description=(
            "Align the cases of two runs by identity and write DIR/compare.md: what the "
            "comparison can resolve, how many time ratios to the baseline got lower or higher "
            "(Welch's test on the per-pair ratios, Holm-corrected across cases), verdict "
            "changes, absolute times beside the baselines' drift; cases in only one run are "
            "listed. Typical: CPU vs CUDA, two torch "
            "versions, two machines, before/after a change."
        ),
    )
    cmp.add_argument("base", metavar="BASE", help="the reference run (JSON or journal)")
    cmp.add_argument("new", metavar="NEW", help="the run compared with it (JSON or journal)")
    cmp.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    cmp.add_argument(
        "--ignore",
        type=_axes,
        default=None,
        metavar="AXES",
        help=(
            "identity axes left out when matching cases: 'auto' (default: every axis with one "
            "value in each run and different values between them, e.g. device for CPU vs CUDA, "
            "threads across machines), 'none' (match on the full case_id), or a comma list "
            f"from: {', '.join(results.IDENTITY_AXES)}"
        ),
    )
    cmp.add_argument(
        "--alpha",
        type=_alpha,
        default=comparing.ALPHA,
        metavar="A",
        help=f"family-wise error rate across cases, Holm (default {comparing.ALPHA})",
    )
    cmp.add_argument(
        "--min-change",
        type=_fraction,
        default=comparing.MIN_CHANGE,
        metavar="F",
        help="smallest relative change of a time ratio that counts as lower or higher "
        f"(default {comparing.MIN_CHANGE}: 5%%)",
    )
    cmp.set_defaults(func=_compare)
    # advise parses its own options (bench_lib/advise/cli.py): main() hands it the arguments
    # before this parser sees them, so that torch is imported only when advise runs.
    sub.add_parser(
        "advise",
        add_help=False,
        help="measure the ways to freeze one model (a directory, a cached hub id or a factory) "
        "and answer on one screen (needs torch; advise --help for its options)",
    )
    return parser


# ---------------------------------------------------------------------------- writing


def _check_output_dir(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise _UsageError(f"{out}: -o must be a directory, and this is a file (an input?)")


def _check_not_inputs(out: str, names: Sequence[str], inputs: Sequence[str]) -> None:
    targets = {os.path.realpath(os.path.join(out, n)): n for n in names}
    for path in inputs:
        real = os.path.realpath(path)
        if real in targets:
            raise _UsageError(
                f"{path}: writing {targets[real]} into {out} would overwrite this input; "
                "choose another -o"
            )


def _write_atomic(path: str, data: bytes) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".freeze-bench-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write(
    out: str,
    texts: dict[str, str],
    figures: dict[str, Figure],
    inputs: Sequence[str],
    stdout: TextIO,
) -> None:
    """Write figures, then the texts in the given order (the markdown last)."""
    _check_not_inputs(out, [*figures, *texts], inputs)
    os.makedirs(out, exist_ok=True)
    for name, fig in figures.items():
        _write_atomic(os.path.join(out, name), plots.png_bytes(fig))
    for name, text in texts.items():
        _write_atomic(os.path.join(out, name), text.encode("utf-8"))
    written = ", ".join(os.path.join(out, n) for n in texts)
    print(f"freeze-bench: wrote {written} and {len(figures)} figures", file=stdout)


# ---------------------------------------------------------------------------- commands


def _report(args: argparse.Namespace, stdout: TextIO) -> None:
    inputs: list[str] = args.runs
    _check_output_dir(args.output)
    _check_not_inputs(args.output, ["report.md", "results.csv"], inputs)  # fail before work
    runs = results.load_runs(inputs)
    frame = results.tidy(runs)
    rendered = report.build_report(runs, frame)
    texts = {"results.csv": results.table_csv(frame), "report.md": rendered.markdown}
    _write(args.output, texts, rendered.figures, inputs, stdout)


def _compare(args: argparse.Namespace, stdout: TextIO) -> None:
    inputs = [args.base, args.new]
    _check_output_dir(args.output)
    _check_not_inputs(args.output, ["compare.md"], inputs)
    base, new = results.load_runs(inputs)
    base_frame, new_frame = results.tidy([base]), results.tidy([new])
    try:
        comp = comparing.compare(
            base_frame, new_frame, ignore=args.ignore, alpha=args.alpha, min_change=args.min_change
        )
    except comparing.IdentityError as e:
        raise _UsageError(f"--ignore: {e}") from None
    rendered = compare_report.build_comparison(base, new, base_frame, new_frame, comp)
    _write(args.output, {"compare.md": rendered.markdown}, rendered.figures, inputs, stdout)


Command = Callable[[argparse.Namespace, TextIO], None]


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (see the module docstring)."""
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["advise"]:
        from ..advise.cli import main as advise_main  # lazily: advise brings torch

        return advise_main(given[1:], prog=f"{build_parser().prog} advise")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    command: Command = args.func
    try:
        command(args, sys.stdout)
    except results.InputError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_INPUT
    except _UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
