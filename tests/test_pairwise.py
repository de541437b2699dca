"""Every combination runs or says why: a pairwise covering array over every axis (the
``pairwise`` profile), generated from the axis table and its constraints, run in smoke mode.
Each row ends ``ok``, gets a verdict, or is a declared skip or an expected refusal (xfail)
with its reason; never an ``error``."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench_lib.axes import constraint_error
from bench_lib.measuring.pairwise import complete, covered_pairs, covering_array

ROOT = Path(__file__).resolve().parents[1]


def test_the_array_covers_every_possible_pair_and_only_valid_rows() -> None:
    array = covering_array(("cpu",))
    names = list(array.axes)
    assert array.required <= covered_pairs(array.rows, names)
    assert all(constraint_error(complete(row)) is None for row in array.rows)
    # Every value of every axis is in some row, and the impossible pairs are what the
    # constraints forbid (pattern none with a freeze mechanism, scenario seed off xy, ...).
    for axis, values in array.axes.items():
        assert {r[axis] for r in array.rows} == set(values), axis
    for (a, va), (b, vb) in array.impossible:
        assert {a, b} in ({"pattern", "mechanism"}, {"scenario", "model"}), (a, va, b, vb)
    # Deterministic: the same rows every time.
    assert covering_array(("cpu",)).rows == array.rows


def test_a_pair_is_impossible_only_when_no_row_can_hold_it() -> None:
    array = covering_array(("cpu",))
    space = array.axes
    (a, va), (b, vb) = sorted(array.impossible, key=repr)[0]
    for row in itertools.islice(itertools.product(*space.values()), 2000):
        values = dict(zip(space, row, strict=True))
        values.update({a: va, b: vb})
        assert constraint_error(complete(values)) is not None


@pytest.mark.pairwise
def test_every_row_runs_or_says_why(tmp_path: Path) -> None:
    out = tmp_path / "pairwise.json"
    t0 = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-q", "-p", "no:randomly",
         "--bench-profile", "pairwise", "--bench-smoke", f"--benchmark-json={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - t0
    data = json.loads(out.read_text())
    fb = data["freeze_bench"]
    timed = [b["extra_info"] for b in data["benchmarks"]]
    failed = [f["extra_info"] for f in fb["failed"]]
    errors = [
        f"{r['case_id']}: {r['status_message']}"
        for r in timed + failed
        if r["status"] == "error" and r["verdict"] != "error"
    ]
    assert not errors, "\n".join(errors)
    assert run.returncode == 0, run.stdout[-3000:]
    assert all(s["reason"] for s in fb["skipped"])
    assert len(timed) + len(failed) + len(fb["skipped"]) >= fb["cases_planned"]
    assert timed, "no row ran"
    print(f"pairwise: {len(timed)} ok, {len(failed)} refused, {len(fb['skipped'])} skipped "
          f"in {seconds:.0f} s")  # fmt: skip
