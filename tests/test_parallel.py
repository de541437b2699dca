"""Data parallelism on torch.distributed: real workers (gloo over 127.0.0.1, two ranks), each
test bounded to a few launches of tiny models.

Verdicts against the single-process reference on the global batch (DDP's reduction error, FSDP1's
uniform ``requires_grad``, equal gradients), the communicated bytes of a model whose sizes are
counted by hand, and the clean-up: after a case, whether a worker was killed, raised or hung, no
worker process and no rendezvous port is left. The plan-time side (the axis, ids, skips, options)
runs without workers.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench_lib.measuring import group, runner
from bench_lib.measuring.budget import Budget
from bench_lib.measuring.devices import DeviceUnavailable
from bench_lib.measuring.parallel import coordinator
from bench_lib.measuring.parallel.coordinator import TorchLauncher, TorchRun
from bench_lib.measuring.parallel.strategies import STRATEGIES
from bench_lib.measuring.parallel.workload import backend_for, rank_device, rank_seed
from bench_lib.measuring.spec import Case, CaseError
from bench_lib.measuring.sweep import PROFILES, Filters, generate
from bench_lib.vocab import PARALLEL

ROOT = Path(__file__).resolve().parents[1]
FAULTS = f"{Path(__file__).resolve().parent / 'parallel_faults.py'}:build"
TINY = Budget(
    warmup_rounds=0, target_time_s=1e-3, min_rounds=2, max_rounds=2, ratio_pairs=1, phase_reps=1
)

# The hand-counted MLP: depth 4, width 8, 10 classes. A block is Linear(8, 8): 64 + 8 = 72
# parameters; the head Linear(8, 10): 80 + 10 = 90. Float32, so 4 bytes each.
BLOCK, HEAD = 8 * 8 + 8, 8 * 10 + 10
ALL_BYTES = 4 * (4 * BLOCK + HEAD)  # 1512: every gradient
PREFIX_TRAINABLE_BYTES = 4 * (2 * BLOCK + HEAD)  # 936: blocks 2, 3 and the head


def mlp(pattern: str, mechanism: str, parallel: str, **kw: Any) -> Case:
    blocks = {"none": (), "prefix": (0, 1), "middle": (1,)}[pattern]
    return Case("mlp", 4, 8, 4, pattern, blocks, mechanism, parallel=parallel, world=2, **kw)


#: multiprocessing's own service processes: its resource tracker and the fork server the
#: workers are forked from, started by the first parallel case for the whole session.
SERVICES = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _children() -> set[int]:
    """This process's descendants (workers are the fork server's children), but
    multiprocessing's service processes."""
    out = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if not any(s in " ".join(child.cmdline()) for s in SERVICES):
                out.add(child.pid)
        except psutil.Error:
            continue
    return out


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _gone(pids: list[int]) -> bool:
    return all(
        not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        for pid in pids
    )


class Recorder(TorchLauncher):
    """The torch launcher, keeping the run it started (its pids and port)."""

    def __init__(self, timeout_s: float | None = None) -> None:
        super().__init__(timeout_s)
        self.run: TorchRun | None = None

    def start(self, case: Case, budget: Budget) -> TorchRun:
        self.run = super().start(case, budget)
        return self.run


@pytest.fixture
def clean() -> Iterator[None]:
    """The test leaves no child process behind."""
    before = _children()
    yield
    assert _children() <= before


def _run(case: Case, *passes: Callable[[TorchRun], Any]) -> list[Any]:
    """Launch ``case``, run ``passes`` on it, close it; check that its workers and port are gone."""
    run = TorchLauncher().start(case, TINY)
    pids, port = run.pids, run.port
    assert len(pids) == 2
    try:
        return [p(run) for p in passes]
    finally:
        run.close()
        assert _gone(pids), pids
        assert _port_is_free(port)


# ------------------------------------------------------------------------------ verdicts


@pytest.mark.usefixtures("clean")
def test_ddp_refuses_no_grad_on_a_middle_block_without_find_unused_parameters() -> None:
    (v,) = _run(mlp("middle", "no_grad", "ddp"), TorchRun.check)
    assert v.verdict == "error"
    assert "Expected to have finished reduction in the prior iteration" in v.detail


