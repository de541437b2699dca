"""Adding an axis touches one declaration and one effect module: a test fixture declares
``grad_clip`` (``tests/fixtures/axis_plugin``) and the axis runs end to end, through the case
id, the option, the record, the JSON, the report and a skip rule, with no other file touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "tests" / "fixtures" / "axis_plugin"


@pytest.mark.slow
def test_an_axis_declared_outside_runs_end_to_end(tmp_path: Path) -> None:
    log = tmp_path / "clip.log"
    env = {
        **os.environ,
        "FREEZE_BENCH_AXES": "clip_axis",
        "PYTHONPATH": os.pathsep.join([str(PLUGIN), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "FREEZE_BENCH_CLIP_LOG": str(log),
    }
    out = tmp_path / "run.json"
    run = subprocess.run(
        [
            sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-q", "-p", "no:randomly",
            "--bench-profile", "quick", "--bench-model", "mlp", "--bench-depth", "2",
            "--bench-width", "16", "--bench-batch", "4", "--bench-pattern", "none,prefix",
            "--bench-mechanism", "requires_grad", "--bench-optimizer", "adamw,sgd",
            "--bench-grad-clip", "on", "--bench-compile", "off", "--bench-adapter", "none",
            "--bench-parallel", "none", "--bench-pairs", "8", f"--benchmark-json={out}",
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads(out.read_text())
    records = [b["extra_info"] for b in data["benchmarks"]]
    assert records, run.stdout[-2000:]
    # The case id carries the axis's fragment, the record its field.
    assert all(r["case_id"].endswith("-clip") for r in records)
    assert all(r["grad_clip"] == "on" for r in records)
    assert all(r["optimizer"] == "adamw" for r in records)
    # The skip rule: SGD with clipping is a visible skip with the declared reason.
    skipped = data["freeze_bench"]["skipped"]
    assert skipped and all("clipping under SGD" in s["reason"] for s in skipped)
    # The effect ran (in this case's steps), and its axis twin (clipping off) was timed.
    assert log.exists() and log.read_text().strip()
    assert any(r["axis_twin"] == "grad_clip" for r in records)
    # The report titles the set-up with the axis's title.
    report = subprocess.run(
        [sys.executable, "-m", "bench_lib", "report", str(out), "-o", str(tmp_path / "rep")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    assert "gradients clipped" in (tmp_path / "rep" / "report.md").read_text()
    # Without the declaration the option does not exist: a usage error naming it.
    bare = {k: v for k, v in env.items() if k != "FREEZE_BENCH_AXES"}
    usage = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "--bench-grad-clip", "on",
         "--collect-only", "-q"],
        cwd=ROOT, env=bare, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert usage.returncode != 0
    assert "--bench-grad-clip" in usage.stderr + usage.stdout
