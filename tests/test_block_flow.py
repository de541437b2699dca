"""Per-block backward flow (``block_flow``) against hand-derived expectations, its agreement
with the verdicts, and the backward map drawn from it.

Hand derivation on an MLP of 4 blocks (``Linear + ReLU`` each, then a trainable head), the
x bit being "a gradient reached the block's input activation" and block 0 being fed the data
(which requires no grad, so block 0 never has x):

* prefix (0, 1) frozen: under ``requires_grad``, ``no_grad`` and ``inference_mode`` nothing
  before block 2 requires grad, so blocks 0, 1 are not in the graph and block 2's input
  requires no grad (``w``); block 3's input is block 2's output (``wx``). ``backward_inputs``
  asks only for the trainable leaves: the engine never runs the nodes below block 2, so the
  same. ``optimizer_only`` keeps everything in the graph: block 0 ``w``, the others ``wx``.
* middle (1): ``requires_grad`` and ``backward_inputs`` send dX through block 1 to block 0
  (which trains) but no dW: block 1 ``x``; ``no_grad`` cuts the graph: block 0 ``starved``,
  block 1 ``none`` and block 2 (fed an activation made without grad) ``w``.
* alternating (1, 3): ``requires_grad`` gives ``w, x, wx, x``; ``no_grad`` starves blocks 0 and
  2, whose outputs only feed a block run without grad.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from bench_lib.analysis import backward_map as bm
from bench_lib.measuring import adapters, verify
from bench_lib.measuring.patterns import pattern_blocks
from bench_lib.measuring.spec import Case
from bench_lib.measuring.verify import check_case

needs_peft = pytest.mark.skipif(adapters.peft_missing() is not None, reason="peft missing")


def mlp(pattern: str, mechanism: str, **kw: Any) -> Case:
    return Case("mlp", 4, 16, 4, pattern, pattern_blocks(pattern, 4), mechanism, **kw)


EXPECTED = {
    ("prefix", "requires_grad"): ("none", "none", "w", "wx"),
    ("prefix", "no_grad"): ("none", "none", "w", "wx"),
    ("prefix", "optimizer_only"): ("w", "wx", "wx", "wx"),
    ("prefix", "backward_inputs"): ("none", "none", "w", "wx"),
    ("middle", "requires_grad"): ("w", "x", "wx", "wx"),
    ("middle", "no_grad"): ("starved", "none", "w", "wx"),
    ("middle", "optimizer_only"): ("w", "wx", "wx", "wx"),
    ("middle", "backward_inputs"): ("w", "x", "wx", "wx"),
    ("alternating", "requires_grad"): ("w", "x", "wx", "x"),
    ("alternating", "no_grad"): ("starved", "none", "starved", "none"),
    ("alternating", "optimizer_only"): ("w", "wx", "wx", "wx"),
    ("alternating", "backward_inputs"): ("w", "x", "wx", "x"),
}


@pytest.mark.parametrize(("pattern", "mechanism"), sorted(EXPECTED), ids="-".join)
def test_mlp_flow_matches_the_hand_derivation(pattern: str, mechanism: str) -> None:
    v = check_case(mlp(pattern, mechanism))
    assert v.block_flow == EXPECTED[pattern, mechanism], v.detail


def test_baseline_trains_every_block_and_passes_dx_down_to_block_1() -> None:
    assert check_case(mlp("none", "none")).block_flow == ("w", "wx", "wx", "wx")


def test_a_checkpointed_block_counts_once() -> None:
    """Checkpointing recomputes the trainable blocks' forward inside backward: the hooks ignore
    the recomputation, so the flow is the eager one."""
    for pattern, mechanism in (("middle", "requires_grad"), ("prefix", "optimizer_only")):
        v = check_case(mlp(pattern, mechanism, checkpoint="on"))
        assert v.block_flow == EXPECTED[pattern, mechanism]


def test_faults_show_in_their_blocks() -> None:
    assert check_case(mlp("prefix", "zeroed_grad_in_optimizer")).block_flow == (
        "moved", "moved", "wx", "wx",
    )  # fmt: skip
    cnn = Case("cnn", 4, 4, 2, "prefix", (0, 1), "requires_grad", extra=(("image_size", 4),))
    assert check_case(cnn).block_flow == ("buffers", "buffers", "w", "wx")


def test_no_flow_for_an_error_verdict() -> None:
    v = check_case(mlp("prefix", "inference_mode_nocopy"))
    assert v.verdict == "error" and v.block_flow is None


#: The verdict each fault code stands for.
_FAULT = {
    "starved": "graph_cut",
    "moved": "frozen_param_moved",
    "buffers": "frozen_buffer_changed",
    "drift": "rounding_drift",
}


def test_cells_agree_with_the_verdicts() -> None:
    """A verdict with a fault code has that code in some block, and a block shows a fault code
    only where the verdict (or its detail, for a lesser fault) names it; a valid case shows
    no ✗ code at all."""
    cases = [
        mlp(p, m)
        for p in ("prefix", "middle", "alternating", "suffix")
        for m in ("requires_grad", "no_grad", "inference_mode", "optimizer_only",
                  "backward_inputs", "zeroed_grad_in_optimizer", "late_freeze")
    ] + [
        Case("cnn", 4, 4, 2, "prefix", (0, 1), m, extra=(("image_size", 4),), frozen_mode=f)
        for m in ("requires_grad", "no_grad") for f in ("train", "eval")
    ]  # fmt: skip
    seen = set()
    for c in cases:
        v = check_case(c)
        assert v.block_flow is not None and len(v.block_flow) == 4
        codes = set(v.block_flow)
        seen |= codes
        if v.verdict in _FAULT.values():
            code = next(k for k, f in _FAULT.items() if f == v.verdict)
            assert code in codes, (c.id, v.verdict, v.block_flow)
        for code in codes & set(_FAULT):
            assert _FAULT[code] == v.verdict or _FAULT[code] in v.detail or code == "buffers", (
                c.id,
                v.block_flow,
            )
        if v.valid:
            assert not codes & {"starved", "moved", "buffers"}, (c.id, v.block_flow)
    assert {"wx", "w", "x", "none", "starved", "moved", "buffers"} <= seen


def test_block_cells_order_of_precedence() -> None:
    """Pure: faults win over flows, in the order starved, moved, buffers, drift."""
    from bench_lib.measuring.training import build_workload

    w = build_workload(mlp("alternating", "requires_grad"))
    intended = w.trainable_intended
    f = verify.Findings(cut={0}, moved={"blocks.1.0.weight": 1.0}, drift={"blocks.3.0.bias": 1e-8})
    f.buffers["blocks.1.x"] = 1.0
    flow = [(True, False), (False, True), (True, True), (False, False)]
    assert verify.block_cells(w.plan, intended, f, flow) == ["starved", "moved", "wx", "drift"]
    with pytest.raises(ValueError, match="3 entries for 4 blocks"):
        verify.block_cells(w.plan, intended, f, flow[:3])


@needs_peft
def test_lora_attention_block_drifts() -> None:
    c = Case(
        "transformer", 2, 16, 2, "prefix", (0,), "no_grad", extra=(("seq_len", 4),),
        adapter="lora", lora_rank=4,
    )  # fmt: skip
    assert check_case(c).block_flow == ("none", "drift")


# ---------------------------------------------------------------------------- the map


def test_codes_are_the_measuring_sides() -> None:
    assert tuple(bm.CODES) == verify.FLOW_CODES


def _row(pattern: str, mechanism: str, flow: list[str] | None, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict(
        model="mlp", depth=4, parallel="none", world_size=1, pattern=pattern,
        mechanism=mechanism, block_flow=flow, adapter="none", frozen_mode="train",
        amp="none", compile="off", checkpoint="off",
    )  # fmt: skip
    row.update(kw)
    return row


ROWS = [
    _row("middle", "no_grad", ["starved", "none", "w", "wx"]),
    _row("none", "none", ["w", "wx", "wx", "wx"]),
    _row("middle", "requires_grad", ["w", "x", "wx", "wx"]),
    _row("prefix", "inference_mode_nocopy", None),
    _row("prefix", "requires_grad", ["buffers", "moved", "drift", "wx"], frozen_mode="eval"),
    _row("prefix", "requires_grad", ["w"] * 8, depth=8),  # another depth: not in this map
    _row("prefix", "requires_grad", None, parallel="ddp", world_size=2),  # another set-up
]


def test_map_picks_one_setup_and_depth_and_orders_rows() -> None:
    m = bm.backward_map(ROWS)
    assert (m.model, m.depth, m.setup) == ("mlp", 4, "one process")
    assert m.title == "Backward map: mlp, depth 4, one process"
    assert m.labels == (
        "none / none",
        "prefix / requires_grad (eval)",
        "prefix / inference_mode_nocopy",
        "middle / no_grad",
        "middle / requires_grad",
    )
    assert m.cells[2] == (bm.NOT_MEASURED,) * 4
    assert m.cells[3] == ("starved", "none", "w", "wx")
    assert "middle / no_grad" in m.text()


def test_map_figure_holds_the_codes_and_keeps_its_legend_outside(tmp_path: Path) -> None:
    m = bm.backward_map(ROWS)
    fig = bm.map_figure(m)
    ax = fig.axes[0]
    keys = [*bm.CODES, bm.NOT_MEASURED]
    grid = ax.images[0].get_array()
    assert [[keys[int(v)] for v in row] for row in grid] == [list(r) for r in m.cells]
    cells = {t.get_gid(): t.get_text() for t in ax.texts}
    assert cells["cell:3:0:starved"] == bm.CODES["starved"][0]
    assert cells["cell:1:2:drift"] == bm.CODES["drift"][0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(m.labels)
    assert fig.get_suptitle() == m.title
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # type: ignore[no-untyped-call]
    renderer = canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    axes_box = ax.get_tightbbox(renderer)  # cells, ticks and labels
    assert axes_box is not None and not legend.overlaps(axes_box)
    (title,) = [t for t in fig.findobj(Text) if t.get_text() == m.title]
    assert not legend.overlaps(title.get_window_extent(renderer))
    shown = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("rounding drift" in s for s in shown) and any("not measured" in s for s in shown)
    out = bm.draw_backward_map(ROWS, tmp_path / "maps" / "mlp.png")
    assert out == m and (tmp_path / "maps" / "mlp.png").stat().st_size > 1000


def test_map_refuses_mixed_families_and_unmeasured_rows() -> None:
    with pytest.raises(ValueError, match=r"one family; rows hold \['cnn', 'mlp'\]"):
        bm.backward_map([*ROWS, _row("prefix", "no_grad", ["none"] * 4, model="cnn")])
    with pytest.raises(ValueError, match="no row of mlp has a measured block_flow"):
        bm.backward_map([_row("prefix", "no_grad", None)])
    with pytest.raises(ValueError, match="'bogus' is not one of"):
        bm.backward_map([_row("prefix", "no_grad", ["bogus"] * 4)])


def test_map_of_real_verdicts(tmp_path: Path) -> None:
    """Records' block_flow straight from the check draw a map whose cells are those flows."""
    rows = []
    for pattern, mechanism in EXPECTED:
        v = check_case(mlp(pattern, mechanism))
        rows.append(_row(pattern, mechanism, list(v.block_flow or ())))
    m = bm.draw_backward_map(rows, tmp_path / "mlp.png")
    got = dict(zip(m.labels, m.cells, strict=True))
    for (pattern, mechanism), flow in EXPECTED.items():
        assert got[f"{pattern} / {mechanism}"] == flow
