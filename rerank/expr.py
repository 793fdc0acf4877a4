"""Pipeline expressions: the text form of a pipeline, for the CLI and pipeline files.

Grammar (a subset of Python expressions, parsed with :mod:`ast`, never evaluated)::

    expr  := expr ">>" expr | expr "%" INT | expr "|" expr | "(" expr ")" | stage
    stage := NAME | NAME "(" [args] ")"        # registry names; "-" and "_" are interchangeable
    args  := literal values, positional or keyword (numbers, strings, True/False/None, lists, dicts)

An expression may span lines and carry ``#`` comments. Strings are kept verbatim. Anything else (``**kwargs``, ``% True``, other operators, calls as
arguments) is refused with a :class:`~rerank.errors.ConfigError` naming it. Arguments are checked
against the stage's constructor (names, type hints, ranges: :mod:`rerank.params`) before it is built.

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
import difflib
import io
import re
import tokenize
from pathlib import Path
from typing import Any

from rerank import registry
from rerank.errors import ConfigError
from rerank.index_cache import indexed
from rerank.models import cache_root
from rerank.params import check_arguments
from rerank.stage import Fuse, Pipeline, Stage


def build(expr: str, dataset: Any = None, cache_dir: str | Path | None = None) -> Stage:
    """Build the stage an expression describes, indexed on ``dataset`` when one is given."""
    if not isinstance(expr, str):
        raise ConfigError(f"a pipeline expression is text, got {expr!r} ({type(expr).__name__})")
    if not expr.strip():
        raise ConfigError("the pipeline expression is empty")
    try:
        tree = ast.parse(_wrapped(_dehyphenate(expr.strip())), mode="eval").body  # may span lines
        stage = _Builder(expr, None, cache_dir).visit(tree)  # validate everything before indexing anything
    except SyntaxError as e:
        raise ConfigError(f"cannot parse pipeline {expr!r}: {e.msg} (use >>, % k, | between stage names)") from None
    except (RecursionError, MemoryError):
        raise ConfigError(f"pipeline {expr[:80]!r}... is too long or too deeply nested") from None
    return stage if dataset is None else _Builder(expr, _as_dataset(dataset), cache_dir).visit(tree)


def _as_dataset(dataset: Any) -> Any:
    """A dataset object; a name, folder or ``irds:`` id (text or a path) is loaded (ConfigError for anything else)."""
    if isinstance(dataset, str | Path):
        from rerank.data import load

        return load(str(dataset))
    if not callable(getattr(dataset, "corpus", None)):
        raise ConfigError(f"dataset must be a Dataset, a dataset name, a BEIR folder or irds:<id>, got {type(dataset).__name__} "
                          f"{dataset!r:.40}; for your own documents build the stage and call .index(docs)")
    return dataset


def with_first(expression: str, first: str) -> str:
    """``expression`` with ``{first}`` replaced by a dataset's first stage, in parentheses unless it is one
    stage, so that ``{first} % 100`` cuts a first stage ``bm25 | dense`` as a whole.

    >>> with_first("{first} % 100 >> dense", "bm25 | run")
    '(bm25 | run) % 100 >> dense'
    """
    try:
        one = isinstance(ast.parse(_dehyphenate(first).strip(), mode="eval").body, ast.Name | ast.Call)
    except SyntaxError:
        one = False  # building the expression names the problem
    if one and "#" not in first:
        return expression.replace("{first}", first)
    return expression.replace("{first}", f"({first}\n)" if "#" in first else f"({first})")  # a comment ends at the line


def literal_strings(expression: str) -> list[str]:
    """The string values of an expression as it is built (``'m' 'odel'`` is ``'model'``, escapes decoded);
    the quoted texts when it does not parse.

    >>> literal_strings("cross-encoder(model='models/' 'ce') >> x(p='a\\x2eyaml')")
    ['models/ce', 'a.yaml']
    """
    try:
        tree = ast.parse(_dehyphenate(expression).strip(), mode="eval")
    except SyntaxError:
        return [single or double for single, double in re.findall(r"'([^']*)'|\"([^\"]*)\"", expression)]
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def _dehyphenate(source: str) -> str:
    """``cross-encoder`` -> ``cross_encoder``: join names written with hyphens (stage names), touching
    nothing else: strings are kept verbatim, and a spaced ``a - b`` stays a (refused) subtraction.
    Raises SyntaxError on a closing bracket without its opening one."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return source  # ast.parse names the problem
    line_starts = [0]
    for line in source.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    depth = 0
    for token in tokens:
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(token.string, 0) if token.type == tokenize.OP else 0
        if depth < 0:
            raise SyntaxError(f"unmatched {token.string!r}")
    chars = list(source)
    for before, dash, after in zip(tokens, tokens[1:], tokens[2:]):
        if (dash.type == tokenize.OP and dash.string == "-" and before.type == after.type == tokenize.NAME
                and before.end == dash.start and dash.end == after.start):
            row, col = dash.start
            chars[line_starts[row - 1] + col] = "_"
    return "".join(chars)