@pytest.mark.usefixtures("clean")
def test_fsdp1_refuses_frozen_and_trainable_parameters_in_one_flat_parameter() -> None:
    # Only block 1's weight is frozen: its unit mixes it with the trainable bias.
    case = Case(
        "mlp", 4, 8, 4, "names", (), "requires_grad", freeze=("blocks.1.0.weight",),
        parallel="fsdp1", world=2,
    )  # fmt: skip
    (v,) = _run(case, TorchRun.check)
    assert v.verdict == "error"
    assert "uniform" in v.detail and "requires_grad" in v.detail, v.detail


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_gradients_equal_the_reference_and_bytes_are_counted_by_hand(parallel: str) -> None:
    """A valid case gets the single-process reference gradients on the global batch (every
    rank, every shard); a rank sends the trainable gradients only under requires_grad, every
    gradient under optimizer_only (the frozen blocks keep requires_grad)."""

    def build_and_comm(run: TorchRun) -> dict[str, Any]:
        run.build()
        return run.comm()

    verdict, comm = _run(mlp("prefix", "requires_grad", parallel), TorchRun.check, build_and_comm)
    assert verdict.verdict == "ok", verdict.detail
    assert "6 trainable tensors got the reference gradients" in verdict.detail
    assert comm["comm_bytes"] == PREFIX_TRAINABLE_BYTES
    (comm,) = _run(mlp("prefix", "optimizer_only", parallel), build_and_comm)
    assert comm["comm_bytes"] == ALL_BYTES
    assert comm["ddp_buckets"] == (1 if parallel == "ddp" else None)


@pytest.mark.usefixtures("clean")
def test_find_unused_parameters_runs_no_grad_and_the_check_sees_the_cut() -> None:
    (v,) = _run(mlp("middle", "no_grad", "ddp_find_unused"), TorchRun.check)
    assert v.verdict == "graph_cut"
    assert "block 0" in v.detail


# ------------------------------------------------------------------------- step axes


def _measure(case: Case, budget: Budget = TINY) -> dict[str, Any]:
    return runner.measure_case(case, budget, lambda values: None)


@pytest.mark.slow
@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_compiled_parallel_case_counts_its_workers_compiles(parallel: str) -> None:
    """The workers compile, so the counts come from them (rank 0's in the record); the axis
    twin runs on the workers too."""
    r = _measure(mlp("prefix", "requires_grad", parallel, compile="on"))
    assert r["status"] == "ok", r["status_message"]
    assert r["verdict"] == "ok", r["verdict_detail"]
    assert r["compiled_frames"] > 0 and r["compile_s"] is not None
    assert r["axis_twin"] == "compile" and r["axis_twin_ratio"] > 0


@pytest.mark.slow
@pytest.mark.usefixtures("clean")
def test_checkpointing_runs_under_fsdp_and_in_smoke_mode() -> None:
    r = _measure(mlp("prefix", "no_grad", "fsdp", checkpoint="on"), Budget(smoke=True))
    assert r["status"] == "ok", r["status_message"]
    assert r["verdict"] == "ok", r["verdict_detail"]
    assert r["rounds"] == 2 and r["flops_forward"] is None and r["peak_memory_bytes"] is None


@pytest.mark.usefixtures("clean")
def test_autocast_under_fsdp_counts_the_weight_casts_of_the_gathered_parameters() -> None:
    """FSDP2's parameters are DTensor shards; autocast casts the gathered ones. The bytes pass
    compares the saved casts with the parameters gathered whole (comparing with the shards
    raised "mixed torch.Tensor and DTensor"), and finds what it finds in one process."""

    def bytes_(run: TorchRun) -> Any:
        run.build()
        return run.bytes_by_category()

    (counts,) = _run(mlp("prefix", "requires_grad", "fsdp", amp="bf16"), bytes_)
    alone = _measure(Case("mlp", 4, 8, 4, "prefix", (0, 1), "requires_grad", amp="bf16"))
    assert counts.autocast_weight_bytes == alone["autocast_weight_bytes"] > 0


# ------------------------------------------------------------------------- reliability


