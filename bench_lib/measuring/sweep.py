"""Named profiles (as data), command-line filters, and deterministic case generation.

A profile is a list of grids; each grid is a cross product over its axes for one model family
plus a per-case :class:`~bench_lib.measuring.budget.Budget`. Every grid point with a frozen
pattern also gets its baseline (pattern ``none``, mechanism ``none``), once per (model, depth,
width, batch, optimizer, device, dtype, threads).

Filters from the command line *replace* an axis's values in every grid (``--bench-depth 32``
sweeps depth 32 even if no profile lists it); ``--bench-model`` picks the grids whose family is
listed. Combinations that cannot exist (``middle`` at depth 2) are returned as skips with the
reason, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..vocab import (
    DEVICES,
    DTYPES,
    FROZEN_MODES,
    MECHANISMS,
    MODELS,
    OPTIMIZERS,
    PATTERNS,
    TRAP_MECHANISMS,
)
from .budget import Budget
from .patterns import pattern_blocks
from .spec import Case, CaseError, check_choice

__all__ = [
    "BLOCK_POSITIONS",
    "PROFILES",
    "Filters",
    "Grid",
    "Profile",
    "ShardPlan",
    "Skip",
    "Sweep",
    "generate",
    "parse_ints",
    "parse_list",
    "plan_shards",
    "resolve_positions",
    "shard",
]

ALL_PATTERNS = tuple(p for p in PATTERNS if p != "explicit")
#: Every mechanism but the baseline's.
FREEZE_MECHANISMS = tuple(m for m in MECHANISMS if m != "none")
#: The mechanisms people use on purpose; grids sweep these unless they name others.
MAIN_MECHANISMS = tuple(m for m in FREEZE_MECHANISMS if m not in TRAP_MECHANISMS)


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


@dataclass(frozen=True)
class Grid:
    """A cross product over one model family. ``extra`` holds family sizes (seq_len, image_size)."""

    model: str
    depths: tuple[int, ...]
    width: int
    batch_size: int
    patterns: tuple[str, ...] = ALL_PATTERNS
    mechanisms: tuple[str, ...] = MAIN_MECHANISMS
    optimizers: tuple[str, ...] = ("adamw",)
    dtypes: tuple[str, ...] = ("float32",)
    frozen_modes: tuple[str, ...] = ("train",)
    extra: tuple[tuple[str, int], ...] = ()
    scenario: str = "sweep"
    #: The blocks of pattern 'explicit', as positions resolved at each depth after overrides
    #: (names of :data:`BLOCK_POSITIONS`), so that ``--bench-depth 4`` still fits them.
    blocks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    grids: tuple[Grid, ...]
    budget: Budget
    devices: tuple[str, ...] = ("cpu",)
    threads: tuple[int, ...] = (1,)


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


def _family(
    model: str, depths: tuple[int, ...], width: int, batch: int, **sizes: int
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
        Grid(
            model, depths, width, batch, ("prefix", "middle"), frozen_modes=("eval",), extra=extra
        ),
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
        ),
        Budget(
            warmup_rounds=1,
            target_time_s=0.03,
            min_rounds=3,
            max_rounds=20,
            ratio_pairs=6,
            phase_reps=3,
        ),
    ),
    "default": Profile(
        "default",
        "what a person runs on a laptop CPU: several depths, realistic widths, every pattern and "
        "mechanism; under 15 minutes on 2 cores",
        (
            *_family("mlp", (4, 8, 16), 256, 64),
            *_family("transformer", (4, 8), 64, 8, seq_len=32),
            *_family("cnn", (4, 8), 16, 16, image_size=16),
            _seed(64, 8, depth=8, seq=32),
        ),
        Budget(
            warmup_rounds=2,
            target_time_s=0.3,
            min_rounds=5,
            max_rounds=60,
            ratio_pairs=16,
            phase_reps=5,
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
}


def parse_list(option: str, text: str, choices: Sequence[str] | None = None) -> tuple[str, ...]:
    """Split ``"a,b"`` into names, checking each against ``choices``; raises :class:`CaseError`."""
    items = tuple(s.strip() for s in text.split(","))
    if not text.strip() or any(not s for s in items):
        raise CaseError(f"{option}={text!r} is empty or has an empty item; give a comma list")
    if choices is not None:
        for s in items:
            check_choice(option, s, choices)
    return tuple(dict.fromkeys(items))


def parse_ints(option: str, text: str, minimum: int = 1) -> tuple[int, ...]:
    out = []
    for s in parse_list(option, text):
        try:
            v = int(s)
        except ValueError:
            raise CaseError(f"{option}={text!r}: {s!r} is not an integer") from None
        if v < minimum:
            raise CaseError(f"{option}={text!r}: {v} must be >= {minimum}")
        out.append(v)
    return tuple(out)


@dataclass(frozen=True)
class Filters:
    """Axis overrides from the command line; ``None`` keeps the profile's values."""

    models: tuple[str, ...] | None = None
    depths: tuple[int, ...] | None = None
    widths: tuple[int, ...] | None = None
    batch_sizes: tuple[int, ...] | None = None
    patterns: tuple[str, ...] | None = None
    mechanisms: tuple[str, ...] | None = None
    optimizers: tuple[str, ...] | None = None
    devices: tuple[str, ...] | None = None
    dtypes: tuple[str, ...] | None = None
    threads: tuple[int, ...] | None = None
    frozen_modes: tuple[str, ...] | None = None
    blocks: tuple[int, ...] | None = None
    seeds: tuple[int, ...] = field(default=(0,))

    def __post_init__(self) -> None:
        for name, choices in (
            ("models", MODELS),
            ("patterns", PATTERNS),
            ("mechanisms", MECHANISMS),
            ("optimizers", OPTIMIZERS),
            ("devices", DEVICES),
            ("dtypes", DTYPES),
            ("frozen_modes", FROZEN_MODES),
        ):
            for v in getattr(self, name) or ():
                check_choice(name, v, choices)
        if self.patterns and "explicit" in self.patterns and not self.blocks:
            raise CaseError("pattern 'explicit' needs --bench-blocks (e.g. --bench-blocks 1,3)")


