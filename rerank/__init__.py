"""rerank: retrieval and reranking of every paradigm behind one pipeline API.

>>> from rerank import Ranking, Cutoff
>>> repr(Cutoff(10))
'Cutoff(10)'
"""

__version__ = "0.1.0"

from rerank.errors import (
    BackendError,
    ConfigError,
    DataError,
    MissingDependency,
    ParseError,
    RerankError,
)
from rerank.evaluate import Experiment, Report, evaluate
from rerank.registry import get, names, register
from rerank.stage import Cutoff, Fuse, Pipeline, Stage, fuse
from rerank.types import Candidates, Doc, Qrel, Query, RankedResults, Ranking, Result

__all__ = [
    "BackendError", "Candidates", "ConfigError", "Cutoff", "DataError", "Doc", "Experiment", "Fuse",
    "MissingDependency", "ParseError", "Pipeline", "Qrel", "Query", "RankedResults", "Ranking", "Report",
    "RerankError", "Result", "Stage", "evaluate", "fuse", "get", "load_dataset", "names", "pipeline", "register",
]


def load_dataset(name_or_path: str, **kwargs):
    """Load a dataset by registry name, BEIR folder path or ``irds:<ir_datasets id>`` (see :mod:`rerank.data`)."""
    from rerank.data import load

    return load(name_or_path, **kwargs)


def pipeline(expr: str, dataset=None):
    """Build a stage from an expression such as ``"bm25 % 100 >> dense"`` (see :mod:`rerank.expr`)."""
    from rerank.expr import build

    return build(expr, dataset)
