"""MODEL for ``advise``: what it names, how it is built, its blocks, its inputs and its loss.

MODEL is one of three things (:func:`resolve_model`):

* a directory with a transformers ``config.json``, loaded offline with the class its
  ``architectures`` names (a directory with only ``config.json`` builds random weights);
* a hub id found in the local Hugging Face cache (never downloaded);
* a factory, ``MODULE:FUNCTION`` or ``path/file.py:FUNCTION``, as ``--bench-model-factory``
  takes it.

Every dropout is set to 0 (config attributes matching ``*dropout*``, ``*drop_path*``,
``*layerdrop*`` before building, and every ``nn.Dropout*`` module after), since the verdicts
compare gradients between runs.

Blocks are found, not declared (:func:`discover_blocks`): the main stack is the
``nn.ModuleList`` of same-class modules covering the most parameters (the shallowest on a tie,
so a mixture-of-experts layer's experts never win); stacks of the same size class (at least
half its parameters, not nested in it) are chained in forward order (T5's encoder and decoder).
Block 0 is what runs before the stack (embeddings, stem), found by the order of forward calls
in a small probe forward; what runs after it (final norm, head) trains.

The suite's processes rebuild the model from a generated factory file (:func:`write_factory`)
that calls :func:`build_spec` with the settings found here, so discovery runs once.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import importlib.util
import inspect
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import AdviseError, input_error, usage_error

__all__ = [
    "DROPOUT_GLOBS",
    "WEIGHT_FILES",
    "Discovery",
    "Settings",
    "Source",
    "build_spec",
    "discover_blocks",
    "dropout_off",
    "dropout_off_config",
    "estimate_footprint",
    "probe",
    "resolve_model",
    "write_factory",
]

#: Config attributes set to 0 before building (fnmatch, lower case).
DROPOUT_GLOBS = ("*dropout*", "*drop_path*", "*layerdrop*")
#: Files that hold a directory's weights; without one the model is built with random weights.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: The factory form, named by every error about inputs that cannot be built.
FACTORY_HINT = (
    "give a factory instead: advise path/to/file.py:FUNCTION (see "
    "bench_lib/measuring/families/factory.py)"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Source:
    """What MODEL names: ``kind`` is ``directory``, ``hub`` or ``factory``; ``path`` is the
    model directory (a hub id's snapshot), or the factory spec with an absolute file path."""

    kind: str
    text: str
    path: str

    @property
    def weights(self) -> bool:
        """A directory or snapshot with weight files (else random weights)."""
        return self.kind != "factory" and any(
            os.path.exists(os.path.join(self.path, f)) for f in WEIGHT_FILES
        )


def _factory_target(text: str) -> tuple[str, str] | None:
    target, sep, name = text.rpartition(":")
    if not sep or not target or not name.isidentifier():
        return None
    return target, name


def resolve_model(text: str) -> Source:
    """Resolve MODEL; raises an input :class:`~.errors.AdviseError` (exit 3) naming it: a path
    that is not a model directory, a hub id not in the local cache (with how to fetch it), a
    factory file that does not exist."""
    if (parts := _factory_target(text)) is not None:
        target, name = parts
        if target.endswith(".py") or "/" in target or os.sep in target:
            path = Path(target)
            if not path.is_file():
                raise input_error(f"{text}: no factory file {str(path.resolve())!r}")
            return Source("factory", text, f"{path.resolve()}:{name}")
        return Source("factory", text, text)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise input_error(
                f"{text}: not a model directory (no config.json); give a directory saved with "
                "save_pretrained, a cached hub id, or MODULE:FUNCTION"
            )
        return Source("directory", text, str(path.resolve()))
    if path.exists() or not _HUB_ID.match(text) or text.startswith("."):
        raise input_error(
            f"{text}: not a model (give a directory with config.json, a cached hub id, or "
            "MODULE:FUNCTION / file.py:FUNCTION)"
        )
    return Source("hub", text, _cached_snapshot(text))


def _cached_snapshot(repo_id: str) -> str:
    fetch = f"run `huggingface-cli download {repo_id}` on a machine with access"
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise input_error(f"{repo_id}: huggingface_hub is not installed; {fetch}") from None
    try:
        snapshot = snapshot_download(repo_id, local_files_only=True)
    except Exception:
        raise input_error(
            f"{repo_id}: not a directory, and not in the local Hugging Face cache; {fetch}"
        ) from None
    if not os.path.isfile(os.path.join(snapshot, "config.json")):
        raise input_error(f"{repo_id}: the cached snapshot has no config.json; {fetch}")
    return str(snapshot)


# ---------------------------------------------------------------------------- dropout


def dropout_off_config(config: Any) -> list[str]:
    """Set every numeric config attribute matching :data:`DROPOUT_GLOBS` to 0 (sub-configs
    too: ``text_config``, ``vision_config``); returns the names set that were not 0."""
    changed: list[str] = []
    seen: set[int] = set()

    def visit(cfg: Any, prefix: str) -> None:
        if id(cfg) in seen:
            return
        seen.add(id(cfg))
        for key, value in list(vars(cfg).items()):
            if key.startswith("_"):
                continue
            if hasattr(value, "to_dict") and hasattr(value, "model_type"):
                visit(value, f"{prefix}{key}.")
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if any(fnmatch.fnmatchcase(key.lower(), g) for g in DROPOUT_GLOBS):
                if value != 0:
                    changed.append(f"{prefix}{key}")
                setattr(cfg, key, 0.0)

    visit(config, "")
    return changed


def dropout_off(model: nn.Module) -> int:
    """Set ``p`` of every ``nn.Dropout*`` module (and ``drop_prob`` of drop-path modules) to 0;
    returns how many had a non-zero rate."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            count += module.p != 0
            module.p = 0.0
        elif isinstance(getattr(module, "drop_prob", None), float):
            count += getattr(module, "drop_prob") != 0  # noqa: B009 (a plain attribute)
            setattr(module, "drop_prob", 0.0)  # noqa: B010
    return count


# ---------------------------------------------------------------------------- building


def _transformers() -> Any:
    if importlib.util.find_spec("transformers") is None:
        raise input_error(
            'transformers is not installed (the models extra): pip install -e ".[models]"'
        )
    transformers = importlib.import_module("transformers")
    # Loading bars and config warnings would break the screen and the progress line.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def load_config(path: str) -> Any:
    """The directory's config with dropout off; an input error when it cannot be read."""
    transformers = _transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as e:
        raise input_error(f"{path}: cannot read config.json: {_one_line(e)}") from None
    dropout_off_config(config)
    return config


def _model_class(config: Any) -> Any:
    transformers = _transformers()
    for name in getattr(config, "architectures", None) or ():
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    return transformers.AutoModel


def _build_hf(path: str, weights: bool) -> nn.Module:
    """The model of directory ``path``; on the meta device (the default device is ``meta``)
    only its skeleton, without reading weights."""
    config = load_config(path)
    cls = _model_class(config)
    meta = torch.get_default_device().type == "meta"
    if weights and not meta:
        model = cls.from_pretrained(path, config=config, local_files_only=True)
    elif hasattr(cls, "from_config") and cls.__name__.startswith("Auto"):
        model = cls.from_config(config)
    else:
        model = cls._from_config(config) if hasattr(cls, "_from_config") else cls(config)
    dropout_off(model)
    assert isinstance(model, nn.Module)
    return model


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


# ---------------------------------------------------------------------------- inputs

#: Heads by class-name ending, and the labels each takes.
HEADS = (
    ("ForSequenceClassification", "sequence_classification"),
    ("ForQuestionAnswering", "question_answering"),
    ("ForTokenClassification", "token_classification"),
    ("ForImageClassification", "image_classification"),
    ("ForCausalLM", "causal_lm"),
    ("LMHeadModel", "causal_lm"),
    ("ForMaskedLM", "masked_lm"),
    ("ForConditionalGeneration", "seq2seq_lm"),
)


def head_of(model: nn.Module) -> str:
    """The head kind of a transformers model by its class name; ``base`` for a model without a
    head (its class ends in ``Model``). An input error pointing to the factory form otherwise."""
    name = type(model).__name__
    for ending, kind in HEADS:
        if name.endswith(ending):
            return kind
    if name.endswith("Model"):
        return "base"
    raise input_error(f"{name}: advise cannot build labels for this head; {FACTORY_HINT}")


@dataclass(frozen=True)
class Batcher:
    """A seeded batch maker for a transformers model, holding no model: ``modality`` is
    ``text`` or ``vision``; ``head`` from :func:`head_of`."""

    modality: str
    head: str
    batch_size: int
    seq_len: int
    image_size: int
    vocab_size: int
    num_labels: int
    channels: int
    mask: bool
    float_labels: bool

    def __call__(self, gen: torch.Generator) -> tuple[dict[str, Tensor], Tensor]:
        b, s = self.batch_size, self.seq_len
        inputs: dict[str, Tensor] = {}
        if self.modality == "text":
            ids = torch.randint(0, self.vocab_size, (b, s), generator=gen)
            inputs["input_ids"] = ids
            if self.mask:
                inputs["attention_mask"] = torch.ones_like(ids)
        else:
            side = self.image_size
            inputs["pixel_values"] = torch.randn((b, self.channels, side, side), generator=gen)
        target: Tensor
        if self.head in ("causal_lm", "masked_lm", "seq2seq_lm"):
            target = inputs["input_ids"].clone()
            inputs["labels"] = target
        elif self.head in ("sequence_classification", "image_classification"):
            if self.float_labels:
                shape = (b,) if self.num_labels == 1 else (b, self.num_labels)
                target = torch.rand(shape, generator=gen)
            else:
                target = torch.randint(0, self.num_labels, (b,), generator=gen)
            inputs["labels"] = target
        elif self.head == "token_classification":
            target = torch.randint(0, self.num_labels, (b, s), generator=gen)
            inputs["labels"] = target
        elif self.head == "question_answering":
            target = torch.randint(0, s, (2, b), generator=gen)
            inputs["start_positions"], inputs["end_positions"] = target[0], target[1]
        else:  # base model: the stand-in loss needs no labels
            target = torch.zeros(b)
        return inputs, target


def own_loss(output: Any, targets: Tensor) -> Tensor:
    """The model's own loss (``outputs.loss``, computed from the labels in the inputs)."""
    loss = getattr(output, "loss", None)
    if not isinstance(loss, Tensor):
        raise ValueError(f"{type(output).__name__} has no loss: its labels were not used")
    return loss


def stand_in_loss(output: Any, targets: Tensor) -> Tensor:
    """A base model's stand-in loss: the mean square of its last hidden state."""
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        hidden = output[0]
    assert isinstance(hidden, Tensor)
    return hidden.float().pow(2).mean()


def _hidden_size(config: Any) -> int:
    for key in ("hidden_size", "n_embd", "d_model", "dim", "embed_dim"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    sizes = getattr(config, "hidden_sizes", None)
    if isinstance(sizes, Sequence) and sizes:
        return int(sizes[-1])
    return 768


def batcher_for(
    model: nn.Module, config: Any, batch_size: int, seq_len: int, image_size: int | None
) -> Batcher:
    """The batch maker of a transformers model from its config and forward's arguments; an
    error for a model whose inputs cannot be built (pointing to the factory form), a ``--seq``
    beyond its positions (usage)."""
    head = head_of(model)
    params = inspect.signature(model.forward).parameters
    if "input_ids" in params:
        modality = "text"
        vocab = getattr(config, "vocab_size", None)
        if not isinstance(vocab, int) or vocab < 1:
            raise input_error(
                f"{type(model).__name__}: its config has no vocab_size; {FACTORY_HINT}"
            )
        limit = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )
        if isinstance(limit, int) and seq_len > limit:
            raise usage_error(
                f"--seq={seq_len} is longer than {type(model).__name__}'s {limit} positions"
            )
    elif "pixel_values" in params:
        modality = "vision"
        vocab = 0
    else:
        raise input_error(
            f"{type(model).__name__}: forward takes neither input_ids nor pixel_values; "
            f"{FACTORY_HINT}"
        )
    num_labels = int(getattr(config, "num_labels", 2) or 2)
    problem = getattr(config, "problem_type", None)
    side = image_size or getattr(config, "image_size", None) or 224
    if isinstance(side, Sequence):
        side = int(side[0])
    return Batcher(
        modality=modality,
        head=head,
        batch_size=batch_size,
        seq_len=seq_len,
        image_size=int(side),
        vocab_size=int(vocab or 0),
        num_labels=num_labels,
        channels=int(getattr(config, "num_channels", 3) or 3),
        mask="attention_mask" in params and modality == "text",
        float_labels=num_labels == 1 or problem in ("regression", "multi_label_classification"),
    )


# ---------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Discovery:
    """The blocks found: ``blocks`` in forward order (each a list of submodule names),
    ``stacks`` the stack paths chained (one unless several of a size class), ``how`` one line
    saying how they were found, ``params`` each block's parameter count."""

    blocks: list[list[str]]
    stacks: list[str]
    how: str
    params: list[int]
    input_block: bool


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


_Stack = tuple[str, int, int, Any]


def _stacks(model: nn.Module) -> list[_Stack]:
    """Candidate stacks: (path, parameters, depth, module) of every ModuleList of same-class
    modules holding parameters; Sequentials of same-class modules where there is none."""
    for kind in (nn.ModuleList, nn.Sequential):
        out: list[_Stack] = []
        for name, module in model.named_modules():
            if not name or type(module) is not kind or len(module) < 1:
                continue
            if len({type(c) for c in module}) != 1 or (kind is nn.Sequential and len(module) < 2):
                continue
            n = _numel(module)
            if n:
                out.append((name, n, name.count("."), module))
        if out:
            return out
    return []


def _nested(a: str, b: str) -> bool:
    return a == b or a.startswith(f"{b}.") or b.startswith(f"{a}.")


@contextlib.contextmanager
def _call_order(model: nn.Module) -> Iterator[dict[int, int]]:
    """Module id -> index of its first call, recorded while the block runs."""
    order: dict[int, int] = {}

    def hook(module: nn.Module, args: Any) -> None:
        order.setdefault(id(module), len(order))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()]
    try:
        yield order
    finally:
        for h in handles:
            h.remove()