_OPERATORS = {ast.RShift: ">>", ast.Mod: "%", ast.BitOr: "|"}


def _wrapped(expr: str) -> str:
    """The text parsed for ``expr``: in brackets, so that it may span lines (a ``)(`` in it is refused before)."""
    return f"(\n{expr.strip()}\n)"


class _Builder:
    def __init__(self, expr: str, dataset: Any, cache_dir: str | Path | None):
        self.expr, self.dataset = expr, dataset
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root()

    def visit(self, node: ast.AST) -> Stage:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left = self.visit(node.left)
            if isinstance(node.op, ast.Mod):
                k = self.literal(node.right)
                if type(k) is not int:  # not a bool, not a float
                    return self.fail(f"'%' needs an integer, got {self.written(node.right)}")
                try:
                    return left % k
                except ConfigError as e:
                    return self.fail(str(e))
            right = self.visit(node.right)
            return Pipeline([left, right]) if isinstance(node.op, ast.RShift) else Fuse([left, right])
        if isinstance(node, ast.Name):
            return self.stage(node.id, [], {})
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            for keyword in node.keywords:
                if keyword.arg is None:
                    return self.fail(f"'**' argument unpacking is not supported, got {self.written(keyword)}")
            names = [kw.arg for kw in node.keywords]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                return self.fail(f"{node.func.id}(): argument {repeated[0]!r} is given more than once")
            args = [self.literal(a) for a in node.args]
            kwargs = {kw.arg: self.literal(kw.value) for kw in node.keywords if kw.arg}
            return self.stage(node.func.id, args, kwargs)
        if isinstance(node, ast.BinOp | ast.BoolOp | ast.UnaryOp | ast.Compare):
            return self.fail(f"{self.written(node)} is not supported: a pipeline joins stages with >>, % INT and | only")
        return self.fail(f"{self.written(node)} is not a stage: write a stage name, or name(arguments)")

    def literal(self, node: ast.AST) -> Any:
        """A literal argument: a number, a string, True/False/None, or a list, tuple or dict of these."""
        if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, bool | int | float | str)):
            return node.value
        if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd)
                and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)):
            return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
        if isinstance(node, ast.List | ast.Tuple) and not any(isinstance(e, ast.Starred) for e in node.elts):
            values = [self.literal(e) for e in node.elts]
            return values if isinstance(node, ast.List) else tuple(values)
        if isinstance(node, ast.Dict) and all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in node.keys):
            keys = [k.value for k in node.keys]  # type: ignore[union-attr]
            if len(set(keys)) < len(keys):
                return self.fail(f"a dict argument repeats a key: {self.written(node)}")
            return {k.value: self.literal(v) for k, v in zip(node.keys, node.values)}  # type: ignore[union-attr]
        if isinstance(node, ast.Starred):
            return self.fail(f"'*' argument unpacking is not supported, got {self.written(node)}")
        return self.fail(f"arguments must be literal values (numbers, strings, True/False/None, lists, dicts with "
                         f"string keys), "
                         f"got {self.written(node)}")

    def stage(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Stage:
        for kind in ("retriever", "reranker"):
            table = {n.replace("-", "_"): n for n in registry.names(kind)}
            if name in table:
                cls = registry.resolve(kind, table[name])
                try:
                    check_arguments(cls, args, kwargs, table[name])
                except ConfigError as e:
                    return self.fail(str(e))
                try:
                    stage = cls(*args, **kwargs)
                except ConfigError as e:  # a check across arguments (step < window), made by the stage itself
                    return self.fail(str(e))
                except TypeError as e:
                    return self.fail(f"bad arguments for {table[name]!r}: {e}")
                return self.bind(stage)
        typed = name if name in self.expr else name.replace("_", "-")  # the parser reads cross-encoder as cross_encoder
        known = [n for kind in ("retriever", "reranker") for n in registry.names(kind)]
        close = difflib.get_close_matches(typed, known, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        return self.fail(f"unknown stage {typed!r}{hint}", listing=True)

    def bind(self, stage: Stage) -> Stage:
        if self.dataset is None:
            return stage
        if hasattr(stage, "bind"):
            return stage.bind(self.dataset)
        if hasattr(stage, "index") and hasattr(stage, "load"):
            return indexed(stage, self.dataset, self.cache_dir)
        return stage

    def written(self, node: ast.AST) -> str:
        """``node`` as the user wrote it (names with hyphens, spacing), quoted."""
        return repr(ast.get_source_segment(_wrapped(self.expr), node) or ast.unparse(node))

    def fail(self, message: str, listing: bool = False) -> Any:
        extra = ""
        if listing:
            extra = f". Retrievers: {', '.join(registry.names('retriever'))}; rerankers: {', '.join(registry.names('reranker')) or 'none'}"
        raise ConfigError(f"{message} in {self.expr!r}{extra}")
