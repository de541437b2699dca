"""results.py: reading benchmark files and journals into the tidy table."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench_lib.analysis.results import (
    BYTE_UNITS,
    KNOWN_SCHEMA_VERSIONS,
    OPTIONAL_FIELDS,
    SECOND_UNITS,
    InputError,
    load_run,
    order_names,
    pattern_label,
    scale,
    table_csv,
    tidy,
)
from bench_lib.record import FIELDS

FIXTURES = Path(__file__).parent / "fixtures"
CPU = FIXTURES / "cpu_run.json"
ROOT = Path(__file__).resolve().parents[1]


def _row(frame: pd.DataFrame, case_id: str) -> dict[str, Any]:
    rows = frame[frame["case_id"] == case_id].to_dict("records")
    assert len(rows) == 1, case_id
    return {str(k): v for k, v in rows[0].items()}


@pytest.fixture(scope="module")
def cpu() -> pd.DataFrame:
    return tidy([load_run(str(CPU))])


def test_benchmark_json_loads_with_failed_and_skipped() -> None:
    run = load_run(str(CPU))
    assert run.format == "pytest-benchmark"
    assert len(run.measured) == 24
    assert [e.name for e in run.failed] == [
        "mlp-d4-w64-b16-middle-backward_inputs-adamw-cpu-float32"
    ]
    assert run.skipped[0]["id"] == "mlp-d2-w64-b16-adamw-cpu-float32-middle"
    assert run.profile == "quick"
    assert run.machine_info["cpu_model"] == "AMD EPYC 9B14"


def test_one_row_per_case_per_file(cpu: pd.DataFrame) -> None:
    assert len(cpu) == 25  # 24 measured + 1 failed
    both = tidy([load_run(str(CPU)), load_run(str(FIXTURES / "cuda_run.json"))])
    assert len(both) == 50
    assert set(both["source_label"]) == {"cpu_run.json", "cuda_run.json"}
    assert set(both["machine_gpu_name"].dropna()) == {"NVIDIA H100 80GB HBM3"}


def test_columns_cover_the_schema_and_stats(cpu: pd.DataFrame) -> None:
    for column in [*FIELDS, *OPTIONAL_FIELDS, "median_s", "iqr_s", "mean_s", "min_s"]:
        assert column in cpu.columns, column
    row = _row(cpu, "mlp-d4-w64-b16-prefix-no_grad-adamw-cpu-float32")
    assert row["median_s"] == pytest.approx(0.60e-3)
    assert row["stats_rounds"] == 11
    assert len(row["samples"]) == 11
    assert row["machine_torch_version"] == "2.13.0+cpu"


def test_baseline_ratios(cpu: pd.DataFrame) -> None:
    row = _row(cpu, "mlp-d4-w64-b16-prefix-no_grad-adamw-cpu-float32")
    assert row["has_baseline"]
    assert row["base_peak_memory_bytes"] == 400_000
    assert row["peak_ratio"] == pytest.approx(300_000 / 400_000)
    assert row["saved_activation_ratio"] == pytest.approx(8_000 / 20_000)
    assert row["flops_backward_ratio"] == pytest.approx(1_000_000 / 2_000_000)
    assert row["backward_ratio"] == pytest.approx(0.25 / 0.5)
    # depth 8 has its own baseline
    deep = _row(cpu, "mlp-d8-w64-b16-prefix-no_grad-adamw-cpu-float32")
    assert deep["peak_ratio"] == pytest.approx(560_000 / 800_000)


def test_validity_and_noise(cpu: pd.DataFrame) -> None:
    assert _row(cpu, "mlp-d4-w64-b16-middle-no_grad-adamw-cpu-float32")["validity"] == "invalid"
    assert _row(cpu, "mlp-d4-w64-b16-middle-requires_grad-adamw-cpu-float32")["validity"] == "valid"
    failed = _row(cpu, "mlp-d4-w64-b16-middle-backward_inputs-adamw-cpu-float32")
    assert failed["validity"] == "failed" and math.isnan(failed["median_s"])
    assert not failed["noisy"]
    # (1.05 - 0.97) / 1.01 = 0.079 <= 0.10: quiet; no interval: noisy; 0.40 / 0.80: noisy.
    assert not _row(cpu, "mlp-d4-w64-b16-none-none-adamw-cpu-float32")["noisy"]
    assert _row(cpu, "mlp-d4-w64-b16-prefix-inference_mode-adamw-cpu-float32")["noisy"]
    assert _row(cpu, "mlp-d4-w64-b16-suffix-backward_inputs-adamw-cpu-float32")["noisy"]


def test_older_file_without_new_fields() -> None:
    frame = tidy([load_run(str(FIXTURES / "old_schema.json"))])
    assert frame["valid"].isna().all() and frame["flops_ratio"].isna().all()
    assert set(frame["validity"]) == {"unknown"}
    assert frame["peak_ratio"].notna().any()


def test_schema_1_and_2_files_load_together(tmp_path: Path) -> None:
    """Schema 2 added foreign_bytes, workspace_bytes and pass_seconds; a schema 1 record lacks
    them and gets null columns, a schema 2 record keeps its values."""
    assert {1, 2} <= KNOWN_SCHEMA_VERSIONS
    assert {"foreign_bytes", "workspace_bytes", "pass_seconds"} <= set(OPTIONAL_FIELDS)
    doc = json.loads(CPU.read_text(encoding="utf-8"))
    for i, b in enumerate(doc["benchmarks"]):
        if i % 2:
            b["extra_info"].update(
                schema_version=2,
                foreign_bytes=i,
                workspace_bytes=0,
                pass_seconds={"timed": 0.5, "memory": 0.25},
            )
        else:
            b["extra_info"]["schema_version"] = 1
            b["extra_info"].pop("foreign_bytes", None)
            b["extra_info"].pop("workspace_bytes", None)
            b["extra_info"].pop("pass_seconds", None)
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    frame = tidy([load_run(str(path))])
    measured = frame[frame["status"] == "ok"].reset_index(drop=True)
    assert measured["foreign_bytes"].iloc[0::2].isna().all()
    assert list(measured["foreign_bytes"].iloc[1::2]) == list(range(1, len(measured), 2))
    assert measured["workspace_bytes"].iloc[1::2].eq(0).all()
    assert measured["pass_seconds"].iloc[0::2].isna().all()
    # A mapping column goes into the CSV as JSON, like the list columns.
    csv = pd.read_csv(io.StringIO(table_csv(frame)))
    assert json.loads(csv["pass_seconds"].iloc[1]) == {"timed": 0.5, "memory": 0.25}


def test_pattern_labels() -> None:
    assert pattern_label({"pattern": "explicit", "frozen_blocks": [0, 2]}) == "explicit [0, 2]"
    assert pattern_label({"pattern": "prefix", "frozen_mode": "eval"}) == "prefix (eval)"
    assert pattern_label({"pattern": "middle", "frozen_mode": "train"}) == "middle"


def test_journal_detected_by_content(tmp_path: Path) -> None:
    disguised = tmp_path / "run.json"
    shutil.copy(FIXTURES / "cpu_run.json.journal.jsonl", disguised)
    run = load_run(str(disguised))
    assert run.format == "journal"
    assert len(run.measured) == 5 and len(run.failed) == 1
    frame = tidy([run])
    assert len(frame) == 6
    assert _row(frame, "mlp-d4-w64-b16-prefix-no_grad-adamw-cpu-float32")["peak_ratio"] == (
        pytest.approx(0.75)
    )


def test_journal_with_incomplete_last_line_is_read_and_noted() -> None:
    run = load_run(str(FIXTURES / "crashed.journal.jsonl"))
    assert len(run.entries) == 4
    assert run.notes == ("journal line 6 is incomplete (the run stopped mid-write)",)


def test_real_suite_output_loads() -> None:
    run = load_run(str(FIXTURES / "suite_quick_trimmed.json"))
    frame = tidy([run])
    assert len(run.measured) == 6 and len(run.failed) == 1
    assert frame["verdict"].notna().all()


# ---------------------------------------------------------------------------- input problems


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _cpu_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(CPU.read_text(encoding="utf-8"))
    return doc


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: str(p / "absent.json"), "no such file"),
        (lambda p: _write(p, "empty.json", ""), "empty file"),
        (lambda p: _write(p, "blank.json", "  \n"), "empty file"),
        (lambda p: _write(p, "cut.json", CPU.read_text()[:5000]), "truncated JSON"),
        (lambda p: _write(p, "bad.json", '{"benchmarks": [}'), "invalid JSON at line 1"),
        (lambda p: _write(p, "list.json", "[1, 2]"), "not pytest-benchmark output"),
        (lambda p: _write(p, "other.json", '{"tests": []}'), "no 'benchmarks' list"),
        (lambda p: _write(p, "none.json", '{"benchmarks": []}'), "without any benchmark"),
        (lambda p: str(p), "is a directory"),
    ],
)
def test_input_problems(tmp_path: Path, make: Any, problem: str) -> None:
    path = make(tmp_path)
    with pytest.raises(InputError) as err:
        load_run(path)
    assert problem in str(err.value)
    assert str(err.value).startswith(f"{path}: ")
    assert "\n" not in str(err.value)


def test_unknown_schema_version(tmp_path: Path) -> None:
    doc = _cpu_doc()
    doc["benchmarks"][3]["extra_info"]["schema_version"] = 99
    path = _write(tmp_path, "future.json", json.dumps(doc))
    with pytest.raises(InputError, match=r"schema_version 99, which this freeze-bench does not"):
        load_run(path)


def test_foreign_benchmarks_are_refused(tmp_path: Path) -> None:
    doc = _cpu_doc()
    doc["benchmarks"][0]["extra_info"] = {}
    path = _write(tmp_path, "foreign.json", json.dumps(doc))
    with pytest.raises(InputError, match="no freeze-bench record"):
        load_run(path)


def test_journal_problems(tmp_path: Path) -> None:
    lines = (FIXTURES / "cpu_run.json.journal.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    future = _write(tmp_path, "f.jsonl", json.dumps({**header, "journal_version": 7}) + "\n")
    with pytest.raises(InputError, match="journal_version 7"):
        load_run(future)
    broken = [*lines[:2], lines[2][:40], *lines[3:]]
    middle = _write(tmp_path, "m.jsonl", "\n".join(broken) + "\n")
    with pytest.raises(InputError, match="journal line 3 is not valid JSON"):
        load_run(middle)


# ---------------------------------------------------------------------------- helpers


def test_order_names_puts_known_mechanisms_first() -> None:
    names = ["zzz_trap", "requires_grad", "none", "aaa_trap", "no_grad", "requires_grad"]
    assert order_names(names, ("none", "no_grad", "requires_grad")) == [
        "none",
        "no_grad",
        "requires_grad",
        "aaa_trap",
        "zzz_trap",
    ]


def test_scale_picks_readable_units() -> None:
    assert scale(1536, BYTE_UNITS) == (1.5, "KiB")
    assert scale(3 * 2**20, BYTE_UNITS) == (3.0, "MiB")
    assert scale(512, BYTE_UNITS) == (512.0, "B")
    value, unit = scale(0.00123, SECOND_UNITS)
    assert unit == "ms" and value == pytest.approx(1.23)
    assert scale(2.5, SECOND_UNITS) == (2.5, "s")


def test_csv_round_trips(cpu: pd.DataFrame) -> None:
    back = pd.read_csv(io.StringIO(table_csv(cpu)))
    assert len(back) == len(cpu)
    assert "samples" not in back.columns
    row = back[back["case_id"] == "mlp-d4-w64-b16-blocks0.2-no_grad-adamw-cpu-float32"].iloc[0]
    assert json.loads(row["frozen_blocks"]) == [0, 2]
    assert row["peak_memory_bytes"] == 320_000  # bytes, unscaled


def test_analysing_side_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import bench_lib.analysis.cli, bench_lib.analysis.report, bench_lib.analysis.compare\n"
        "import bench_lib.analysis.results\n"
        "import bench_lib.analysis.plots\n"
        "from bench_lib.analysis.findings import findings\n"
        "findings()  # imports every finding module\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