def _first_call(order: Mapping[int, int], module: nn.Module) -> int | None:
    calls = [order[id(m)] for m in module.modules() if id(m) in order]
    return min(calls) if calls else None


def discover_blocks(
    model: nn.Module, run: Callable[[nn.Module], Any], block_names: Sequence[str] | None = None
) -> Discovery:
    """The blocks of ``model`` (see the module docstring); ``run(model)`` is the probe forward
    whose call order places block 0. ``block_names`` overrides the discovery: one stack's path
    (its children become the blocks, block 0 found as usual), or several submodule names, each
    a block. Raises a usage error for a name that is no submodule, an input error when no stack
    is found (saying to give ``--block-names``)."""
    with _call_order(model) as order, torch.no_grad():
        was_training = model.training
        model.eval()
        try:
            run(model)
        finally:
            model.train(was_training)
    if block_names:
        modules = []
        for name in block_names:
            try:
                modules.append(model.get_submodule(name))
            except AttributeError:
                raise usage_error(
                    f"--block-names: {name!r} is not a submodule of {type(model).__name__}"
                ) from None
        if len(block_names) > 1 or not isinstance(modules[0], nn.ModuleList | nn.Sequential):
            blocks = [[n] for n in block_names]
            params = [_numel(m) for m in modules]
            return Discovery(
                blocks, [], f"given with --block-names ({len(blocks)} blocks)", params, False
            )
        stacks = [block_names[0]]
        how = f"given with --block-names ({len(modules[0])} x {type(modules[0][0]).__name__})"
    else:
        found = _stacks(model)
        if not found:
            raise input_error(
                f"{type(model).__name__}: no stack of same-class blocks (an nn.ModuleList) "
                "found; give --block-names NAME,NAME,... (submodules in forward order)"
            )
        main = max(found, key=lambda c: (c[1], -c[2]))
        chosen = [main]
        for cand in sorted(found, key=lambda c: (-c[1], c[2])):
            if cand[1] * 2 >= main[1] and not any(_nested(cand[0], c[0]) for c in chosen):
                chosen.append(cand)
        chosen.sort(key=lambda c: _first_call(order, c[3][0]) or 0)
        stacks = [c[0] for c in chosen]
        kinds = ", ".join(f"{c[0]} ({len(c[3])} x {type(c[3][0]).__name__})" for c in chosen)
        total = _numel(model)
        covered = sum(c[1] for c in chosen)
        if len(chosen) == 1:
            share = f"{_short(covered)} of {_short(total)} parameters"
            how = f"the largest ModuleList of same-class modules: {kinds}, {share}"
        else:
            how = (
                f"{len(chosen)} stacks of a size class chained in forward order: {kinds}; "
                "--block-names picks one"
            )
    stack_modules: list[Any] = [model.get_submodule(s) for s in stacks]
    start = min(
        (x for m in stack_modules if (x := _first_call(order, m[0])) is not None), default=None
    )
    # Block 0: the direct children of the stacks' ancestors (not on a stack's path) that hold
    # parameters and are first called before the first stack starts.
    first: list[str] = []
    seen: set[int] = {id(m) for s in stack_modules for m in s.modules()}
    ancestors = {"" if "." not in s else s.rsplit(".", 1)[0] for s in stacks}
    for s in stacks:
        parts = s.split(".")
        ancestors.update(".".join(parts[:i]) for i in range(len(parts)))
    for parent in sorted(ancestors, key=lambda a: (a.count(".") if a else -1, a)):
        module = model.get_submodule(parent) if parent else model
        for child, sub in module.named_children():
            name = f"{parent}.{child}" if parent else child
            if any(_nested(name, s) for s in stacks) or id(sub) in seen or not _numel(sub):
                continue
            call = _first_call(order, sub)
            if call is not None and start is not None and call < start:
                first.append(name)
                seen.update(id(m) for m in sub.modules())
    first.sort(key=lambda n: _first_call(order, model.get_submodule(n)) or 0)
    layers = [
        [f"{s}.{i}"] for s, m in zip(stacks, stack_modules, strict=True) for i in range(len(m))
    ]
    blocks = ([first] if first else []) + layers
    params = [sum(_numel(model.get_submodule(n)) for n in b) for b in blocks]
    if first:
        how += f"; block 0 is what runs before it ({', '.join(first)})"
    return Discovery(blocks, stacks, how, params, bool(first))


