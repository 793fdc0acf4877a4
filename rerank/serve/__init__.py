"""``rerank serve``: any pipeline behind the rerank APIs that RAG applications already call.

Modules: :mod:`~rerank.serve.config` (settings), :mod:`~rerank.serve.schemas` (request shapes and
checks), :mod:`~rerank.serve.engine` (which pipeline part answers what), :mod:`~rerank.serve.batching`
(dynamic batching and back-pressure), :mod:`~rerank.serve.app` (routes and status codes),
:mod:`~rerank.serve.limits`, :mod:`~rerank.serve.auth`, :mod:`~rerank.serve.metrics`, and
:mod:`~rerank.serve.command` (the CLI subcommand). FastAPI and uvicorn come with
``pip install 'rerank[serve]'``.
"""

from __future__ import annotations

from rerank.serve.config import ServeConfig

__all__ = ["ServeConfig", "build_app", "serve"]


def build_app(config: ServeConfig, api_key: str | None = None, warmup: bool = True):
    """Build the pipeline a config names (indexed on its dataset or index) and the app serving it."""
    from rerank.errors import ConfigError, require

    require("fastapi", "serve")
    from rerank.expr import build
    from rerank.serve.app import create_app
    from rerank.serve.engine import with_index

    if not config.pipeline.strip():
        raise ConfigError("give a pipeline to serve: --pipeline EXPR (or pipeline = \"...\" in the config file)")
    if config.dataset:
        from rerank.data import load

        pipeline = build(config.pipeline, load(config.dataset))
    else:
        pipeline = build(config.pipeline)
        if config.index:
            pipeline = with_index(pipeline, config.index)
    searchable = bool(config.dataset or config.index)
    return create_app(pipeline, config, searchable=searchable, api_key=api_key, warmup=warmup)


def serve(config: ServeConfig) -> None:
    """Check the bind, build the app and run it with uvicorn until SIGINT/SIGTERM (then drain)."""
    from rerank.errors import require
    from rerank.serve.auth import check_bind, load_api_key

    api_key = load_api_key(config)
    check_bind(config, api_key)
    uvicorn = require("uvicorn", "serve")
    app = build_app(config, api_key, warmup=False)
    app.state.warm_up()  # load the models now: one that cannot load is a one-line error, not a failed startup
    uvicorn.run(app, host=config.host, port=config.port, log_level="info",
                timeout_graceful_shutdown=int(config.request_timeout) + 5)
