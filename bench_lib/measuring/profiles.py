"""Named profiles, as data: which grids each sweeps and with what budget.

A profile is a list of grids; each grid is a cross product over its axes for one model family
plus a per-case :class:`~bench_lib.measuring.budget.Budget`. :mod:`.sweep` turns a profile and
the command line's filters into cases.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..axes import Axis, grid_axes
from ..vocab import MECHANISMS, PATTERNS, TRAP_MECHANISMS
from .budget import Budget
from .spec import check_choice

__all__ = [
    "ALL_PATTERNS",
    "BLOCK_POSITIONS",
    "EXAMPLE_FACTORY",
    "FREEZE_MECHANISMS",
    "MAIN_MECHANISMS",
    "PARALLEL_MECHANISMS",
    "PROFILES",
    "Grid",
    "Profile",
    "resolve_positions",
]

#: Every block pattern a grid sweeps by default (``explicit`` needs its indices).
ALL_PATTERNS = tuple(p for p in PATTERNS if p != "explicit")
#: Every mechanism but the baseline's.
FREEZE_MECHANISMS = tuple(m for m in MECHANISMS if m != "none")
#: The mechanisms people use on purpose; grids sweep these unless they name others.
MAIN_MECHANISMS = tuple(m for m in FREEZE_MECHANISMS if m not in TRAP_MECHANISMS)


#: The worked example of a user's model factory (a small U-Net), run by the quick profile.
EXAMPLE_FACTORY = "benchmarks.example_factory:build"

#: Named block positions of a profile's 'explicit' grids, resolved per depth.
BLOCK_POSITIONS: dict[str, Callable[[int], int]] = {
    "first": lambda depth: 0,
    "middle": lambda depth: depth // 2,
    "last": lambda depth: depth - 1,
}


def resolve_positions(positions: Sequence[str], depth: int) -> tuple[int, ...]:
    """Block indices of named ``positions`` at ``depth`` (duplicates merged)."""
    for name in positions:
        check_choice("block position", name, BLOCK_POSITIONS)
    return tuple(sorted({BLOCK_POSITIONS[name](depth) for name in positions}))


#: Grid fields that are not one swept axis's values.
_GRID_FIELDS = ("frozen_modes", "extra", "scenario", "blocks", "freeze", "factory")


class Grid:
    """A cross product over one model family. ``extra`` holds family sizes (seq_len,
    image_size).

    Besides the family, depths, width, batch size, patterns and mechanisms, a grid names the
    values of any swept axis by the axis's grid field (:attr:`bench_lib.axes.Axis.grid`:
    ``optimizers``, ``dtypes``, ``amps``, ``compiles``, ``checkpoints``, ``adapters``,
    ``lora_ranks``, ``parallel``, ``worlds``, and any axis declared outside the package); an
    axis it does not name takes the axis's default values. Step axes, adapters and parallel
    set-ups are never crossed with each other in a profile: they get grids of their own.

    ``blocks`` are the blocks of pattern 'explicit', as positions resolved at each depth after
    overrides (names of :data:`BLOCK_POSITIONS`), so that ``--bench-depth 4`` still fits them;
    ``freeze`` the parameter-name globs of pattern 'names' (``--bench-freeze`` replaces them);
    ``factory`` the factory's ``MODULE:FUNCTION`` of model 'factory' (``--bench-model-factory``
    replaces it; a factory grid without one is a template that runs only with a factory given).
    """

    def __init__(
        self,
        model: str,
        depths: tuple[int, ...],
        width: int,
        batch_size: int,
        patterns: tuple[str, ...] = ALL_PATTERNS,
        mechanisms: tuple[str, ...] = MAIN_MECHANISMS,
        *,
        frozen_modes: tuple[str, ...] = ("train",),
        extra: tuple[tuple[str, int], ...] = (),
        scenario: str = "sweep",
        blocks: tuple[str, ...] = (),
        freeze: tuple[str, ...] = (),
        factory: str = "",
        **axes: tuple[Any, ...],
    ) -> None:
        swept = {a.grid: a for a in grid_axes()}
        for key, values in axes.items():
            if key not in swept:
                known = ", ".join([*swept, *_GRID_FIELDS])
                raise TypeError(f"Grid() got an unknown field {key!r}; known: {known}")
            for v in values:
                swept[key].check(v)
        self.model = model
        self.depths = depths
        self.width = width
        self.batch_size = batch_size
        self.patterns = patterns
        self.mechanisms = mechanisms
        self.frozen_modes = frozen_modes
        self.extra = extra
        self.scenario = scenario
        self.blocks = blocks
        self.freeze = freeze
        self.factory = factory
        self.axes: dict[str, tuple[Any, ...]] = dict(axes)

    def replace(self, **changes: Any) -> Grid:
        """A copy with ``changes`` (constructor arguments: fields or swept axes)."""
        kw: dict[str, Any] = {
            "patterns": self.patterns,
            "mechanisms": self.mechanisms,
            **{name: getattr(self, name) for name in _GRID_FIELDS},
            **self.axes,
            **changes,
        }
        return Grid(self.model, self.depths, self.width, self.batch_size, **kw)

    def values(self, axis: Axis) -> tuple[Any, ...]:
        """The grid's values of a swept axis (the axis's defaults where it names none)."""
        return self.axes.get(axis.grid, axis.grid_values)

    def __getattr__(self, name: str) -> tuple[Any, ...]:
        # Swept axes by their grid field name: grid.amps, grid.parallel, grid.worlds, ...
        if name != "axes":
            for a in grid_axes():
                if a.grid == name:
                    return self.values(a)
        raise AttributeError(name)

    def __repr__(self) -> str:
        axes = "".join(f", {k}={v!r}" for k, v in self.axes.items())
        return f"Grid({self.model!r}, {self.depths!r}, {self.width}, {self.batch_size}{axes})"


@dataclass(frozen=True)
class Profile:
    """A named sweep: its grids (or ``make_grids``, which builds them when first asked for:
    the pairwise profile's covering array), its budget, devices and thread counts."""

    name: str
    description: str
    grids: tuple[Grid, ...]
    budget: Budget
    devices: tuple[str, ...] = ("cpu",)
    threads: tuple[int, ...] = (1,)
    make_grids: Callable[[], tuple[Grid, ...]] | None = None

    def all_grids(self) -> tuple[Grid, ...]:
        return self.grids if self.make_grids is None else _built_grids(self.make_grids)


@functools.cache
def _built_grids(make: Callable[[], tuple[Grid, ...]]) -> tuple[Grid, ...]:
    return make()


def _pairwise_grids() -> tuple[Grid, ...]:
    """One grid per row of the pairwise covering array (:mod:`.pairwise`) on the devices this
    machine has: every value of any axis meets every value of every other axis, at tiny
    sizes."""
    from .devices import cuda_unavailable_reason
    from .pairwise import complete, covering_array

    devices = ("cpu",) if cuda_unavailable_reason() else ("cpu", "cuda")
    grids = []
    for row in covering_array(devices).rows:
        v = complete(row)
        swept = {a.grid: (v[a.name],) for a in grid_axes()}
        grids.append(
            Grid(
                v["model"], (v["depth"],), v["width"], v["batch_size"], (v["pattern"],),
                (v["mechanism"],), frozen_modes=(v["frozen_mode"],), extra=v["extra"],
                scenario=v["scenario"], blocks=("first", "middle"), freeze=v["freeze"],
                factory=v["factory"], **swept,
            )
        )  # fmt: skip
    return tuple(grids)


# The seed scenario: model X (frozen transformer encoder) feeding model Y (trained with AdamW).
def _seed(width: int, batch: int, depth: int, seq: int) -> Grid:
    return Grid(
        "xy",
        (depth,),
        width,
        batch,
        patterns=("none", "prefix"),
        mechanisms=FREEZE_MECHANISMS,
        extra=(("seq_len", seq),),
        scenario="seed",
    )


def _glance(model: str, depth: int, width: int, batch: int, **sizes: int) -> list[Grid]:
    """One small case group of a family for the quick profile: the baseline, the frozen prefix
    under no_grad and requires_grad, and the frozen middle under no_grad."""
    extra = tuple(sizes.items())
    factory = EXAMPLE_FACTORY if model == "factory" else ""
    return [
        Grid(model, (depth,), width, batch, ("none", "prefix"), ("no_grad", "requires_grad"),
             extra=extra, factory=factory),
        Grid(model, (depth,), width, batch, ("middle",), ("no_grad",), extra=extra,
             factory=factory),
    ]  # fmt: skip


_RG_NG = ("requires_grad", "no_grad")
_PM = ("none", "prefix", "middle")

#: The Grid field and value each step axis's grids set (the other axes keep their defaults).
_AXIS_VALUES: dict[str, tuple[str, str]] = {
    "amp": ("amps", "bf16"),
    "compile": ("compiles", "on"),
    "checkpoint": ("checkpoints", "on"),
}


def _axis(
    axis: str,
    model: str,
    depth: int,
    width: int,
    batch: int,
    patterns: tuple[str, ...],
    mechanisms: tuple[str, ...] = MAIN_MECHANISMS,
    **sizes: int,
) -> Grid:
    """A grid of its own for one step axis (``amp`` bf16, ``compile`` on or ``checkpoint`` on),
    at the size of an eager grid of the profile, so that the report sets each case against the
    same case in eager float32."""
    field, value = _AXIS_VALUES[axis]
    setting: dict[str, Any] = {field: (value,)}
    return Grid(
        model, (depth,), width, batch, patterns, mechanisms, extra=tuple(sizes.items()), **setting
    )


def _real(model: str, depths: tuple[int, ...], width: int, batch: int, **sizes: int) -> Grid:
    """A transformers family at real sizes: every pattern under the main mechanisms."""
    return Grid(model, depths, width, batch, extra=tuple(sizes.items()))


def _cpu_real(
    model: str, depth: int, width: int, batch: int, *, eval_mode: bool = False, **sizes: int
) -> list[Grid]:
    """A transformers family at CPU sizes: the frozen prefix, middle and all-but-head under the
    main mechanisms; with ``eval_mode`` (BatchNorm) also each of them in eval mode (the cure for
    the running statistics the frozen BatchNorm layers change in train mode)."""
    extra = tuple(sizes.items())
    patterns = ("none", "prefix", "middle", "all_but_head")
    grids = [Grid(model, (depth,), width, batch, patterns, extra=extra)]
    if eval_mode:  # BatchNorm: each frozen pattern in eval mode too (the cure)
        grids.append(Grid(model, (depth,), width, batch, patterns[1:], frozen_modes=("eval",),
                          extra=extra))  # fmt: skip
    return grids


def _lora(
    model: str, depth: int, width: int, batch: int, ranks: tuple[int, ...], **sizes: int
) -> Grid:
    """LoRA (peft) on a family at ``ranks``, a grid of its own: on the whole model (pattern
    none) and on the upper half with the frozen prefix under requires_grad and no_grad. One
    rank should give about the prefix's trainable count, so that the report can set LoRA
    against freezing at a matched budget."""
    return Grid(
        model, (depth,), width, batch, ("none", "prefix"), ("requires_grad", "no_grad"),
        extra=tuple(sizes.items()), adapters=("lora",), lora_ranks=ranks,
    )  # fmt: skip


#: The mechanisms the parallel grids sweep: the module-level one DDP refuses, the parameter
#: flag, and the one that leaves frozen parameters trainable (still all-reduced).
PARALLEL_MECHANISMS = ("no_grad", "requires_grad", "optimizer_only")


def _parallel(model: str, depth: int, width: int, batch: int, **sizes: int) -> list[Grid]:
    """A family's data-parallel grids at one size (batch per rank): DDP and FSDP2 on the frozen
    prefix and middle under :data:`PARALLEL_MECHANISMS`."""
    extra = tuple(sizes.items())
    patterns = ("none", "prefix", "middle")
    return [
        Grid(model, (depth,), width, batch, patterns, PARALLEL_MECHANISMS, extra=extra,
             parallel=("ddp", "fsdp")),
    ]  # fmt: skip


def _parallel_flags(model: str, depth: int, width: int, batch: int) -> list[Grid]:
    """What DDP's flags and FSDP1 change: ``find_unused_parameters`` and ``static_graph`` on the
    frozen prefix and middle under no_grad and requires_grad; FSDP1 with and without
    ``use_orig_params`` on the middle under requires_grad and optimizer_only, and on the
    weights alone (``names``: frozen and trainable parameters in one unit) under
    requires_grad."""
    flags = ("ddp_find_unused", "ddp_static")
    fsdp1 = ("fsdp1", "fsdp1_orig_params")
    return [
        Grid(model, (depth,), width, batch, ("none", "prefix", "middle"),
             ("no_grad", "requires_grad"), parallel=flags),
        Grid(model, (depth,), width, batch, ("none", "middle"),
             ("requires_grad", "optimizer_only"), parallel=fsdp1),
        Grid(model, (depth,), width, batch, ("names",), ("requires_grad",),
             freeze=("blocks.*.0.weight",), parallel=fsdp1),
    ]  # fmt: skip


def _eval_grids(
    model: str,
    depths: tuple[int, ...],
    width: int,
    batch: int,
    extra: tuple[tuple[str, int], ...],
    batchnorm: bool,
) -> list[Grid]:
    """Frozen blocks in eval mode: for a family with BatchNorm every frozen pattern (the cure
    for its running statistics, shown beside each train-mode case); otherwise the prefix and
    the middle."""
    if not batchnorm:
        return [Grid(model, depths, width, batch, ("prefix", "middle"), frozen_modes=("eval",),
                     extra=extra)]  # fmt: skip
    patterns = tuple(p for p in ALL_PATTERNS if p != "none")
    return [
        Grid(model, depths, width, batch, patterns, frozen_modes=("eval",), extra=extra),
        Grid(model, (max(depths),), width, batch, ("explicit",), frozen_modes=("eval",),
             extra=extra, blocks=("first", "middle")),
    ]  # fmt: skip


def _family(
    model: str,
    depths: tuple[int, ...],
    width: int,
    batch: int,
    *,
    batchnorm: bool = False,
    **sizes: int,
) -> list[Grid]:
    """A family's standard grids: every pattern under the main mechanisms; the traps on the
    prefix and the suffix; eval-mode frozen blocks on the prefix and the middle; SGD (momentum)
    on the middle; and two isolated frozen blocks (the first and the middle one) at the deepest
    depth, pattern 'explicit'."""
    extra = tuple(sizes.items())
    deepest = max(depths)
    return [
        Grid(
            model, (deepest,), width, batch, ("explicit",), extra=extra, blocks=("first", "middle")
        ),
        Grid(model, depths, width, batch, extra=extra),
        Grid(model, depths, width, batch, ("prefix", "suffix"), TRAP_MECHANISMS, extra=extra),
        *_eval_grids(model, depths, width, batch, extra, batchnorm),
        Grid(model, depths, width, batch, ("none", "middle"), optimizers=("sgd",), extra=extra),
    ]


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        "quick",
        "every model, pattern, mechanism, optimizer and frozen mode at least once, at small "
        "sizes (CI, smoke runs): about a minute on 2 cores",
        (
            Grid("mlp", (4,), 64, 16),
            Grid("mlp", (4,), 64, 16, ("explicit",), blocks=("first", "middle")),
            Grid("mlp", (4,), 64, 16, ("prefix",), TRAP_MECHANISMS),
            Grid(
                "mlp",
                (4,),
                64,
                16,
                ("none", "middle"),
                ("requires_grad", "late_freeze"),
                optimizers=("sgd",),
            ),
            Grid(
                "transformer", (4,), 32, 4, ("none", "prefix", "middle"), extra=(("seq_len", 16),)
            ),
            Grid(
                "transformer",
                (4,),
                32,
                4,
                ("suffix",),
                ("inference_mode_nocopy",),
                extra=(("seq_len", 16),),
            ),
            Grid(
                "cnn",
                (4,),
                8,
                4,
                ("none", "prefix", "alternating"),
                frozen_modes=("train", "eval"),
                extra=(("image_size", 8),),
            ),
            _seed(32, 4, depth=4, seq=16),
            # The step axes, a grid each: autocast and checkpointing on the transformer, and one
            # compiled pair on the MLP (inductor's cold start, about 20 s on 2 cores with an
            # empty cache, is most of what they add; a transformer's graphs take 20 s more).
            *(
                _axis(axis, "transformer", 4, 32, 4, ("none", "prefix"), _RG_NG, seq_len=16)
                for axis in ("amp", "checkpoint")
            ),
            _axis("compile", "mlp", 4, 64, 16, ("none", "prefix"), ("requires_grad",)),
            *_glance("resnet", 2, 8, 2, image_size=32),
            *_glance("vit", 2, 32, 2, image_size=16, patch_size=4),
            *_glance("bert", 2, 32, 2, seq_len=16),
            *_glance("gpt2", 2, 32, 2, seq_len=16),
            *_glance("factory", 2, 8, 2, image_size=16),
            # One LoRA case: rank 16 on the whole MLP trains 8,842 parameters, the frozen
            # prefix 8,970.
            Grid("mlp", (4,), 64, 16, ("none",), adapters=("lora",), lora_ranks=(16,)),
            # The U-Net's outer level by name: its first and last blocks.
            Grid(
                "factory",
                (2,),
                8,
                2,
                ("names",),
                ("no_grad", "requires_grad"),
                extra=(("image_size", 16),),
                freeze=("enc.0.*", "dec.0.*"),
                factory=EXAMPLE_FACTORY,
            ),
            # Data parallelism on two ranks: DDP refusing a prefix under no_grad, FSDP2 with a
            # prefix under requires_grad.
            Grid("mlp", (4,), 64, 16, ("none", "prefix"), ("no_grad",), parallel=("ddp",)),
            Grid("mlp", (4,), 64, 16, ("none", "prefix"), ("requires_grad",), parallel=("fsdp",)),
        ),
        Budget(
            warmup_rounds=1,
            target_time_s=0.03,
            min_rounds=3,
            max_rounds=20,
            ratio_pairs=6,
            phase_reps=3,
            # 2.5 s until the rounds' gc.collect() stopped walking the whole process: the
            # profile then took 107 s, and the time it freed goes to the rounds.
            group_cap_s=3.5,
        ),
    ),
    "default": Profile(
        "default",
        "what a person runs on a laptop CPU: several depths, realistic widths, every pattern and "
        "mechanism; under 15 minutes on 2 cores",
        (
            *_family("mlp", (4, 8, 16), 256, 64),
            *_family("transformer", (4, 8), 64, 8, seq_len=32),
            *_family("cnn", (4, 8), 16, 16, batchnorm=True, image_size=16),
            _seed(64, 8, depth=8, seq=32),
            # The step axes, a grid each: the frozen prefix and middle under the main
            # mechanisms; compiled, the MLP so (and the late freeze, which recompiles) and the
            # transformer's prefix under requires_grad and no_grad.
            *(_axis(axis, "mlp", 8, 256, 64, _PM) for axis in ("amp", "checkpoint")),
            *(
                _axis(axis, "transformer", 4, 64, 8, _PM, seq_len=32)
                for axis in ("amp", "checkpoint")
            ),
            _axis("compile", "mlp", 8, 256, 64, _PM),
            _axis("compile", "mlp", 8, 256, 64, ("prefix",), ("late_freeze",)),
            _axis("compile", "transformer", 4, 64, 8, ("none", "prefix"), _RG_NG, seq_len=32),
            *_cpu_real("resnet", 4, 16, 16, eval_mode=True, image_size=32),
            *_cpu_real("bert", 4, 128, 8, seq_len=64),
            # LoRA: rank 8, and the rank whose LoRA on the whole model trains about what
            # freezing the prefix does (transformer 98,954 against 100,618; bert 607,626
            # against 612,618).
            _lora("transformer", 4, 64, 8, (8, 24), seq_len=32),
            _lora("bert", 4, 128, 8, (8, 64), seq_len=64),
            Grid("factory", (4,), 16, 8, extra=(("image_size", 32),)),
            *_parallel("mlp", 8, 256, 64),
            *_parallel("transformer", 4, 64, 8, seq_len=32),
            *_parallel_flags("mlp", 8, 256, 64),
        ),
        Budget(
            warmup_rounds=2,
            target_time_s=0.3,
            min_rounds=5,
            max_rounds=60,
            ratio_pairs=16,
            phase_reps=5,
            # 8 s until the rounds' gc.collect() stopped walking the whole process (17 min 11 s
            # then, against 18 min 24 s and 19 min 24 s before): 1 s more a group keeps the
            # A/A pair inside its 20 minutes.
            group_cap_s=9.0,
        ),
    ),
    "gpu": Profile(
        "gpu",
        "real sizes on one H100-class GPU in about 6 minutes: every family at depth 8, every "
        "pattern under the main mechanisms, the traps on the prefix, eval-mode frozen blocks, "
        "SGD, bfloat16 and the seed scenario",
        (
            Grid("mlp", (8,), 2048, 256),
            Grid("mlp", (8,), 2048, 256, ("prefix",), TRAP_MECHANISMS),
            Grid("mlp", (8,), 2048, 256, ("explicit",), blocks=("first", "middle")),
            Grid("mlp", (8,), 2048, 256, ("none", "middle"), optimizers=("sgd",)),
            Grid("transformer", (8,), 512, 32, extra=(("seq_len", 256),)),
            Grid(
                "transformer",
                (8,),
                512,
                32,
                ("none", "prefix", "middle"),
                dtypes=("bfloat16",),
                extra=(("seq_len", 256),),
            ),
            Grid("cnn", (8,), 64, 64, extra=(("image_size", 64),)),
            Grid(
                "cnn",
                (8,),
                64,
                64,
                ("prefix", "middle"),
                frozen_modes=("eval",),
                extra=(("image_size", 64),),
            ),
            _seed(512, 32, depth=8, seq=256),
            Grid("factory", (8,), 64, 32, extra=(("image_size", 64), ("seq_len", 256))),
            # One GPU: DDP over nccl in a world of one (--bench-world N with N GPUs).
            Grid(
                "mlp",
                (8,),
                2048,
                256,
                ("none", "prefix"),
                ("requires_grad",),
                parallel=("ddp",),
                worlds=(1,),
            ),
        ),
        Budget(
            warmup_rounds=2,
            target_time_s=0.2,
            min_rounds=5,
            max_rounds=100,
            ratio_pairs=11,
            phase_reps=5,
        ),
        devices=("cuda",),
    ),
    "full": Profile(
        "full",
        "what a person runs on a GPU: deeper, wider, both dtypes",
        (
            *_family("mlp", (4, 8, 16, 32), 2048, 256),
            *_family("transformer", (4, 8, 16), 512, 32, seq_len=256),
            *_family("cnn", (4, 8, 16), 64, 64, image_size=64),
            Grid("mlp", (8,), 2048, 256, dtypes=("bfloat16",)),
            Grid("transformer", (8,), 512, 32, dtypes=("bfloat16",), extra=(("seq_len", 256),)),
            _seed(512, 32, depth=8, seq=256),
            # The real configurations (10-class heads): ResNet-50 at 224x224, ViT-B/16,
            # bert-base at sequence 128, GPT-2 (124M) at sequence 512.
            _real("resnet", (16,), 64, 32, image_size=224),
            Grid(
                "resnet",
                (16,),
                64,
                32,
                ("prefix", "middle"),
                frozen_modes=("eval",),
                extra=(("image_size", 224),),
            ),
            _real("vit", (12,), 768, 32, image_size=224, patch_size=16),
            _real("bert", (12,), 768, 32, seq_len=128, vocab_size=30522),
            _real("gpt2", (12,), 768, 8, seq_len=512, vocab_size=50257),
            Grid("factory", (8,), 64, 32, extra=(("image_size", 64), ("seq_len", 256))),
            # Data parallelism, one rank per GPU (world 1 here; --bench-world N with N GPUs).
            *(
                g.replace(worlds=(1,))
                for g in (*_parallel("mlp", 8, 2048, 256), *_parallel_flags("mlp", 8, 2048, 256))
            ),
        ),
        Budget(
            warmup_rounds=5,
            target_time_s=1.0,
            min_rounds=10,
            max_rounds=500,
            ratio_pairs=31,
            phase_reps=20,
        ),
        devices=("cuda",),
    ),
    "pairwise": Profile(
        "pairwise",
        "a pairwise covering array over every axis at tiny sizes, for smoke mode (--bench-smoke): "
        "every value of any axis meets every value of every other axis",
        (),
        Budget(
            warmup_rounds=0,
            target_time_s=0.01,
            min_rounds=1,
            max_rounds=2,
            ratio_pairs=2,
            phase_reps=1,
            smoke=True,
        ),
        make_grids=_pairwise_grids,
    ),
}
