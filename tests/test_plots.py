"""plots.py: figures drawn from the paired ratios, on a recorded run. What is drawn is read
back from the figure's artists (gids and bounding boxes), not from pixels."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench_lib.analysis import plots
from bench_lib.analysis.results import load_run, tidy

RESULTS = Path(__file__).parent.parent / "results"


@pytest.fixture(scope="module")
def default() -> pd.DataFrame:
    return tidy([load_run(str(RESULTS / "default-cpu.json"))])


def _setup(frame: pd.DataFrame, model: str, parallel: str = "none") -> pd.DataFrame:
    """One set-up of ``model``: eager float32 AdamW, no adapter, the given parallel set-up."""
    keep = (
        (frame["model"] == model)
        & (frame["optimizer"] == "adamw")
        & (frame["amp"] == "none")
        & (frame["compile"] == "off")
        & (frame["checkpoint"] == "off")
        & (frame["adapter"] == "none")
        & (frame["parallel"] == parallel)
    )
    return frame[keep]


def _time_points(fig: Figure) -> dict[str, float]:
    """gid -> y of every time point drawn (see plots.time_memory_vs_depth)."""
    out: dict[str, float] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            gid = line.get_gid()
            if isinstance(line, Line2D) and gid and gid.startswith("time|"):
                out[gid] = float(line.get_ydata()[0])  # type: ignore[index]
    return out


def test_time_values_are_drawn_in_the_order_of_the_ratios(default: pd.DataFrame) -> None:
    frame = _setup(default, "mlp")
    assert frame["depth"].nunique() >= 2
    fig = plots.time_memory_vs_depth(frame, "mlp")
    drawn = _time_points(fig)
    cases = frame[(frame["pattern"] == "middle") & (frame["depth"] == 16)]
    cases = cases[(cases["mechanism"] != "none") & (cases["frozen_mode"] == "train")]
    ratios = {m: float(r) for m, r in zip(cases["mechanism"], cases["time_ratio"], strict=True)}
    ys = {m: drawn[f"time|middle|{m}|16"] for m in ratios}
    assert sorted(ys, key=ys.__getitem__) == sorted(ratios, key=ratios.__getitem__)
    # A case faster than its baseline in the paired ratio is drawn below the line at 1,
    # whatever its median timed at another moment says.
    for mech, ratio in ratios.items():
        assert (ys[mech] < 1.0) == (ratio < 1.0)
    # Every drawn value is the ratio itself.
    for mech, y in ys.items():
        assert y == pytest.approx(ratios[mech])


def test_refused_cases_are_marked_and_one_depth_has_no_depth_axis(default: pd.DataFrame) -> None:
    frame = _setup(default, "mlp", "ddp")
    assert frame["depth"].nunique() == 1
    refused = frame[frame["status"] != "ok"]
    assert len(refused)  # DDP with no_grad: the set-up refused it
    fig = plots.time_memory_vs_depth(frame, "mlp under DDP")
    drawn = _time_points(fig)
    for _, r in refused.iterrows():
        assert f"time|{r['pattern_label']}|{r['mechanism']}|{int(r['depth'])}|failed" in drawn
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert not any("depth (blocks)" in text for text in labels)
    assert any(text.startswith("frozen pattern") for text in labels)
    invalid = frame[frame["validity"] == "invalid"]
    for _, r in invalid.iterrows():  # invalid cases are drawn (hollow), not left out
        assert f"time|{r['pattern_label']}|{r['mechanism']}|{int(r['depth'])}" in drawn


def _overlaps(fig: Figure) -> list[str]:
    """What each legend of ``fig`` covers: the title, or an axes' area (data lives there)."""
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    covered = []
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends
    title = fig._suptitle  # the only handle matplotlib gives to a suptitle
    for legend in legends:
        box = legend.get_window_extent(renderer)
        if title is not None and box.overlaps(title.get_window_extent(renderer)):
            covered.append("title")
        for ax in fig.axes:
            if ax.get_visible() and box.overlaps(ax.get_window_extent(renderer)):
                covered.append(f"axes {ax.get_title() or ax.get_ylabel()}")
            for line in ax.get_lines():
                if line.get_xydata().size and box.overlaps(line.get_window_extent(renderer)):
                    covered.append(f"line {line.get_gid()}")
    return covered


def test_no_legend_covers_a_title_or_data(default: pd.DataFrame) -> None:
    for model, parallel in (("mlp", "none"), ("mlp", "ddp"), ("transformer", "ddp")):
        frame = _setup(default, model, parallel)
        if not len(frame):
            continue
        long_title = f"Step time and peak memory vs depth: {model} under {parallel}, " * 2
        for fig in (
            plots.time_memory_vs_depth(frame, long_title),
            plots.ratio_heatmap(frame, long_title),
        ):
            assert _overlaps(fig) == [], (model, parallel)


def test_heatmap_log_scale_is_centred_on_one_with_each_side_at_its_extreme() -> None:
    norm = plots.log_norm_centred([0.5, 0.9, 1.5])
    assert norm(0.0) == pytest.approx(0.5)
    assert norm(math.log(0.5)) == pytest.approx(0.0)  # the fastest: full green
    assert norm(math.log(1.5)) == pytest.approx(1.0)  # the slowest: full red, not 1/0.5 = 2
    only_faster = plots.log_norm_centred([0.6, 0.8])
    assert only_faster(math.log(0.6)) == pytest.approx(0.0) and only_faster(0.0) == 0.5
