"""Scale-out on Ray: grid cells, query shards, index shards and encoding across a cluster.

What runs where:

* :class:`~rerank.distributed.ray.RayExecutor` -- one grid cell per task, on a pool of long-lived
  worker actors (``Experiment(..., executor="ray")``, ``rerank eval/bench --executor ray[:ADDRESS]``);
  models load once per worker, because every backend spec and encoder is cached per process;
* :func:`~rerank.distributed.parallel.parallel` -- one stage, its query set cut into contiguous
  shards, each shard transformed by an actor that holds its own copy of the stage;
* :mod:`rerank.distributed.bm25` -- BM25 built in shards with global statistics, then merged into
  one index or searched with a scatter-gather top-k over shard actors;
* :mod:`rerank.distributed.dense` -- corpus encoding with Ray Data ``map_batches`` over an actor
  pool, then one FAISS index (flat, HNSW or IVF).

The cluster is started or joined by :func:`~rerank.distributed.cluster.connect`: usage statistics
off, no dashboard, bound to 127.0.0.1 when started here. Everything needs ``pip install 'rerank[ray]'``.
"""
