"""Train rerankers on your own corpus: judged queries, synthetic queries (DUQGen) or a teacher's scores.

Modules: ``settings`` (one frozen dataclass), ``labels`` (training split, leakage guard), ``negatives``
(hard negatives from any stage), ``querygen`` (sentence, title and LLM generators), ``synthetic``
(clustered sampling, round-trip filter), ``distill`` (teacher scores through the call cache),
``examples`` (layout per loss), ``trainer`` (sentence-transformers' CrossEncoderTrainer),
``record`` (training record and loss curve), ``cross_encoder`` (the whole run), ``cli``.
"""

from rerank.train.cross_encoder import build_examples, train_cross_encoder
from rerank.train.record import TrainingRecord
from rerank.train.settings import TrainSettings

__all__ = ["TrainSettings", "TrainingRecord", "build_examples", "train_cross_encoder"]