@dataclass(frozen=True)
class Skip:
    """A grid point that cannot be a case, with the reason (shown by pytest and the report)."""

    id: str
    reason: str


@dataclass(frozen=True)
class Sweep:
    """Generated cases, impossible points with reasons, and the (baseline, pattern, mechanism)
    combinations folded into their baseline (``none`` with a freeze mechanism, or a frozen
    pattern with mechanism ``none``: both are the baseline, measured once per group)."""

    cases: list[Case]
    skips: list[Skip]
    folded: set[tuple[Case, str, str]]


def _grid_cases(grid: Grid, profile: Profile, f: Filters) -> Sweep:
    patterns = f.patterns or grid.patterns
    if f.blocks and f.patterns is None:
        patterns = ("none", "explicit")
    asked = f.mechanisms or grid.mechanisms
    mechanisms = tuple(m for m in asked if m != "none")
    folds = [("none", m) for m in mechanisms if "none" in patterns]
    folds += [(p, "none") for p in patterns if p != "none" and "none" in asked]
    cases: list[Case] = []
    skips: list[Skip] = []
    folded: set[tuple[Case, str, str]] = set()
    for depth, width, batch, opt, device, dtype, threads, seed in itertools.product(
        f.depths or grid.depths,
        f.widths or (grid.width,),
        f.batch_sizes or (grid.batch_size,),
        f.optimizers or grid.optimizers,
        f.devices or profile.devices,
        f.dtypes or grid.dtypes,
        f.threads or profile.threads,
        f.seeds,
    ):
        base = Case(
            grid.model,
            depth,
            width,
            batch,
            optimizer=opt,
            device=device,
            dtype=dtype,
            threads=threads,
            seed=seed,
            scenario=grid.scenario,
            extra=grid.extra,
        )
        folded.update((base, p, m) for p, m in folds)
        if "none" in patterns:
            cases.append(base)
        for pattern in patterns:
            if pattern == "none":
                continue
            try:
                explicit = f.blocks or resolve_positions(grid.blocks, depth)
                blocks = pattern_blocks(pattern, depth, explicit)
            except CaseError as e:
                if pattern == "explicit":
                    # The user's own indices: a usage error, not a skip. Name the depth's
                    # source too, since the two options may be far apart on the command line.
                    source = "--bench-depth" if f.depths else f"profile {profile.name!r}"
                    raise CaseError(f"{e}; the depth {depth} comes from {source}") from None
                left, _, right = base.id.partition("-none-none-")
                skips.append(Skip(f"{left}-{pattern}-{right}", str(e)))
                continue
            for mech, mode in itertools.product(mechanisms, f.frozen_modes or grid.frozen_modes):
                cases.append(
                    dataclasses.replace(
                        base,
                        pattern=pattern,
                        frozen_blocks=blocks,
                        mechanism=mech,
                        frozen_mode=mode,
                    )
                )
    return Sweep(cases, skips, folded)


