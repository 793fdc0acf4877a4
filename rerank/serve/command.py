"""The ``rerank serve`` subcommand (argument parsing only; nothing heavy is imported here).

    rerank serve --pipeline "cross-encoder(model='models/ce')" [--port 8000]
    rerank serve --pipeline "bm25 % 50 >> biencoder" --dataset scifact --set max_documents=200
    rerank serve --config serve.toml --host 0.0.0.0 --api-key-file key.txt
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from rerank.errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", help="the pipeline expression to serve (or `pipeline` in --config)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--dataset", help="index the pipeline's retrievers on this dataset (enables /v1/search)")
    where.add_argument("--index", help="a saved index (rerank index --out) for the pipeline's first retriever")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; others need an API key or --allow-public)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--config", type=Path, help="a TOML file with a [serve] table (flags override it)")
    p.add_argument("--model-name", help="the name /v1/models reports (default: the pipeline expression)")
    p.add_argument("--api-key-file", help="require this file's first line as bearer key (else $RERANK_API_KEY, if set)")
    p.add_argument("--allow-public", action="store_true", default=None, help="bind a non-loopback address without a key")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any serve setting, e.g. max_documents=200, max_batch_requests=1 (repeatable; each setting once)")
    p.set_defaults(func=run_from_args)


def config_from_args(args: argparse.Namespace):
    from rerank.serve.config import ServeConfig

    config = ServeConfig.from_toml(args.config) if args.config else ServeConfig()
    given = [(f"--{k.replace('_', '-')}", k, getattr(args, k)) for k in ("pipeline", "dataset", "index", "host", "port",
             "model_name", "api_key_file", "allow_public") if getattr(args, k) is not None]
    given += [(f"--set {s.strip()}", *_setting(s)) for s in args.set]
    changes: dict[str, tuple[str, object]] = {}  # key -> (how it was given, value)
    for flag, key, value in given:
        if key in changes:
            raise ConfigError(f"serve setting {key} is given twice ({changes[key][0]} and {flag}); give it once")
        changes[key] = (flag, value)
    return config.replace(**{key: value for key, (_, value) in changes.items()})


def run_from_args(args: argparse.Namespace) -> int:
    from rerank.serve import serve

    serve(config_from_args(args))
    return 0


def _setting(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()  # a bare word is a string
    return key.strip(), parsed