def _short(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """What the generated factory file passes to :func:`build_spec`: the source, the input
    sizes and the blocks found, so that every process rebuilds the same case without
    rediscovering."""

    kind: str
    path: str
    batch_size: int
    seq_len: int
    image_size: int | None
    blocks: tuple[tuple[str, ...], ...]
    weights: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "image_size": self.image_size,
            "blocks": [list(b) for b in self.blocks],
            "weights": self.weights,
        }


def _call_user_factory(spec: str, kwargs: Mapping[str, Any]) -> Any:
    from ..measuring.families.factory import load_factory
    from ..measuring.spec import CaseError

    try:
        fn = load_factory(spec)
    except CaseError as e:
        raise input_error(str(e)) from None
    try:
        params = inspect.signature(fn).parameters.values()
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            names = {p.name for p in params}
            kwargs = {k: v for k, v in kwargs.items() if k in names}
    except (TypeError, ValueError):
        pass
    try:
        return fn(**kwargs)
    except Exception as e:
        raise input_error(f"{spec}: the factory raised {_one_line(e)}") from None


def build_spec(settings: Mapping[str, Any], **kwargs: Any) -> Any:
    """The factory result for the suite (model, blocks, make_batch, loss), rebuilt from
    ``settings`` (:meth:`Settings.as_dict`); ``kwargs`` are the suite's factory arguments
    (``batch_size`` is taken from them, the other sizes from ``settings``). A user's factory is
    called with ``kwargs`` and its model gets dropout off."""
    if settings["kind"] == "factory":
        out = _call_user_factory(settings["path"], kwargs)
        model = out["model"] if isinstance(out, Mapping) else getattr(out, "model", None)
        if isinstance(model, nn.Module):
            dropout_off(model)
        return out
    batch = int(kwargs.get("batch_size") or settings["batch_size"])
    model = _build_hf(settings["path"], bool(settings["weights"]))
    config = load_config(settings["path"])
    batcher = batcher_for(model, config, batch, settings["seq_len"], settings["image_size"])
    loss = stand_in_loss if batcher.head == "base" else own_loss
    blocks = [b[0] if len(b) == 1 else list(b) for b in settings["blocks"]]
    return {"model": model, "blocks": blocks, "make_batch": batcher, "loss": loss}