def generate(profile: Profile, filters: Filters) -> Sweep:
    """All cases of ``profile`` narrowed by ``filters``, deduplicated, in a stable order."""
    cases: dict[Case, None] = {}
    skips: dict[Skip, None] = {}
    folded: set[tuple[Case, str, str]] = set()
    for grid in profile.grids:
        if filters.models is not None and grid.model not in filters.models:
            continue
        part = _grid_cases(grid, profile, filters)
        cases.update(dict.fromkeys(part.cases))
        skips.update(dict.fromkeys(part.skips))
        folded |= part.folded
    return Sweep(list(cases), list(skips), folded)


@dataclass(frozen=True)
class ShardPlan:
    """Cases dealt to ``count`` shards by estimated seconds: ``assignment[case]`` is its shard,
    ``loads[i]`` shard i's estimated seconds, ``split`` the baselines whose groups were split."""

    assignment: dict[Case, int]
    loads: tuple[float, ...]
    split: tuple[Case, ...]

    @property
    def imbalance(self) -> float:
        """Longest shard over the mean shard, minus 1 (0.0 is a perfect split)."""
        mean = sum(self.loads) / len(self.loads)
        return max(self.loads) / mean - 1 if mean > 0 else 0.0


def plan_shards(
    items: Sequence[Case], count: int, seconds: Mapping[Case, float] | None = None
) -> ShardPlan:
    """Deal ``items`` to ``count`` shards so that their estimated seconds are about equal.

    A baseline group (the baseline and its cases) stays whole, so that each shard's report has
    its baselines, unless the group alone is longer than a shard's share: then its cases are
    dealt one by one (each case still times its pairs against its own baseline twin; the merged
    report of all shards finds the baseline's row in whichever file holds it). Units go longest
    first to the least loaded shard. Without ``seconds`` every case counts 1. Deterministic:
    every shard computes the same plan from the same cases.
    """
    if count < 1:
        raise CaseError(f"shard count {count} must be >= 1")
    cost = {c: (seconds[c] if seconds is not None else 1.0) for c in items}
    groups: dict[Case, list[Case]] = {}
    for c in items:
        groups.setdefault(c.baseline(), []).append(c)
    share = sum(cost.values()) / count
    units: list[list[Case]] = []
    split: list[Case] = []
    for base, members in groups.items():
        if count > 1 and len(members) > 1 and sum(cost[c] for c in members) > share:
            units += [[c] for c in members]
            split.append(base)
        else:
            units.append(members)
    loads = [0.0] * count
    assignment: dict[Case, int] = {}
    for k in sorted(range(len(units)), key=lambda k: -sum(cost[c] for c in units[k])):
        target = min(range(count), key=lambda i: (loads[i], i))
        for c in units[k]:
            assignment[c] = target
            loads[target] += cost[c]
    return ShardPlan(assignment, tuple(loads), tuple(split))


def shard(
    items: Sequence[Case], index: int, count: int, seconds: Mapping[Case, float] | None = None
) -> list[Case]:
    """The cases of shard ``index`` of ``count`` (0-based), in sweep order, dealt by estimated
    seconds (see :func:`plan_shards`)."""
    if count < 1 or not 0 <= index < count:
        raise CaseError(f"shard {index}/{count}: need 0 <= index < count")
    plan = plan_shards(items, count, seconds)
    return [c for c in items if plan.assignment[c] == index]
