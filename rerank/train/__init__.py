"""Train rerankers (and bi-encoders) on your own corpus: judged queries, synthetic queries (DUQGen) or a teacher's scores.

Modules: ``settings`` (one frozen dataclass), ``labels`` (training split, leakage guard), ``negatives``
(hard negatives from any stage), ``querygen`` (sentence, title and LLM generators), ``synthetic``
(clustered sampling, round-trip filter), ``distill`` (teacher scores through the call cache),
``examples`` (layout per loss), ``trainer`` (sentence-transformers' trainers), ``record`` (training
record and loss curve), ``run`` (the whole run, for a cross-encoder or a bi-encoder), ``cli``.
"""

from rerank.train.record import TrainingRecord
from rerank.train.run import build_examples, train_bi_encoder, train_cross_encoder
from rerank.train.settings import TrainSettings

__all__ = ["TrainSettings", "TrainingRecord", "build_examples", "train_bi_encoder", "train_cross_encoder"]
