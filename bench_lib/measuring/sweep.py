"""Command-line filters and deterministic case generation from a profile (:mod:`.profiles`).

Each grid of a profile is a cross product over its axes for one model family, with a
per-case :class:`~bench_lib.measuring.budget.Budget`. Every grid point with a frozen
pattern also gets its baseline (pattern ``none``, mechanism ``none``), once per (model, depth,
width, batch, optimizer, device, dtype, threads, parallel set-up, world size).

Filters from the command line *replace* an axis's values in every grid (``--bench-depth 32``
sweeps depth 32 even if no profile lists it); ``--bench-model`` picks the grids whose family is
listed. Patterns resolve against each family's number of blocks
(:meth:`~bench_lib.measuring.families.base.Family.num_blocks`, from the sizes alone), pattern
``names`` against the parameter names of the model's skeleton on the meta device.
Combinations that cannot exist (``middle`` at depth 2, ``no_grad`` on ``*.bias``, a family whose
optional dependency is missing, a BatchNorm model under data parallelism) are returned as skips
with the reason, never silently dropped.

The parallel axis (``--bench-parallel``, ``--bench-world``) is a grid field like the others: a
profile gives it grids of their own (it never crosses it with another grid's axes), and the
options replace it in every grid. A world size belongs to the parallel set-ups only: set-up
``none`` always runs one process.

``--bench-model-factory`` puts the user's factory into every ``factory`` grid: quick's runs the
example factory (``benchmarks/example_factory.py``) by default, the other profiles' factory
grids are templates that run only with a factory given.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .. import axes as axis_table
from ..axes import AXES, Axis, AxisError
from . import effects
from .families import get_family
from .mechanisms import get_mechanism
from .mechanisms.base import NameMatch, match_names, uncovered_reason
from .patterns import pattern_blocks
from .profiles import (
    BLOCK_POSITIONS,
    EXAMPLE_FACTORY,
    PROFILES,
    Grid,
    Profile,
    resolve_positions,
)
from .shards import ShardPlan, plan_shards, shard
from .spec import Case, CaseError, check_choice
from .training import skeleton

__all__ = [
    "BATCHNORM_REASON",
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
    "parallel_skip_reason",
    "parse_ints",
    "parse_list",
    "plan_shards",
    "resolve_positions",
    "shard",
    "skip_reason",
]


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


#: Filters that are not one axis's values: explicit block indices (pattern 'explicit').
_FILTER_EXTRAS = ("blocks",)


class Filters:
    """Axis overrides from the command line, keyed by each axis's grid field name (``models``,
    ``depths``, ``amps``, ...; see :attr:`bench_lib.axes.Axis.grid`), plus ``blocks`` (the
    indices of pattern 'explicit'), ``freeze`` (the globs of pattern 'names', which add that
    pattern) and ``factory`` (the factory of every 'factory' grid, and the only model unless
    ``models`` is given). A missing key keeps the profile's values.

    Raises :class:`CaseError` for a value outside an axis's choices.
    """

    def __init__(self, **values: Any) -> None:
        by_field = _filter_axes()
        for key, given in values.items():
            if key in _FILTER_EXTRAS or given is None:
                continue
            axis = by_field.get(key)
            if axis is None:
                choices = ", ".join([*by_field, *_FILTER_EXTRAS])
                raise CaseError(f"unknown filter {key!r}; known: {choices}")
            items = (given,) if axis.kind in ("text",) else tuple(given)
            for v in items:
                try:
                    axis.check(v)
                except AxisError as e:
                    raise CaseError(str(e)) from None
        self._values: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
        patterns = self._values.get("patterns") or ()
        if "explicit" in patterns and not self._values.get("blocks"):
            raise CaseError("pattern 'explicit' needs --bench-blocks (e.g. --bench-blocks 1,3)")
        if "names" in patterns and not self._values.get("freeze"):
            raise CaseError("pattern 'names' needs --bench-freeze (e.g. --bench-freeze 'head.*')")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in _filter_axes() and name not in _FILTER_EXTRAS:
            raise AttributeError(name)
        return self._values.get(name)

    def get(self, axis: Axis) -> tuple[Any, ...] | None:
        """The command line's values of ``axis`` (``None``: the profile's)."""
        return self._values.get(axis.grid) if axis.grid else None

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def replace(self, **values: Any) -> Filters:
        return Filters(**{**self._values, **values})

    def __repr__(self) -> str:
        return f"Filters({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"


def _filter_axes() -> dict[str, Axis]:
    """The axes the command line can filter, by their grid field name (``freeze`` and
    ``factory`` by their own)."""
    out = {a.grid: a for a in AXES.values() if a.grid}
    out["freeze"] = AXES["freeze"]
    out["factory"] = AXES["factory"]
    return out


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


def skip_reason(case: Case) -> str | None:
    """Why ``case`` cannot run: the first declared skip rule of the axis table that applies,
    then the reasons that need torch (peft missing, no layer to adapt)."""
    return axis_table.skip_reason(case.values()) or effects.skip_reason(case)


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


#: Why a model with BatchNorm is a skip under data parallelism.
BATCHNORM_REASON = (
    "BatchNorm normalises over each rank's own batch under data parallelism, so no "
    "single-process reference on the global batch matches it; SyncBatchNorm would, but torch "
    "runs it on GPUs only, and this suite does not convert models"
)


#: Parallel set-ups that cannot run a model with tied parameters, and why.
TIED_REFUSED = {
    "fsdp": "FSDP2's fully_shard cannot put a parameter shared across blocks in two FSDP groups",
    "fsdp1_orig_params": "FSDP1 with use_orig_params=True gives the second name of a tied "
    "parameter a flat view of its shard (torch 2.13: the forward fails with a size mismatch)",
}


def parallel_skip_reason(base: Case) -> str | None:
    """Why ``base`` (a baseline with a parallel set-up) cannot run, or ``None``: the model has
    BatchNorm (:data:`BATCHNORM_REASON`), it ties parameters under a set-up of
    :data:`TIED_REFUSED`, or torch has no ``torch.distributed``."""
    import torch.distributed

    if not torch.distributed.is_available():
        return f"parallel={base.parallel!r} needs torch.distributed, which this torch lacks"
    if get_family(base.model).unavailable() is not None:
        return None  # skipped for that reason anyway
    model = skeleton(base).model
    batchnorm = nn.modules.batchnorm._BatchNorm
    norms = sorted({type(m).__name__ for m in model.modules() if isinstance(m, batchnorm)})
    if norms:
        return f"{BATCHNORM_REASON} ({', '.join(norms)} in {base.model})"
    if base.parallel in TIED_REFUSED:
        seen: dict[int, str] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            if id(p) in seen:
                return f"{base.model} ties {seen[id(p)]} and {name}: {TIED_REFUSED[base.parallel]}"
            seen[id(p)] = name
    return None


def _axis_values(axis: Axis, grid: Grid, profile: Profile, f: Filters) -> tuple[Any, ...]:
    """The values of a swept axis: the command line's, else the grid's or the profile's (by the
    axis's scope), else the axis's own default values."""
    given = f.get(axis)
    if given is not None:
        return tuple(given)
    if axis.grid in grid.axes:
        return grid.axes[axis.grid]
    if axis.scope == "profile":
        return tuple(getattr(profile, axis.grid))
    if axis.scope == "run":
        return axis.grid_values
    return grid.values(axis)


def _settings(grid: Grid, profile: Profile, f: Filters) -> list[dict[str, Any]]:
    """Every combination of the swept axes (optimizer, device, dtype, threads, seed, the step
    axes, the adapter, the parallel set-up, and any declared outside), in table order. An axis
    that depends on another (``lora_rank`` on ``adapter``, ``world`` on ``parallel``) takes its
    values only beside the other's non-default values, and its default beside the default."""
    combos: list[dict[str, Any]] = [{}]
    for axis in axis_table.grid_axes():
        values = _axis_values(axis, grid, profile, f)
        parent = AXES[axis.depends_on] if axis.depends_on else None
        combos = [
            {**c, axis.name: v}
            for c in combos
            for v in (
                (axis.default,)
                if parent is not None and c[parent.name] == parent.default
                else values
            )
        ]
    unique = {tuple(sorted(c.items(), key=lambda kv: kv[0])): c for c in combos}
    return list(unique.values())