@pytest.mark.usefixtures("clean")
def test_a_killed_worker_fails_the_case_and_nothing_survives_it() -> None:
    launcher = Recorder()
    killed: list[int] = []

    def time_steps(values: Sequence[float]) -> None:
        # The case's group has been timed; kill a worker of the case's own run before its
        # measurement passes.
        assert launcher.run is not None
        killed.append(launcher.run.pids[1])
        os.kill(killed[0], signal.SIGKILL)

    record = runner.measure_case(mlp("prefix", "requires_grad", "ddp"), TINY, time_steps, launcher)
    assert record["status"] == "error"
    assert f"rank 1 (pid {killed[0]}) killed by SIGKILL" in record["status_message"]
    assert record["verdict"] == "ok"  # measured before the kill, and kept
    assert launcher.run is not None
    assert _gone(launcher.run.pids)
    assert _port_is_free(launcher.run.port)


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (1, "rank 1: RuntimeError: injected fault on rank 1"),
        # The timed rounds run on the workers: the hang strikes in a value.
        (2, "did not answer 'value' within the case's 12 s (the worker hangs)"),
    ],
    ids=["raises", "hangs"],
)
def test_a_worker_that_raises_or_hangs_fails_the_case(
    monkeypatch: pytest.MonkeyPatch, fault: int, message: str
) -> None:
    monkeypatch.setattr(coordinator, "STOP_GRACE_S", 1.0)
    extra = (("seq_len", fault),)  # the fault (tests/parallel_faults.py)
    case = Case("factory", 2, 8, 4, factory=FAULTS, parallel="ddp", world=2, extra=extra)
    launcher = Recorder(timeout_s=12)
    record = runner.measure_case(case, TINY, lambda values: None, launcher)
    assert record["status"] == "error"
    assert message in record["status_message"]
    assert launcher.run is not None and _gone(launcher.run.pids)


@pytest.mark.usefixtures("clean")
def test_a_parallel_set_up_shares_one_set_of_workers_and_a_refusing_member_fails_alone() -> None:
    """The baseline and both members of a DDP group are opened on one set of workers and timed
    there; the member DDP refuses fails alone (the workers stay in step); the valid member's
    passes reuse the workers and measure what fresh workers measure (nothing of the dropped
    members is left on them); closing the launcher stops them and frees the port."""
    budget = dataclasses.replace(TINY, fixed_rounds=4)
    launcher = TorchLauncher(shared=True)
    refused, valid = mlp("middle", "no_grad", "ddp"), mlp("middle", "requires_grad", "ddp")
    seen: list[list[int]] = []

    def start(c: Case) -> TorchRun:
        run = launcher.start(c, budget)
        seen.append(run.pids)
        return run

    try:
        timings = group.time_members([refused, valid], budget, start)
        workers = launcher.workers
        assert workers is not None and workers.usable
        pids, port = workers.pids, workers.port
        assert len(seen) == 3 and all(p == pids for p in seen)  # the baseline, both members
        assert timings[refused].verdict is not None
        assert timings[refused].verdict.verdict == "error"
        assert len(timings[valid].values) == 4
        assert timings[valid].pairs["none"].ratio > 0
        assert "together" in timings[valid].summary["timing_design"]
        shared = runner.measure_case(valid, budget, lambda v: None, launcher, timings[valid])
        assert launcher.workers is workers and workers.pids == pids
        own = runner.measure_case(valid, budget, lambda v: None, TorchLauncher())
    finally:
        launcher.close()
    assert launcher.workers is None
    assert _gone(pids) and _port_is_free(port)
    assert shared["status"] == own["status"] == "ok", (shared["status_message"], own)
    for key in ("peak_memory_bytes", "param_bytes", "grad_bytes", "optimizer_state_bytes",
                "saved_activation_bytes", "comm_bytes", "flops_forward"):  # fmt: skip
        assert shared[key] == own[key], key


@pytest.mark.usefixtures("clean")
def test_shared_workers_stop_when_another_set_up_starts() -> None:
    launcher = TorchLauncher(shared=True)
    try:
        first = launcher.start(mlp("prefix", "requires_grad", "ddp"), TINY)
        again = launcher.start(mlp("middle", "requires_grad", "ddp"), TINY)
        assert again.pids == first.pids  # one set-up: one set of workers
        pids, port = first.pids, first.port
        other = launcher.start(mlp("prefix", "requires_grad", "fsdp"), TINY)
        assert _gone(pids) and _port_is_free(port) and other.pids != pids
        with pytest.raises(coordinator.WorkerError, match="cannot go on"):
            first.check()
        first.close()  # a member of stopped workers closes quietly
    finally:
        launcher.close()


