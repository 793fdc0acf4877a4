"""Datasets by name: bundled collections, BEIR folders, BRIGHT tasks and ir_datasets ids.

>>> ds = load("scifact")
>>> len(ds.queries()), ds.rel_threshold
(300, 1)
>>> load("scifakt")
Traceback (most recent call last):
...
rerank.errors.DataError: unknown dataset 'scifakt'; did you mean 'scifact' or 'beir/scifact'? Known: ...

Names come from ``catalog.toml``; a path to a folder in BEIR layout and ``irds:<id>`` (an
ir_datasets id whose files are available locally) load too; a catalog name wins over a folder of that
name in the current directory (with a warning; ``./name`` reads the folder). Bundled folders are searched in
``$RERANK_DATASETS``, then in the installed package ``rerank_datasets`` (how a wheel ships the
repository's ``datasets/``), then in ``datasets/`` of the checkout this code runs from.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import tomllib

from rerank.data.base import Dataset
from rerank.data.beir import SETTINGS_FILE, BeirDataset, folder_threshold
from rerank.data.memory import InMemoryDataset
from rerank.errors import ConfigError, DataError
from rerank.params import check_arguments

__all__ = ["Dataset", "InMemoryDataset", "load", "names", "dataset_dirs"]

logger = logging.getLogger("rerank")
D = TypeVar("D", bound=Dataset)


def _catalog() -> dict[str, dict[str, Any]]:
    return tomllib.loads(resources.files(__name__).joinpath("catalog.toml").read_text(encoding="utf-8"))


def names() -> list[str]:
    """Names of catalogued datasets (BRIGHT tasks as ``bright/<task>``)."""
    return sorted(_catalog())


def dataset_dirs() -> list[Path]:
    """Folders searched for bundled datasets: ``$RERANK_DATASETS`` (``:``-separated), the installed
    ``rerank_datasets`` package, the checkout's ``datasets/``."""
    dirs = [Path(p) for p in os.environ.get("RERANK_DATASETS", "").split(os.pathsep) if p]
    spec = importlib.util.find_spec("rerank_datasets")
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(p) for p in spec.submodule_search_locations if Path(p).is_dir()]
    checkout = Path(__file__).resolve().parents[2] / "datasets"
    return list(dict.fromkeys(dirs + [checkout] if checkout.is_dir() else dirs))


def load(name: str, **options: Any) -> Dataset:
    """Load a dataset by catalog name, folder path, or ``irds:<ir_datasets id>``.

    Options: ``documents=`` (BRIGHT: a local copy of BRIGHT's documents), ``long=True``
    (BRIGHT long-document setting), ``rel_threshold=`` (override the catalog's, which an ir_datasets id
    of a catalog entry also gets, a folder's ``dataset.toml``, or the level of an ir_datasets id's
    official measures).
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"a dataset is a catalog name, a folder or irds:<id>, got {name!r}")
    if name.startswith("irds:"):
        from rerank.data.irds import IrDatasetsDataset

        irds_id = name[len("irds:"):]
        known = next((e for e in _catalog().values() if irds_id in (e.get("irds"), *e.get("aliases", []))), {})
        if "rel_threshold" in known:  # else ir_datasets' official measures say
            options = {"rel_threshold": known["rel_threshold"], **options}
        return _make(IrDatasetsDataset, name, irds_id, **options)
    catalog = _catalog()
    key = _catalog_key(name)
    if key is not None:
        _warn_if_shadowing(name, key, catalog[key]["folder"])
        return _from_catalog(key, catalog[key], options)
    path = Path(name).expanduser()
    if path.is_dir():
        return _make(BeirDataset, name, path, name=path.resolve().name or str(path.resolve()), **options)
    if path.is_file():
        raise DataError(f"dataset {name!r} is a file; a dataset is a folder in BEIR layout (corpus.jsonl, queries.jsonl, "
                        f"qrels/), here perhaps {str(path.parent)!r}, a catalog name or irds:<id>")
    aliases = [a for entry in catalog.values() for a in entry.get("aliases", [])]
    close = difflib.get_close_matches(name, list(catalog) + aliases, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise DataError(f"unknown dataset {name!r}{hint or '.'} Known: {', '.join(sorted(catalog))}; "
                    "or pass a folder in BEIR layout, or irds:<ir_datasets id>")


def _make(cls: type[D], what: str, *args: Any, **options: Any) -> D:
    """``cls(*args, **options)``, its arguments checked first (an unknown or ill-typed option is a ConfigError)."""
    check_arguments(cls, args, options, what)
    return cls(*args, **options)


def local_sources(name: str, options: Mapping[str, Any] | None = None) -> list[Path]:
    """The local folders and files ``load(name, **options)`` reads (none for ir_datasets), so that a
    cache of loaded datasets can notice an edit."""
    if name.startswith("irds:"):
        return []
    key = _catalog_key(name)
    if key is None:
        return [Path(name).expanduser()]
    entry = _catalog()[key]
    found = [folder] if (folder := _bundled_folder(entry)) else []
    if entry.get("layout") == "bright":
        from rerank.data.bright import documents_location

        found += [documents] if (documents := documents_location((options or {}).get("documents"))) else []
    return found


def _bundled_folder(entry: dict[str, Any]) -> Path | None:
    """The first of :func:`dataset_dirs` that holds the catalog entry's folder."""
    return next((d / entry["folder"] for d in dataset_dirs() if (d / entry["folder"]).is_dir()), None)


def _catalog_key(name: str) -> str | None:
    """The catalog entry ``name`` (or an alias of it) names, None when it names none."""
    catalog = _catalog()
    aliases = {a: key for key, entry in catalog.items() for a in entry.get("aliases", [])}
    key = aliases.get(name, name)
    return key if key in catalog else None


def _warn_if_shadowing(name: str, key: str, folder: str) -> None:
    """Warn when ``name`` is also a local folder (other than the bundled one): the catalog name wins."""
    path = Path(name).expanduser()
    if path.is_dir() and all(path.resolve() != (d / folder).resolve() for d in dataset_dirs()):
        logger.warning("%r is the bundled dataset %r; the folder %s of that name is not read (to read it, give "
                       "its path: --dataset %s)", name, key, path.resolve(), os.path.join(".", name))


def _from_catalog(key: str, entry: dict[str, Any], options: dict[str, Any]) -> Dataset:
    folder = _bundled_folder(entry)
    own = folder_threshold(folder) if folder is not None and entry.get("layout") != "bright" else None
    if own is not None and own != entry.get("rel_threshold", own):
        raise DataError(f"{key}: {folder / SETTINGS_FILE} says rel_threshold = {own}, the catalog "
                        f"{entry['rel_threshold']}; make them agree")
    options = {"rel_threshold": own or entry.get("rel_threshold", 1), **options}
    if entry.get("layout") == "bright":
        from rerank.data.bright import BrightDataset

        if folder is None:
            raise DataError(f"{key}: BRIGHT queries not found in {[str(d) for d in dataset_dirs()]}")
        return _make(BrightDataset, key, folder, name=key, **options)
    if folder is not None:
        return _make(BeirDataset, key, folder, name=key, **options)
    if "irds" in entry:
        from rerank.data.irds import IrDatasetsDataset

        return _make(IrDatasetsDataset, key, entry["irds"], name=key, **options)
    raise DataError(f"{key}: not bundled here and no ir_datasets id known; looked in {[str(d) for d in dataset_dirs()]}")
