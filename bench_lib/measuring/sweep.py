"""Named profiles (as data), command-line filters, and deterministic case generation.

A profile is a list of grids; each grid is a cross product over its axes for one model family
plus a per-case :class:`~bench_lib.measuring.budget.Budget`. Every grid point with a frozen
pattern also gets its baseline (pattern ``none``, mechanism ``none``), once per (model, depth,
width, batch, optimizer, device, dtype, threads).

Filters from the command line *replace* an axis's values in every grid (``--bench-depth 32``
sweeps depth 32 even if no profile lists it); ``--bench-model`` picks the grids whose family is
listed. Patterns resolve against each family's number of blocks
(:meth:`~bench_lib.measuring.families.base.Family.num_blocks`, from the sizes alone), pattern
``names`` against the parameter names of the model's skeleton on the meta device.
Combinations that cannot exist (``middle`` at depth 2, ``no_grad`` on ``*.bias``, a family whose
optional dependency is missing) are returned as skips with the reason, never silently dropped.

``--bench-model-factory`` puts the user's factory into every ``factory`` grid: quick's runs the
example factory (``benchmarks/example_factory.py``) by default, the other profiles' factory
grids are templates that run only with a factory given.
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
    PATTERN_CHOICES,
    PATTERNS,
    TRAP_MECHANISMS,
)
from .budget import Budget
from .families import get_family
from .mechanisms import get_mechanism
from .mechanisms.base import NameMatch, match_names, uncovered_reason
from .patterns import pattern_blocks
from .spec import Case, CaseError, check_choice
from .training import skeleton

__all__ = [
    "BLOCK_POSITIONS",
    "EXAMPLE_FACTORY",
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
    #: The parameter-name globs of pattern 'names' (``--bench-freeze`` replaces them).
    freeze: tuple[str, ...] = ()
    #: Model 'factory': the factory's ``MODULE:FUNCTION`` (``--bench-model-factory`` replaces
    #: it); a factory grid without one is a template that runs only with a factory given.
    factory: str = ""


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


def _real(model: str, depths: tuple[int, ...], width: int, batch: int, **sizes: int) -> Grid:
    """A transformers family at real sizes: every pattern under the main mechanisms."""
    return Grid(model, depths, width, batch, extra=tuple(sizes.items()))


def _cpu_real(
    model: str, depth: int, width: int, batch: int, *, eval_mode: bool = False, **sizes: int
) -> list[Grid]:
    """A transformers family at CPU sizes: the frozen prefix, middle and all-but-head under the
    main mechanisms; with ``eval_mode`` (BatchNorm) also the prefix and middle in eval mode
    under no_grad and requires_grad."""
    extra = tuple(sizes.items())
    patterns = ("none", "prefix", "middle", "all_but_head")
    grids = [Grid(model, (depth,), width, batch, patterns, extra=extra)]
    if eval_mode:
        grids.append(
            Grid(model, (depth,), width, batch, ("prefix", "middle"), ("no_grad", "requires_grad"),
                 frozen_modes=("eval",), extra=extra)
        )  # fmt: skip
    return grids


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
            *_glance("resnet", 2, 8, 2, image_size=32),
            *_glance("vit", 2, 32, 2, image_size=16, patch_size=4),
            *_glance("bert", 2, 32, 2, seq_len=16),
            *_glance("gpt2", 2, 32, 2, seq_len=16),
            *_glance("factory", 2, 8, 2, image_size=16),
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
            *_cpu_real("resnet", 4, 16, 16, eval_mode=True, image_size=32),
            *_cpu_real("bert", 4, 128, 8, seq_len=64),
            Grid("factory", (4,), 16, 8, extra=(("image_size", 32),)),
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
            Grid("factory", (8,), 64, 32, extra=(("image_size", 64), ("seq_len", 256))),
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
    #: ``--bench-freeze`` globs: add pattern 'names' with them.
    freeze: tuple[str, ...] | None = None
    #: ``--bench-model-factory``: the factory of every 'factory' grid (and the only model
    #: unless ``models`` is given).
    factory: str | None = None

    def __post_init__(self) -> None:
        for name, choices in (
            ("models", MODELS),
            ("patterns", PATTERN_CHOICES),
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
        if self.patterns and "names" in self.patterns and not self.freeze:
            raise CaseError("pattern 'names' needs --bench-freeze (e.g. --bench-freeze 'head.*')")


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


def _patterns(grid: Grid, f: Filters) -> tuple[str, ...]:
    """The grid's patterns after the filters: ``--bench-blocks`` and ``--bench-freeze`` make
    them ``none`` plus ``explicit`` / ``names`` unless ``--bench-pattern`` names them; with
    ``--bench-pattern`` too, ``--bench-freeze`` adds ``names``."""
    if f.patterns is None and (f.blocks or f.freeze):
        return ("none",) + (("explicit",) if f.blocks else ()) + (("names",) if f.freeze else ())
    patterns = f.patterns or grid.patterns
    return (*patterns, "names") if f.freeze and "names" not in patterns else patterns


def _skip_id(base: Case, pattern: str) -> str:
    left, _, right = base.id.partition("-none-none-")
    return f"{left}-{pattern}-{right}"


@dataclass
class _GridPart:
    cases: list[Case]
    skips: list[Skip]
    folded: set[tuple[Case, str, str]]
    #: Why the grid's 'names' globs cannot apply to its model (None where they do or it has
    #: none): such points are skips unless no grid of the run can take the globs.
    names_error: CaseError | None = None
    names_tried: bool = False


def _names_cases(
    base: Case, globs: tuple[str, ...], mechanisms: Sequence[str], modes: Sequence[str],
    part: _GridPart,
) -> None:  # fmt: skip
    """Add the 'names' cases of ``base``: a module-level mechanism whose plan leaves matched
    parameters outside every fully matched module is a skip naming them."""
    part.names_tried = True
    match: NameMatch | None = None
    if get_family(base.model).unavailable() is None:
        try:
            match = match_names(skeleton(base).model, globs)
        except CaseError as e:
            part.names_error = part.names_error or e
            part.skips.append(Skip(_skip_id(base, "names"), str(e)))
            return
    for mech, mode in itertools.product(mechanisms, modes):
        case = dataclasses.replace(
            base, pattern="names", freeze=globs, mechanism=mech, frozen_mode=mode
        )
        if match is not None and match.uncovered and get_mechanism(mech).module_level:
            part.skips.append(Skip(case.id, uncovered_reason(mech, match.uncovered)))
        else:
            part.cases.append(case)


def _grid_cases(grid: Grid, profile: Profile, f: Filters) -> _GridPart:
    patterns = _patterns(grid, f)
    asked = f.mechanisms or grid.mechanisms
    mechanisms = tuple(m for m in asked if m != "none")
    modes = f.frozen_modes or grid.frozen_modes
    folds = [("none", m) for m in mechanisms if "none" in patterns]
    folds += [(p, "none") for p in patterns if p != "none" and "none" in asked]
    part = _GridPart([], [], set())
    factory = (f.factory or grid.factory) if grid.model == "factory" else ""
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
            factory=factory,
        )
        n_blocks = base.n_blocks
        part.folded.update((base, p, m) for p, m in folds)
        if "none" in patterns:
            part.cases.append(base)
        for pattern in patterns:
            if pattern == "none":
                continue
            if pattern == "names":
                globs = f.freeze or grid.freeze
                if not globs:
                    raise CaseError("pattern 'names' needs --bench-freeze (e.g. 'head.*')")
                _names_cases(base, globs, mechanisms, modes, part)
                continue
            try:
                explicit = f.blocks or resolve_positions(grid.blocks, n_blocks)
                blocks = pattern_blocks(pattern, n_blocks, explicit, depth=depth)
            except CaseError as e:
                if pattern == "explicit":
                    # The user's own indices: a usage error, not a skip. Name the depth's
                    # source too, since the two options may be far apart on the command line.
                    source = "--bench-depth" if f.depths else f"profile {profile.name!r}"
                    raise CaseError(f"{e}; the depth {depth} comes from {source}") from None
                part.skips.append(Skip(_skip_id(base, pattern), str(e)))
                continue
            for mech, mode in itertools.product(mechanisms, modes):
                part.cases.append(
                    dataclasses.replace(
                        base,
                        pattern=pattern,
                        frozen_blocks=blocks,
                        mechanism=mech,
                        frozen_mode=mode,
                    )
                )
    reason = get_family(grid.model).unavailable()
    if reason is not None:  # a visible skip per case, never an import error
        part.skips[:0] = [Skip(c.id, reason) for c in part.cases]
        part.cases = []
    return part


def generate(profile: Profile, filters: Filters) -> Sweep:
    """All cases of ``profile`` narrowed by ``filters``, deduplicated, in a stable order.

    Raises :class:`CaseError` for bad input: a factory that cannot be imported, raises or returns
    the wrong thing; ``--bench-freeze`` globs that match nothing (or everything) in every model
    they were tried on; model 'factory' without a factory.
    """
    cases: dict[Case, None] = {}
    skips: dict[Skip, None] = {}
    folded: set[tuple[Case, str, str]] = set()
    models = filters.models or (("factory",) if filters.factory else None)
    if filters.factory and models is not None and "factory" not in models:
        raise CaseError(
            f"--bench-model-factory={filters.factory!r} with --bench-model={','.join(models)!r}: "
            "add 'factory' to --bench-model to run it"
        )
    names_errors: list[CaseError] = []
    names_ok = False
    for grid in profile.grids:
        if models is not None and grid.model not in models:
            continue
        if grid.model == "factory" and not (filters.factory or grid.factory):
            continue  # a template for --bench-model-factory
        part = _grid_cases(grid, profile, filters)
        cases.update(dict.fromkeys(part.cases))
        skips.update(dict.fromkeys(part.skips))
        folded |= part.folded
        if part.names_error is not None:
            names_errors.append(part.names_error)
        elif part.names_tried:
            names_ok = True
    if names_errors and not names_ok:
        raise names_errors[0]
    own = any(g.model == "factory" and g.factory for g in profile.grids)
    if models is not None and "factory" in models and not (filters.factory or own):
        raise CaseError(
            f"model 'factory' needs --bench-model-factory MODULE:FUNCTION (profile "
            f"{profile.name!r} has no factory of its own)"
        )
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
