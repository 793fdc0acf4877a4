"""Pipeline expressions: the text form of a pipeline, for the CLI and pipeline files.

Grammar (a subset of Python expressions, parsed with :mod:`ast`, never evaluated)::

    expr  := expr ">>" expr | expr "%" INT | expr "|" expr | "(" expr ")" | stage
    stage := NAME | NAME "(" [args] ")"        # registry names; "-" and "_" are interchangeable
    args  := literal values, positional or keyword (numbers, strings, True/False/None, lists)

Names are looked up among retrievers first, then rerankers. Given a dataset, retrievers are indexed on
its corpus (indexes are cached on disk under ``$RERANK_CACHE``, default ``~/.cache/rerank``) and
``run`` stages are bound to its shipped runs.

>>> build("bm25 % 100 >> dense")
BM25() >> Cutoff(100) >> Dense()
>>> build("bm25 >> nosuch")
Traceback (most recent call last):
...
rerank.errors.ConfigError: unknown stage 'nosuch' in 'bm25 >> nosuch'. Retrievers: anncur, bm25, dense, run; rerankers: ...
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from rerank import registry
from rerank.errors import ConfigError, DataError
from rerank.models import cache_root
from rerank.stage import Fuse, Pipeline, Stage

_HYPHENATED = re.compile(r"\b([A-Za-z_]\w*(?:-[A-Za-z_]\w*)+)(?=\s*(?:\(|>>|%|\||\)|$))")


def build(expr: str, dataset: Any = None, cache_dir: str | Path | None = None) -> Stage:
    """Build the stage an expression describes, indexed on ``dataset`` when one is given."""
    if not expr or not expr.strip():
        raise ConfigError("the pipeline expression is empty")
    source = _HYPHENATED.sub(lambda m: m.group(1).replace("-", "_"), expr.strip())
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError as e:
        raise ConfigError(f"cannot parse pipeline {expr!r}: {e.msg} (use >>, % k, | between stage names)") from None
    stage = _Builder(expr, None, cache_dir).visit(tree)  # validate everything before indexing anything
    return stage if dataset is None else _Builder(expr, dataset, cache_dir).visit(tree)


class _Builder:
    def __init__(self, expr: str, dataset: Any, cache_dir: str | Path | None):
        self.expr, self.dataset = expr, dataset
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root()

    def visit(self, node: ast.AST) -> Stage:
        if isinstance(node, ast.BinOp):
            left = self.visit(node.left)
            if isinstance(node.op, ast.Mod):
                k = self.literal(node.right)
                return left % k if isinstance(k, int) else self.fail(f"'%' needs an integer, got {k!r}")
            right = self.visit(node.right)
            if isinstance(node.op, ast.RShift):
                return Pipeline([left, right])
            if isinstance(node.op, ast.BitOr):
                return Fuse([left, right])
        if isinstance(node, ast.Name):
            return self.stage(node.id, [], {})
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [self.literal(a) for a in node.args]
            kwargs = {kw.arg: self.literal(kw.value) for kw in node.keywords if kw.arg}
            return self.stage(node.func.id, args, kwargs)
        return self.fail(f"unexpected {ast.unparse(node)!r}")

    def literal(self, node: ast.AST) -> Any:
        try:
            return ast.literal_eval(node)
        except ValueError:
            return self.fail(f"arguments must be literal values, got {ast.unparse(node)!r}")

    def stage(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Stage:
        for kind in ("retriever", "reranker"):
            table = {n.replace("-", "_"): n for n in registry.names(kind)}
            if name in table:
                cls = registry.resolve(kind, table[name])
                try:
                    stage = cls(*args, **kwargs)
                except TypeError as e:
                    return self.fail(f"bad arguments for {table[name]!r}: {e}")
                return self.bind(stage)
        return self.fail(f"unknown stage {name.replace('_', '-')!r}", listing=True)

    def bind(self, stage: Stage) -> Stage:
        if self.dataset is None:
            return stage
        if hasattr(stage, "bind"):
            return stage.bind(self.dataset)
        if hasattr(stage, "index") and hasattr(stage, "load"):
            return indexed(stage, self.dataset, self.cache_dir)
        return stage

    def fail(self, message: str, listing: bool = False) -> Any:
        extra = ""
        if listing:
            extra = f". Retrievers: {', '.join(registry.names('retriever'))}; rerankers: {', '.join(registry.names('reranker')) or 'none'}"
        raise ConfigError(f"{message} in {self.expr!r}{extra}")


def indexed(retriever: Any, dataset: Any, cache_dir: Path) -> Any:
    """``retriever`` indexed on ``dataset``'s corpus, loaded from the on-disk cache when present."""
    folder = index_folder(retriever, dataset, cache_dir)
    if (folder / "params.json").exists():
        try:
            loaded = type(retriever).load(folder)
            return loaded.with_num_results(retriever.num_results) if loaded.num_results != retriever.num_results else loaded
        except (DataError, OSError, ValueError):
            pass  # a stale or partial cache entry: rebuild it below
    stale = folder.exists()  # an entry that did not load
    retriever.index(dataset.corpus())
    # written aside, then renamed: processes indexing the same corpus at once never mix their files
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}-{threading.get_ident()}")
    try:
        retriever.save(partial)
    except NotImplementedError:
        shutil.rmtree(partial, ignore_errors=True)
        return retriever
    if stale:
        shutil.rmtree(folder, ignore_errors=True)
    try:
        partial.rename(folder)
    except OSError:  # another process saved it first
        shutil.rmtree(partial, ignore_errors=True)
    return retriever


def index_folder(retriever: Any, dataset: Any, cache_dir: str | Path) -> Path:
    """Where :func:`indexed` keeps ``retriever``'s index of ``dataset`` (the folder may not exist yet)."""
    params = {k: v for k, v in retriever.params().items() if k not in ("num_results", "progress")}
    docs = dataset.corpus()
    key = f"{type(retriever).__name__}{sorted(params.items())}|{dataset.name}|{len(docs)}|{docs[0].docid}|{docs[-1].docid}"
    return Path(cache_dir) / "indexes" / f"{_slug(dataset.name)}-{type(retriever).__name__.lower()}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