_FACTORY_FILE = '''"""Generated by freeze-bench advise: rebuilds {text} for the suite."""

from bench_lib.advise.loading import build_spec

SETTINGS = {settings!r}


def build(**kwargs):
    return build_spec(SETTINGS, **kwargs)
'''


def factory_source(text: str, settings: Settings) -> str:
    """The text of the generated factory file."""
    return _FACTORY_FILE.format(text=text.replace('"', "'"), settings=settings.as_dict())


def write_factory(path: str, text: str, settings: Settings) -> str:
    """Write the generated factory file atomically; returns its ``path.py:build`` spec."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(factory_source(text, settings))
    os.replace(tmp, path)
    return f"{os.path.abspath(path)}:build"


# ---------------------------------------------------------------------------- probing


@dataclass
class Probe:
    """The model as advise sees it before anything runs: parameters, blocks, inputs, loss."""

    model_name: str
    params: int
    discovery: Discovery
    head: str
    modality: str
    random_weights: bool
    dropout_zeroed: list[str]
    hidden: int
    settings: Settings
    tokens: int
    #: Parameter names (tied ones under each name) and their element counts.
    param_sizes: dict[str, int] = field(default_factory=dict)
    #: Parameters outside every block (what trains when every block is frozen).
    head_params: int = 0
    inputs_text: str = ""

    @property
    def param_names(self) -> list[str]:
        return list(self.param_sizes)


def _finish(p: Probe, model: nn.Module) -> Probe:
    p.param_sizes = {n: t.numel() for n, t in model.named_parameters(remove_duplicate=False)}
    inside = {
        id(t) for b in p.discovery.blocks for n in b for t in model.get_submodule(n).parameters()
    }
    p.head_params = sum(t.numel() for t in model.parameters() if id(t) not in inside)
    return p


def _meta_params(source: Source, kwargs: Mapping[str, Any]) -> tuple[int, str, Any]:
    """Parameter count, class name and config (``None`` for a factory), from a build on the
    meta device (a factory that cannot build there is built for real)."""
    if source.kind == "factory":
        with contextlib.suppress(Exception), torch.device("meta"):
            out = _call_user_factory(source.path, kwargs)
            model = out["model"] if isinstance(out, Mapping) else out.model
            return sum(p.numel() for p in model.parameters()), type(model).__name__, None
        out = _call_user_factory(source.path, kwargs)
        model = out["model"] if isinstance(out, Mapping) else getattr(out, "model", None)
        if not isinstance(model, nn.Module):
            raise input_error(f"{source.text}: the factory returned no nn.Module 'model'")
        return sum(p.numel() for p in model.parameters()), type(model).__name__, None
    config = load_config(source.path)
    try:
        with torch.device("meta"):
            model = _build_hf(source.path, False)
    except Exception as e:
        raise input_error(
            f"{source.text}: cannot build {_model_class(config).__name__}: {_one_line(e)}"
        ) from None
    return sum(p.numel() for p in model.parameters()), type(model).__name__, config


def estimate_footprint(params: int, batch: int, tokens: int, hidden: int, layers: int) -> int:
    """Bytes one training step needs, roughly: parameters x (4 weights + 4 gradients + 8 AdamW
    state) plus activations of 16 float32 values per token, hidden feature and layer."""
    return params * 16 + batch * tokens * hidden * max(layers, 1) * 16 * 4


def device_free_bytes(device: str) -> int:
    """Free memory of ``device`` (:func:`~bench_lib.measuring.group.free_bytes`); a usage
    error where CUDA is asked for and absent."""
    from ..measuring.group import free_bytes

    if device == "cuda" and not torch.cuda.is_available():
        raise usage_error("--device='cuda': CUDA is not available here (choices: cpu, cuda)")
    return free_bytes(device)


def probe(
    source: Source,
    *,
    batch_size: int,
    seq_len: int,
    image_size: int | None,
    block_names: Sequence[str] | None,
    device: str,
) -> Probe:
    """Everything advise checks before anything runs, in order: the parameter count on the meta
    device, the footprint against the device's free memory, then a real build, a probe forward
    (batch 1) that places the blocks and proves the inputs and loss work. Raises
    :class:`~.errors.AdviseError` for each problem, with its exit code."""
    kwargs = {
        "depth": 1,
        "width": 1,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "image_size": image_size or 224,
    }
    params, name, config = _meta_params(source, kwargs)
    hidden = _hidden_size(config) if config is not None else 0
    layers = int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layer", 0) or 12)
    side_value = image_size or (getattr(config, "image_size", 224) if config is not None else 224)
    if isinstance(side_value, Sequence):
        side_value = side_value[0]
    side = int(side_value or 224)
    patch = getattr(config, "patch_size", None) if config is not None else None
    vision = config is not None and getattr(config, "vocab_size", None) is None
    tokens = (
        (side // patch) ** 2
        if vision and isinstance(patch, int)
        else (side * side // 16 if vision else seq_len)
    )
    need = estimate_footprint(params, batch_size, tokens, hidden or 1024, layers)
    free = device_free_bytes(device)
    if need > free:
        raise input_error(
            f"{source.text}: a training step needs about {need / 2**30:.1f} GiB ({_short(params)} "
            f"parameters x 16 bytes plus activations at batch {batch_size}), more than the "
            f"{free / 2**30:.1f} GiB free on {device}; lower --batch/--seq or use a bigger device"
        )
    torch.manual_seed(0)
    zeroed: list[str] = []
    if source.kind == "factory":
        out = _call_user_factory(source.path, kwargs)
        try:
            model = out["model"] if isinstance(out, Mapping) else out.model
            blocks = out["blocks"] if isinstance(out, Mapping) else out.blocks
            make_batch = out["make_batch"] if isinstance(out, Mapping) else out.make_batch
        except (KeyError, AttributeError) as e:
            raise input_error(f"{source.text}: the factory's result has no {e}") from None
        if not isinstance(model, nn.Module):
            raise input_error(f"{source.text}: the factory's 'model' is not an nn.Module")
        zeroed += [f"{dropout_off(model)} dropout modules"]
        named = [[b] if isinstance(b, str) else list(b) for b in blocks]
        for b in named:
            for n in b:
                try:
                    model.get_submodule(n)
                except AttributeError:
                    raise input_error(
                        f"{source.text}: block {n!r} is not a submodule of the model"
                    ) from None
        counts = [sum(_numel(model.get_submodule(n)) for n in b) for b in named]
        discovery = Discovery(
            named, [], f"the factory's own list ({len(named)} blocks)", counts, False
        )
        if block_names:
            discovery = discover_blocks(model, lambda m: _run_factory(m, make_batch), block_names)
        settings = Settings(
            "factory",
            source.path,
            batch_size,
            seq_len,
            image_size,
            tuple(tuple(b) for b in discovery.blocks),
        )
        p = Probe(
            name,
            params,
            discovery,
            "factory",
            "factory",
            False,
            zeroed,
            hidden,
            settings,
            tokens,
            inputs_text="the factory's make_batch and loss",
        )
        return _finish(p, model)
    assert config is not None
    # What the saved config had on (load_config has already set it to 0).
    zeroed = dropout_off_config(_transformers().AutoConfig.from_pretrained(source.path))
    try:
        model = _build_hf(source.path, source.weights)
    except Exception as e:
        raise input_error(f"{source.text}: cannot build {name}: {_one_line(e)}") from None
    batcher = batcher_for(model, config, 1, seq_len, image_size)
    loss_fn = stand_in_loss if batcher.head == "base" else own_loss

    def run(m: nn.Module) -> Any:
        inputs, targets = batcher(torch.Generator().manual_seed(0))
        return loss_fn(m(**inputs), targets)

    try:
        discovery = discover_blocks(model, run, block_names)
    except AdviseError:
        raise
    except Exception as e:
        raise input_error(
            f"{source.text}: the probe forward of {name} failed ({_one_line(e)}); {FACTORY_HINT}"
        ) from None
    settings = Settings(
        "hub" if source.kind == "hub" else "directory",
        source.path,
        batch_size,
        seq_len,
        batcher.image_size if batcher.modality == "vision" else None,
        tuple(tuple(b) for b in discovery.blocks),
        source.weights,
    )
    p = Probe(
        name,
        params,
        discovery,
        batcher.head,
        batcher.modality,
        not source.weights,
        zeroed,
        hidden,
        settings,
        tokens,
        inputs_text=_inputs_text(batcher, batch_size),
    )
    return _finish(p, model)


_LABELS = {
    "causal_lm": "labels = input_ids (next tokens), the model's own loss",
    "masked_lm": "labels = input_ids, the model's own loss",
    "seq2seq_lm": "labels = input_ids, the model's own loss",
    "sequence_classification": "class ids, the model's own loss",
    "image_classification": "class ids, the model's own loss",
    "token_classification": "a class id per token, the model's own loss",
    "question_answering": "start and end positions, the model's own loss",
    "base": "none (stand-in loss)",
}


def _inputs_text(b: Batcher, batch_size: int) -> str:
    if b.modality == "text":
        x = f"input_ids {batch_size} x {b.seq_len} (vocabulary {b.vocab_size})"
        x += " + attention_mask" if b.mask else ""
    else:
        x = f"pixel_values {batch_size} x {b.channels} x {b.image_size} x {b.image_size}"
    labels = _LABELS[b.head]
    if b.float_labels and "class ids" in labels:
        labels = labels.replace("class ids", "float targets")
    return f"{x}; labels: {labels}"


def _run_factory(model: nn.Module, make_batch: Callable[[torch.Generator], Any]) -> Any:
    inputs, _ = make_batch(torch.Generator().manual_seed(0))
    if isinstance(inputs, Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(*inputs)