# ------------------------------------------------------------------------------ devices


def test_cuda_takes_the_nccl_path_one_process_per_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a GPU: the launch of a CUDA case is stopped where it would start the workers,
    and what it would give them is checked."""
    assert backend_for("cuda") == "nccl" and backend_for("cpu") == "gloo"
    assert str(rank_device("cuda", 1)) == "cuda:1" and str(rank_device("cpu", 1)) == "cpu"
    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def start_processes(fn: Any, args: tuple[Any, ...], nprocs: int, **kw: Any) -> Any:
        seen.update(fn=fn, args=args, nprocs=nprocs, **kw)
        raise Stop

    monkeypatch.setattr(coordinator, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    monkeypatch.setattr(coordinator, "start_processes", start_processes)
    case = Case("mlp", 2, 8, 4, device="cuda", parallel="ddp", world=2)
    with pytest.raises(Stop):
        TorchLauncher().start(case, TINY)
    world, _port, case_dict, backend, _timeout, conns = seen["args"]
    assert (world, backend, seen["nprocs"], len(conns)) == (2, "nccl", 2, 2)
    assert Case.from_dict(case_dict) == case
    assert seen["start_method"] == coordinator.START_METHOD
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    with pytest.raises(DeviceUnavailable, match="needs 2 GPUs"):
        TorchLauncher().start(case, TINY)


# ------------------------------------------------------------------- the axis, at plan time


def test_the_strategies_registry_is_the_vocabulary() -> None:
    assert set(STRATEGIES) == set(PARALLEL) - {"none"}


def test_case_axis_id_round_trip_and_baseline() -> None:
    case = mlp("prefix", "requires_grad", "ddp")
    assert case.id == "mlp-d4-w8-b4-prefix-requires_grad-adamw-cpu-float32-ddp-w2"
    assert Case.from_dict(case.to_dict()) == case
    assert case.baseline() == Case("mlp", 4, 8, 4, parallel="ddp", world=2)
    assert Case("mlp", 4, 8, 4).id == "mlp-d4-w8-b4-none-none-adamw-cpu-float32"
    with pytest.raises(CaseError, match="world=2 with parallel='none'"):
        Case("mlp", 4, 8, 4, world=2)
    with pytest.raises(CaseError, match="parallel='horovod' is not one of: none, ddp"):
        Case("mlp", 4, 8, 4, parallel="horovod")
    with pytest.raises(CaseError, match="world=0 must be a positive integer"):
        Case("mlp", 4, 8, 4, parallel="ddp", world=0)
    assert {rank_seed(5, r, 2) for r in (0, 1)} == {10, 11} and rank_seed(5, 0, 1) == 5


def test_sweep_replaces_the_axis_and_skips_batchnorm_models() -> None:
    f = Filters(models=("mlp", "cnn"), optimizers=("adamw",), patterns=("none", "prefix"),
                mechanisms=("requires_grad",), parallel=("none", "fsdp"), worlds=(3,))  # fmt: skip
    sweep = generate(PROFILES["quick"], f)
    ids = [c.id for c in sweep.cases]
    assert "mlp-d4-w64-b16-prefix-requires_grad-adamw-cpu-float32-fsdp-w3" in ids
    assert "mlp-d4-w64-b16-prefix-requires_grad-adamw-cpu-float32" in ids
    assert not any(c.model == "cnn" and c.is_parallel for c in sweep.cases)
    cnn = [s for s in sweep.skips if s.id.startswith("cnn") and s.id.endswith("-fsdp-w3")]
    assert cnn and all("BatchNorm" in s.reason and "SyncBatchNorm" in s.reason for s in cnn)
    # Without the option, each grid keeps its own: quick's parallel cases, with baselines.
    quick = [c for c in generate(PROFILES["quick"], Filters()).cases if c.is_parallel]
    assert sorted(c.id.split("-float32-")[1] + " " + c.mechanism for c in quick) == [
        "ddp-w2 no_grad", "ddp-w2 none", "fsdp-w2 none", "fsdp-w2 requires_grad",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bench-parallel", "horovod"], "--bench-parallel='horovod' is not one of: none, ddp"),
        (["--bench-world", "0"], "--bench-world='0': 0 must be >= 1"),
    ],
)
def test_bad_parallel_options_are_usage_errors(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider",
         "--bench-profile", "quick", *args, "--collect-only"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "freeze-bench:" in line]
    assert len(lines) == 1 and message in lines[0], proc.stderr


# ------------------------------------------------------------------ adapters, tied weights


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_lora_runs_under_data_parallelism_against_the_adapted_reference(parallel: str) -> None:
    """The reference of an adapted case is the adapted model (its state dict has the case's
    keys): the check finds the reference gradients, and the step runs."""
    pytest.importorskip("peft")
    case = Case("mlp", 4, 16, 4, adapter="lora", lora_rank=4, parallel=parallel, world=2)

    def build_and_step(run: TorchRun) -> None:
        run.build()
        run.step()

    verdict, _ = _run(case, TorchRun.check, build_and_step)
    assert verdict.verdict == "ok", verdict.detail


def test_a_tied_parameter_takes_its_first_names_tensor_in_the_full_state() -> None:
    from torch import nn

    from bench_lib.measuring.parallel.check import _ties

    emb, head = nn.Embedding(5, 3), nn.Linear(3, 5, bias=False)
    head.weight = emb.weight
    assert _ties(nn.ModuleDict({"emb": emb, "head": head})) == {"head.weight": "emb.weight"}


@pytest.mark.parametrize("parallel", ["fsdp", "fsdp1_orig_params"])
def test_tied_weights_are_a_declared_skip_under_fsdp2_and_fsdp1_orig_params(
    parallel: str,
) -> None:
    from bench_lib.measuring.families import get_family
    from bench_lib.measuring.sweep import parallel_skip_reason

    if get_family("gpt2").unavailable() is not None:
        pytest.skip("transformers is not installed")
    reason = parallel_skip_reason(Case("gpt2", 2, 32, 2, parallel=parallel, world=2))
    assert reason is not None and "ties transformer.wte.weight and lm_head.weight" in reason
    assert parallel_skip_reason(Case("gpt2", 2, 32, 2, parallel="ddp", world=2)) is None


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize(("model", "parallel"), [("bert", "ddp"), ("gpt2", "fsdp1")])
def test_a_transformers_baseline_gets_the_reference_gradients(model: str, parallel: str) -> None:
    """A baseline is never wrong: BERT's attention key biases (a gradient that is zero in exact
    arithmetic, rounding noise in both runs) are compared above the noise floor, and FSDP1 keeps
    GPT-2's tied embedding in the root unit, where the LM head's gradient reaches it."""
    from bench_lib.measuring.families import get_family

    if get_family(model).unavailable() is not None:
        pytest.skip("transformers is not installed")
    case = Case(model, 2, 32, 2, parallel=parallel, world=2, extra=(("seq_len", 8),))
    (v,) = _run(case, TorchRun.check)
    assert v.verdict == "ok", v.detail


@pytest.mark.usefixtures("clean")
def test_the_session_stops_a_set_ups_workers_after_its_last_case() -> None:
    from bench_lib.measuring.session import Plan, Session

    cases = [mlp("prefix", "requires_grad", "ddp"), mlp("middle", "requires_grad", "ddp")]
    plan = Plan("test", 0, cases, [], TINY, None, "")
    session = Session(plan, None, resume=False)
    session.select(cases)
    try:
        launcher = session.launcher(cases[0])
        assert isinstance(launcher, TorchLauncher) and session.launcher(cases[1]) is launcher
        first = launcher.start(cases[0], TINY)
        first.close()
        pids = first.pids
        session.add_record(cases[0], {"case_id": cases[0].id}, None)
        assert launcher.workers is not None and launcher.workers.pids == pids  # one to go
        launcher.start(cases[1], TINY).close()
        session.add_record(cases[1], {"case_id": cases[1].id}, None)
        assert launcher.workers is None and _gone(pids)
    finally:
        session.close()