def _grid_cases(grid: Grid, profile: Profile, f: Filters) -> _GridPart:
    patterns = _patterns(grid, f)
    asked = f.mechanisms or grid.mechanisms
    mechanisms = tuple(m for m in asked if m != "none")
    modes = f.frozen_modes or grid.frozen_modes
    folds = [("none", m) for m in mechanisms if "none" in patterns]
    folds += [(p, "none") for p in patterns if p != "none" and "none" in asked]
    part = _GridPart([], [], set())
    factory = (f.factory or grid.factory) if grid.model == "factory" else ""
    sizes = itertools.product(
        f.depths or grid.depths, f.widths or (grid.width,), f.batch_sizes or (grid.batch_size,)
    )
    for (depth, width, batch), setting in itertools.product(sizes, _settings(grid, profile, f)):
        first = len(part.cases)
        base = Case(
            grid.model,
            depth,
            width,
            batch,
            scenario=grid.scenario,
            extra=grid.extra,
            factory=factory,
            **setting,
        )
        n_blocks = base.n_blocks
        part.folded.update((base.baseline(), p, m) for p, m in folds)
        if "none" in patterns:
            # The baseline, and with an adapter also the adapted model with nothing frozen.
            part.cases += dict.fromkeys((base.baseline(), base))
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
        why = parallel_skip_reason(base) if base.is_parallel else None
        if why is not None:  # every case of this baseline, as a visible skip
            part.skips.extend(Skip(c.id, why) for c in part.cases[first:])
            del part.cases[first:]
    for case in list(part.cases):
        if (why := skip_reason(case)) is not None:
            part.cases.remove(case)
            part.skips.append(Skip(case.id, why))
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
    for grid in profile.all_grids():
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
    own = any(g.model == "factory" and g.factory for g in profile.all_grids())
    if models is not None and "factory" in models and not (filters.factory or own):
        raise CaseError(
            f"model 'factory' needs --bench-model-factory MODULE:FUNCTION (profile "
            f"{profile.name!r} has no factory of its own)"
        )
    return Sweep(list(cases), list(skips), folded)
