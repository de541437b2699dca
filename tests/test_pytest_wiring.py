"""Tier 3: the pytest wiring end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench_lib.record import FIELDS, SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--bench-profile", "quick", "--bench-model", "mlp", "--bench-parallel", "none",
    "--bench-depth", "3",
    "--bench-width", "16", "--bench-batch", "4", "--bench-optimizer", "adamw",
    "--bench-pattern", "none,middle,explicit", "--bench-blocks", "0,2",
    "--bench-mechanism", "no_grad,requires_grad,inference_mode_nocopy",
    "--bench-adapter", "none", "--bench-compile", "off",
    "--bench-pairs", "6", "--bench-time", "0.01",  # last: TINY[:-4] drops them
]  # fmt: skip


def run_pytest(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path_factory.mktemp("run") / "run.json"
    proc = run_pytest(*TINY, f"--benchmark-json={out}")
    assert out.exists(), proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


@pytest.mark.slow
def test_tiny_sweep_writes_every_record_key_for_every_case(tiny_run: Any) -> None:
    proc, data = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    benches = data["benchmarks"]
    failed = data["freeze_bench"]["failed"]
    ids = sorted(b["extra_info"]["case_id"] for b in benches + failed)
    assert ids == [
        "mlp-d3-w16-b4-blocks0.2-inference_mode_nocopy-adamw-cpu-float32",
        "mlp-d3-w16-b4-blocks0.2-no_grad-adamw-cpu-float32",
        "mlp-d3-w16-b4-blocks0.2-requires_grad-adamw-cpu-float32",
        "mlp-d3-w16-b4-middle-inference_mode_nocopy-adamw-cpu-float32",
        "mlp-d3-w16-b4-middle-no_grad-adamw-cpu-float32",
        "mlp-d3-w16-b4-middle-requires_grad-adamw-cpu-float32",
        "mlp-d3-w16-b4-none-none-adamw-cpu-float32",
    ]
    for b in benches + failed:
        record = b["extra_info"]
        assert list(record) == list(FIELDS)
        assert record["schema_version"] == SCHEMA_VERSION
    for b in benches:
        r = b["extra_info"]
        assert r["status"] == "ok"
        assert len(b["stats"]["data"]) == r["rounds"]
        assert r["ratio_pairs"] == 6 == len(r["ratio_samples"])
        assert r["time_ratio_ci_low"] <= r["time_ratio"] <= r["time_ratio_ci_high"]
        for key in ("peak_memory_bytes", "param_bytes", "flops_forward", "forward_s"):
            assert r[key] > 0, key
        assert r["peak_reserved_bytes"] is None and r["memory_method"] == "profiler_events"
        # Nothing of an earlier case is alive, and the peak holds at least the workload's state.
        assert r["foreign_bytes"] == 0 and r["workspace_bytes"] == 0
        state = r["param_bytes"] + r["grad_bytes"] + r["optimizer_state_bytes"]
        assert r["peak_memory_bytes"] >= state
        assert set(r["pass_seconds"]) >= {"group", "timed", "ratios", "memory"}
        # Timed in its decision group: a ratio to every other member from the same rounds.
        assert r["group_rounds"] == 6 and isinstance(r["resolved"], bool)
        assert "none" in r["pair_ratios"] or r["mechanism"] == "none"
        assert r["timing_design"].startswith("together; williams seed")
    # The explicit pattern's first block is a frozen prefix; block 2 is frozen too, so no_grad
    # cuts block 1 off; requires_grad does not.
    by_id = {b["extra_info"]["case_id"]: b["extra_info"] for b in benches + failed}
    assert by_id["mlp-d3-w16-b4-blocks0.2-no_grad-adamw-cpu-float32"]["verdict"] == "graph_cut"
    assert by_id["mlp-d3-w16-b4-middle-requires_grad-adamw-cpu-float32"]["valid"] is True
    trap = by_id["mlp-d3-w16-b4-middle-inference_mode_nocopy-adamw-cpu-float32"]
    assert trap["status"] == "error" and trap["verdict"] == "error"
    assert "Inference tensors" in trap["status_message"]
    assert trap["peak_memory_bytes"] is None
    assert data["machine_info"]["torch_version"]
    assert data["freeze_bench"]["profile"] == "quick"
    assert "2 recorded as oom/error" in proc.stdout
    assert "plan: estimated" in proc.stdout


@pytest.mark.slow
def test_two_shards_merge_into_one_report(tmp_path: Path) -> None:
    """The multi-GPU recipe on CPU: each shard writes its own JSON, the report reads both and
    holds every case once, with its baseline found across files."""
    from bench_lib.analysis.cli import main

    outs = [tmp_path / f"shard{i}.json" for i in range(2)]
    counts = []
    for i, out in enumerate(outs):
        proc = run_pytest(*TINY, "--bench-shard", f"{i}/2", f"--benchmark-json={out}")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert f"shard {i}/2:" in proc.stdout and "imbalance" in proc.stdout
        data = json.loads(out.read_text())
        counts.append(len(data["benchmarks"]) + len(data["freeze_bench"]["failed"]))
    assert all(counts) and sum(counts) == 7
    report = tmp_path / "report"
    assert main(["report", *map(str, outs), "--output", str(report)]) == 0
    text = (report / "report.md").read_text()
    assert "shard0.json" in text and "shard1.json" in text
    with (report / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 == len({r["case_id"] for r in rows})


def test_without_a_twin_the_baseline_is_timed_in_its_set_ups_first_group(tmp_path: Path) -> None:
    """``--bench-no-twin``: the baseline takes its values from the first decision group (no
    identical twin, so no ratio of its own), and the terminal summary gives the precision."""
    out = tmp_path / "run.json"
    args = [*TINY[:6], "--bench-depth", "3", "--bench-width", "16", "--bench-batch", "4",
            "--bench-optimizer", "adamw", "--bench-pattern", "none,prefix", "--bench-mechanism",
            "no_grad,requires_grad", "--bench-adapter", "none", "--bench-compile", "off",
            "--bench-pairs", "6"]  # fmt: skip
    proc = run_pytest(*args, "--bench-no-twin", f"--benchmark-json={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = {
        b["extra_info"]["mechanism"]: b["extra_info"]
        for b in json.loads(out.read_text())["benchmarks"]
    }
    assert sorted(records) == ["no_grad", "none", "requires_grad"]
    assert records["none"]["group_members"] == ["none", "no_grad", "requires_grad"]
    assert records["none"]["time_ratio"] is None and records["no_grad"]["time_ratio"] > 0
    assert "decision groups: " in proc.stdout


@pytest.mark.slow
def test_cuda_cases_skip_with_the_reason_when_cuda_is_absent(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the skip path cannot be shown here")
    out = tmp_path / "cuda.json"
    proc = run_pytest(*TINY[:-4], "--bench-device", "cuda", f"--benchmark-json={out}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CUDA cases skipped: CUDA requested but" in proc.stdout
    data = json.loads(out.read_text())
    assert data["benchmarks"] == []
    skipped = data["freeze_bench"]["skipped"]
    assert len(skipped) == 7 and all("CUDA requested" in s["reason"] for s in skipped)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--bench-mechanism", "freeze"],
            "--bench-mechanism='freeze' is not one of: none, no_grad",
        ),
        (
            ["--bench-profile", "huge"],
            "--bench-profile='huge' is not one of: quick, default, gpu, full",
        ),
        (["--bench-depth", "0"], "--bench-depth='0': 0 must be >= 1"),
        (["--bench-depth", "4,x"], "--bench-depth='4,x': 'x' is not an integer"),
        (["--bench-lora-rank", "0"], "--bench-lora-rank='0': 0 must be >= 1"),
        (["--bench-amp", "fp8"], "--bench-amp='fp8' is not one of: none, bf16, fp16"),
        (["--bench-compile", "yes"], "--bench-compile='yes' is not one of: off, on"),
        (["--bench-checkpoint", "all"], "--bench-checkpoint='all' is not one of: off, on"),
        (["--bench-model", ""], "--bench-model='' is empty"),
        (["--bench-blocks", "1,9", "--bench-model", "mlp"], "index 9 is out of range for depth="),
        (["--bench-shard", "3/2"], "shard 3/2: need 0 <= index < count"),
        (["--bench-pattern", "explicit"], "pattern 'explicit' needs --bench-blocks"),
        (["--bench-time", "-1"], "--bench-time='-1' must be > 0"),
        (["--bench-model", "rnn"], "--bench-model='rnn' is not one of: mlp, transformer"),
        (
            ["--bench-model-factory", "no_such_module:build"],
            "--bench-model-factory='no_such_module:build': cannot import 'no_such_module'",
        ),
        (  # the example U-Net raises for a depth its 16-pixel images cannot halve 5 times
            ["--bench-model-factory", "benchmarks.example_factory:build", "--bench-depth", "5"],
            "the factory raised ValueError: image_size=16 must be a multiple of 2**depth=32",
        ),
        (
            ["--bench-model-factory", "tests/test_factory.py:wrong_shape"],
            "returned list, not a ModelSpec or a mapping with keys model, blocks, make_batch",
        ),
        (
            ["--bench-model-factory", "tests/test_factory.py:bad_block"],
            "block 'encoder' is not a submodule of the model",
        ),
        (
            ["--bench-model", "mlp", "--bench-freeze", "encoder.*"],
            "--bench-freeze glob 'encoder.*' matches no parameter name of Stack",
        ),
        (
            ["--bench-model", "mlp", "--bench-freeze", "blocks.*,head.*"],
            "--bench-freeze='blocks.*,head.*' matches every parameter of Stack",
        ),
    ],
)
def test_bad_options_are_usage_errors_without_traceback(args: list[str], message: str) -> None:
    proc = run_pytest("--bench-profile", "quick", *args, "--collect-only")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
