"""Scale-out on a real Ray cluster on loopback, started once for this module and torn down after it.

The cluster has 4 logical CPUs (on however many cores the machine has), so two executor workers and
two index shards fit at once. Datasets are small slices of the bundled SciFact and Cranfield.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import optional

from rerank.errors import ConfigError, DataError
from rerank.types import Doc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster on 127.0.0.1 (no dashboard, no usage stats) with a fresh rerank cache."""
    optional("ray", "needs the ray extra (pip install 'rerank[ray]')")
    from rerank.distributed.cluster import connect, shutdown

    saved = os.environ.get("RERANK_CACHE")
    os.environ["RERANK_CACHE"] = str(tmp_path_factory.mktemp("cache"))  # workers inherit it
    assert connect(num_cpus=4, object_store_memory=256 * 1024**2)
    import ray

    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes())
    yield ray
    shutdown()
    if saved is None:
        os.environ.pop("RERANK_CACHE", None)
    else:
        os.environ["RERANK_CACHE"] = saved


@pytest.fixture(scope="module")
def scifact():
    from rerank.data import load

    return load("scifact")


# -- a grid on Ray equals the same grid locally --------------------------------------------------------
SYSTEMS = {"BM25": "bm25", "Dense": "dense", "Fusion": "bm25 | dense",
           "LLM": "bm25 % 2 >> yes-no(backend='hf:smollm2')"}
TIMINGS = ("load_s", "warmup_s", "run_s", "ms_per_query", "started")


@pytest.fixture(scope="module")
def slices(tmp_path_factory) -> list[Path]:
    """BEIR-layout slices of bundled SciFact and Cranfield: 3 judged queries, their judged documents
    and 50 others."""
    from rerank.data import load

    out = []
    for name in ("scifact", "cranfield"):
        ds, folder = load(name), tmp_path_factory.mktemp(f"{name}-slice")
        qrels = ds.qrels()
        queries = [q for q in ds.queries() if q.qid in qrels][:3]
        keep = {d for q in queries for d in qrels[q.qid]}
        docs = [d for d in ds.corpus() if d.docid in keep] + [d for d in ds.corpus()[:50] if d.docid not in keep]
        (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d.docid, "title": d.title, "text": d.text}) + "\n" for d in docs))
        (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q.qid, "text": q.text}) + "\n" for q in queries))
        (folder / "qrels").mkdir()
        rows = [f"{q.qid}\t{d}\t{r}" for q in queries for d, r in qrels[q.qid].items()]
        (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
        out.append(folder)
    return out


def run_grid(slices: list[Path], out: Path, executor, systems: dict[str, str] = SYSTEMS) -> None:
    from rerank.runner import DatasetSpec, Runner, Settings

    datasets = [DatasetSpec(str(p), label=p.name.split("-")[0]) for p in slices]
    records = Runner(systems, datasets, Settings(limit=2, call_cache=False), out, executor).run()
    assert all(r.ok for r in records.values()), [r.error for r in records.values() if not r.ok]


def saved(out: Path) -> dict[str, object]:
    """Every run file (its lines, scores apart) and every record without its timings."""
    found: dict[str, object] = {}
    for path in sorted(out.rglob("*.trec")):
        rows = [line.split() for line in path.read_text().splitlines()]
        found[str(path.relative_to(out))] = ([(q, d, r, tag) for q, _, d, r, _, tag in rows], [float(r[4]) for r in rows])
        record = json.loads(path.with_suffix(".json").read_text())
        for key in (*TIMINGS, "content_sha256"):  # the record's own hash covers its timings
            record.pop(key, None)
        if record.get("prefix"):
            record["prefix"] = {k: v for k, v in record["prefix"].items() if k not in ("ms_per_query", "load_s")}
        found[str(path.relative_to(out)) + ".json"] = record
    return found


def same(got: dict[str, object], want: dict[str, object]) -> bool:
    """Equal runs and records, where a torch model's scores may differ in the last float32 bit: a
    worker with Ray's default threads runs it on fewer threads than one process does (README, Scale out)."""
    if got.keys() != want.keys():
        return False
    for key, value in got.items():
        if key.endswith(".trec"):
            (lines, scores), (want_lines, want_scores) = value, want[key]
            if lines != want_lines or not np.allclose(scores, want_scores, rtol=1e-6, atol=0):
                return False
        elif value != want[key]:
            return False
    return True


@pytest.fixture(scope="module")
def local_grid(cluster, slices, tmp_path_factory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("local-grid")
    run_grid(slices, out, None)  # also fills the index cache the workers read
    found = saved(out)
    assert len([k for k in found if k.endswith(".trec")]) == 8
    return found


def test_grid_on_ray_equals_local_and_models_load_once_per_worker(cluster, slices, local_grid, tmp_path):
    from rerank.distributed.parallel import parallel
    from rerank.distributed.ray import RayExecutor
    from rerank.rerankers.pointwise import YesNo

    import torch

    with RayExecutor(workers=2, threads=torch.get_num_threads()) as ex:  # torch threads as in this process
        run_grid(slices, tmp_path, ex)
        got, llm = saved(tmp_path), {k for k in local_grid if "/LLM." in k}
        assert {k: v for k, v in got.items() if k not in llm} == {k: v for k, v in local_grid.items() if k not in llm}
        for k in sorted(llm):  # the same runs, bit for bit, and the same records; the LLM's scores closely:
            if k.endswith(".trec"):  # in 3 of 13 runs here (2026-12-06), after other test files, one score of a
                (lines, scores), (want_lines, want_scores) = got[k], local_grid[k]  # warm-up query moved by ~1e-3: cause not found
                assert lines == want_lines and np.allclose(scores, want_scores, rtol=0, atol=5e-3), k
            else:
                assert got[k]["status"] == "ok" and got[k]["qids"] == local_grid[k]["qids"], k
        from rerank import pipeline
        from rerank.data import load

        sci = load(str(slices[0]))
        first = pipeline("bm25 % 2", sci)(sci.topics().select(["1", "3"]))
        reranker = parallel(YesNo(backend="hf:smollm2"), ex, shards=2)
        once, twice = reranker(first).to_pandas(), reranker(first).to_pandas()  # the same workers, no new loads
        assert once["docid"].tolist() == twice["docid"].tolist()
        workers = ex.info()
    assert len({w["pid"] for w in workers}) == 2
    for w in workers:  # every spec and encoder loaded at most once in each worker process
        assert all(n == 1 for n in w["backend_loads"].values()), w
        assert w["encoder_loads"] <= 1, w
    assert any(w["backend_loads"].get("hf:smollm2") for w in workers)


class KillAfterFirst:
    """An executor that SIGKILLs every worker of a RayExecutor once the first result of a map is in."""

    def __init__(self, inner):
        self.inner, self.killed = inner, []

    def map(self, fn, items):
        pids = [w["pid"] for w in self.inner.info()]  # asked before: a busy worker answers only between tasks
        for i, result in enumerate(self.inner.map(fn, items)):
            yield result
            if i == 0 and len(items) > 2 and not self.killed:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                self.killed = pids

    def close(self) -> None:
        pass


def test_grid_with_workers_killed_mid_run_equals_local(cluster, slices, local_grid, tmp_path):
    from rerank.distributed.ray import RayExecutor

    with RayExecutor(workers=2, max_retries=2) as ex:
        killer = KillAfterFirst(ex)
        run_grid(slices, tmp_path, killer, {k: v for k, v in SYSTEMS.items() if k != "LLM"})
        assert killer.killed and not set(killer.killed) & {w["pid"] for w in ex.info()}  # killed, restarted
    got = saved(tmp_path)
    assert same(got, {k: v for k, v in local_grid.items() if k in got}) and len(got) == 12  # nothing lost, nothing twice


# -- sharded BM25 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lucene", "rank_bm25"])
def test_sharded_bm25_equals_unsharded_on_scifact(cluster, scifact, method):
    from rerank.distributed.bm25 import build_bm25
    from rerank.retrievers.bm25 import BM25

    docs, topics = scifact.corpus(), scifact.topics()
    topics = topics.select(list(topics.queries())[:60])
    whole = BM25(method=method).index(docs)
    expected = whole.with_num_results(100)(topics).to_pandas()
    sharded = build_bm25(docs, BM25(method=method), shards=2)
    try:
        got = (sharded % 100)(topics).to_pandas()  # scatter-gather top-k over the shard actors
        assert got["docid"].tolist() == expected["docid"].tolist()
        assert np.array_equal(got["score"].to_numpy(), expected["score"].to_numpy())  # bit for bit
        assert got["text"].tolist() == expected["text"].tolist()
        merged = sharded.merge()
        assert merged._vocab == whole._vocab and (merged._scores != whole._scores).nnz == 0
        assert merged.with_num_results(100)(topics).to_pandas().equals(expected)
        assert all(m > 0 for m in sharded.peak_memory())
        assert len(sharded({"q": "zzzqqq"})) == 0  # no shard has the term
        with pytest.raises(ConfigError, match="merge"):
            sharded(expected.head(3))
    finally:
        sharded.close()


def test_sharded_bm25_bad_inputs(cluster, tmp_path):
    from rerank.distributed.bm25 import build_bm25
    from rerank.retrievers.bm25 import BM25

    docs = [Doc("d1", "cats purr"), Doc("d2", "dogs bark"), Doc("d3", "birds sing")]
    with pytest.raises(DataError, match="empty"):
        build_bm25([])
    with pytest.raises(ConfigError, match="3 documents into 4 shards"):
        build_bm25(docs, shards=4)
    with pytest.raises(ConfigError, match="unindexed"):
        build_bm25(docs, BM25().index(docs))
    for repeated in ([*docs, Doc("d1", "again")], [*docs, docs[0]]):  # the error of BM25().index, before Ray
        with pytest.raises(DataError, match="duplicate docids") as one:
            BM25().index(repeated)
        with pytest.raises(DataError) as sharded:
            build_bm25(repeated, shards=2)
        assert str(sharded.value) == str(one.value)
    part = tmp_path / "corpus.jsonl"
    part.write_text('{"_id": "x", "text": "cats"}\n{"_id": "y", "text": ')  # truncated file
    with pytest.raises(DataError, match="not valid JSON"):
        build_bm25([part])


def write_corpus(path: Path, docs: list[Doc]) -> Path:
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(json.dumps({"_id": d.docid, "title": d.title, "text": d.text}) + "\n" for d in docs))
    return path


def test_sharded_bm25_drops_repeated_records_of_corpus_files_as_a_dataset_does(cluster, scifact, tmp_path, caplog):
    import logging

    from rerank.data.beir import BeirDataset
    from rerank.distributed.bm25 import build_bm25
    from rerank.retrievers.bm25 import BM25

    docs, topics = scifact.corpus()[:60], scifact.topics()
    topics = topics.select(list(topics.queries())[:20])
    first = [*docs[:30], docs[4], docs[4]]                 # repeated within the first shard
    second = [docs[30], docs[9], *docs[31:], docs[40]]     # across shards (docs[9]) and within the second
    files = [write_corpus(tmp_path / "a" / "corpus.jsonl", first), write_corpus(tmp_path / "b" / "corpus.jsonl", second)]
    whole = write_corpus(tmp_path / "whole" / "corpus.jsonl", first + second)
    with caplog.at_level(logging.WARNING, logger="rerank"):
        corpus = BeirDataset(whole.parent).corpus()         # the one-process path: the dataset's loader
        one = BM25().index(corpus).with_num_results(100)
        with build_bm25(files) as sharded:
            got = (sharded % 100)(topics).to_pandas()
            merged = sharded.merge()
    assert [d.docid for d in merged.docs] == [d.docid for d in corpus] == [d.docid for d in docs]  # first copies kept
    expected = one(topics).to_pandas()
    assert got["docid"].tolist() == expected["docid"].tolist()
    assert np.array_equal(got["score"].to_numpy(), expected["score"].to_numpy())  # bit for bit
    assert merged._vocab == one._vocab and (merged._scores != one._scores).nnz == 0
    assert f"{whole}: 4 repeated document records dropped" in caplog.text
    assert f"{files[0]} and 1 more corpus files: 4 repeated document records dropped" in caplog.text

    other = [Doc(docs[9].docid, "another text")]  # one id, two different records: refused by both
    message = f"two different document records have the id '{docs[9].docid}'"
    with pytest.raises(DataError, match=message):
        BeirDataset(write_corpus(tmp_path / "c" / "corpus.jsonl", first + other).parent).corpus()
    with pytest.raises(DataError, match=message):
        build_bm25([files[0], write_corpus(tmp_path / "d" / "corpus.jsonl", other)])


def test_a_second_process_joins_by_the_gcs_address_and_is_refused_other_grpc_ports(cluster):
    gcs = cluster.get_runtime_context().gcs_address  # 127.0.0.1:PORT
    raylet = f"127.0.0.1:{cluster.nodes()[0]['NodeManagerPort']}"  # a gRPC server of Ray, but no GCS
    probe = f"""
import time, ray
from rerank.distributed.cluster import connect
from rerank.errors import ConfigError
for wrong in ({raylet!r}, {"ray://" + gcs!r}):  # Ray would retry for 20 s and 30 s, with warnings
    started = time.monotonic()
    try:
        connect(wrong)
    except ConfigError as e:
        print(round(time.monotonic() - started), e)
print(connect({gcs!r}), ray.cluster_resources()["CPU"])
"""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # keep 127.0.0.1
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stderr == "", out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"0 {raylet!r} is not a Ray cluster") and "as a Ray GCS does" in lines[0]
    assert lines[1].startswith(f"0 'ray://{gcs}' is not a Ray cluster") and "as a Ray client server does" in lines[1]
    assert lines[2:] == ["True 4.0"]


def test_a_plugin_file_reaches_the_ray_workers(cluster, tmp_path):
    """``rerank --plugin FILE.py``: the workers of a joined cluster import the file too (PYTHONPATH and
    $RERANK_PLUGINS go with the job), so a stage defined there runs on them."""
    (tmp_path / "ray_overlap_plugin.py").write_text(
        "import numpy as np\nfrom rerank import register\nfrom rerank.rerankers.base import PointwiseReranker\n\n"
        "@register('reranker', 'ray-overlap')\nclass Overlap(PointwiseReranker):\n"
        "    def score_pairs(self, queries, texts):\n"
        "        return np.array([len(set(q.split()) & set(t.split())) for q, t in zip(queries, texts)], float)\n")
    gcs = cluster.get_runtime_context().gcs_address
    out = subprocess.run([sys.executable, "-m", "rerank.cli", "--quiet", "--plugin", str(tmp_path / "ray_overlap_plugin.py"),
                          "eval", "--dataset", "scifact", "--limit", "2", "--pipeline", "bm25 % 5 >> ray-overlap",
                          "--executor", f"ray:{gcs}"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert out.returncode == 0 and "| bm25 % 5 >> ray-overlap | " in out.stdout, out.stderr[-2000:]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until ``proc`` accepts connections on ``port`` of 127.0.0.1."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"nothing listens on port {port} (exit code {proc.poll()})")


def test_a_second_process_joins_through_a_ray_client_server(cluster, tmp_path):
    from servers import free_port

    port, gcs = free_port(), cluster.get_runtime_context().gcs_address
    with open(tmp_path / "client-server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "ray.util.client.server", "--host", "127.0.0.1", "--port", str(port),
                                   "--address", gcs, "--mode", "legacy"], stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_for_port(port, server)
        probe = f"import ray\nfrom rerank.distributed.cluster import connect\nprint(connect('ray://127.0.0.1:{port}'), ray.cluster_resources()['CPU'])"
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        assert out.returncode == 0 and out.stdout.split() == ["True", "4.0"], out.stderr[-2000:]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_build_bm25_stops_the_cluster_it_started_and_keeps_one_it_joined(cluster):
    probe = """
import ray
from rerank.distributed.bm25 import build_bm25
from rerank.types import Doc
docs = [Doc("d1", "cats purr"), Doc("d2", "dogs bark"), Doc("d3", "birds sing")]
with build_bm25(docs, shards=2, num_cpus=0.5) as index:
    assert index.owns_cluster and len(index({"q": "cats"})) == 1
print(ray.is_initialized())
"""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]
    from rerank.distributed.bm25 import build_bm25

    with build_bm25([Doc("d1", "cats purr"), Doc("d2", "dogs bark")], shards=2) as joined:
        assert not joined.owns_cluster
    import ray

    assert ray.is_initialized()  # the module's cluster is still up


def test_sigterm_stops_a_ray_command_as_ctrl_c_does(tmp_path):
    """Review helper-60: SIGTERM to a command on a cluster it started printed Ray's C++ stack dump and
    exited 1. It now stops as Ctrl-C does: the cluster is stopped, one line, exit status 143."""
    started = tmp_path / "started"
    (tmp_path / "ray_sleep_plugin.py").write_text(
        "import pathlib, time\nfrom rerank import register\nfrom rerank.rerankers.base import PointwiseReranker\n\n"
        "@register('reranker', 'ray-sleep')\nclass Sleep(PointwiseReranker):\n"
        "    def score_pairs(self, queries, texts):\n"
        f"        pathlib.Path({str(started)!r}).touch()\n"
        "        time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "rerank.cli", "--quiet", "--plugin", str(tmp_path / "ray_sleep_plugin.py"),
                             "eval", "--dataset", "scifact", "--limit", "1", "--pipeline", "bm25 % 2 >> ray-sleep",
                             "--executor", "ray"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert started.exists(), proc.communicate(timeout=60)[1][-2000:]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM and err.strip().endswith("rerank: terminated"), err[-2000:]
    assert "SIGTERM received" not in err
    time.sleep(5)  # the cluster's processes exit after the driver
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # nothing of the cluster it started is left


# -- executor: order, retries -----------------------------------------------------------------------
def test_killed_worker_loses_and_duplicates_nothing(cluster, tmp_path):
    from rerank.distributed.ray import RayExecutor

    log = tmp_path / "executions.txt"

    def slow_square(x: int) -> int:  # defined here, so it is shipped by value
        time.sleep(0.5)
        with open(log, "a") as f:
            f.write(f"{x}\n")
        return x * x

    items = list(range(10))
    with RayExecutor(workers=2, max_retries=2) as ex:
        results = ex.map(slow_square, items)
        first = next(results)
        pids = [w["pid"] for w in ex.info()]
        for pid in pids:  # both workers die mid-run: one is busy, the other gets the next item
            os.kill(pid, signal.SIGKILL)
        rest = list(results)
        assert [first, *rest] == [x * x for x in items]
        after = [w["pid"] for w in ex.info()]
        assert not set(after) & set(pids)  # restarted
    done = [int(x) for x in log.read_text().split()]
    assert sorted(set(done)) == items  # every item ran; the killed ones ran again


def test_executor_bad_settings(cluster):
    from rerank.distributed.ray import RayExecutor

    with pytest.raises(ConfigError, match="workers must be an integer >= 1"):
        RayExecutor(workers=0)
    with pytest.raises(ConfigError, match=">= 0"):
        RayExecutor(num_cpus=-1)
    with pytest.raises(ConfigError, match="already connected to the Ray cluster at .*; it cannot also use '127.0.0.1:1'"):
        RayExecutor("127.0.0.1:1", workers=1)   # review helper-60: ran on this process's cluster, whatever was asked
    joined = cluster.get_runtime_context().gcs_address
    with RayExecutor(joined, workers=1) as same:   # the cluster it is connected to, by its address
        assert list(same.map(abs, [-2])) == [2]
    ex = RayExecutor(workers=1)
    ex.close()
    ex.close()  # twice is fine
    with pytest.raises(ConfigError, match="closed"):
        list(ex.map(abs, [1]))


def test_workers_that_cannot_all_start_on_a_local_cluster_are_refused_not_waited_for(cluster):
    from rerank.distributed.bm25 import build_bm25
    from rerank.distributed.dense import encode_corpus
    from rerank.distributed.ray import RayExecutor
    from rerank.retrievers.dense import Dense

    with pytest.raises(ConfigError, match="do not fit the local Ray cluster"):
        RayExecutor(workers=3, num_cpus=2)  # 6 CPUs of 4
    with pytest.raises(ConfigError, match="resources \\{'big_memory': 1\\} per actor, but the local Ray cluster has"):
        RayExecutor(workers=1, resources={"big_memory": 1})   # review helper-60: waited for ever
    with pytest.raises(ConfigError, match="num_cpus=1e-05 is finer than Ray counts resources"):
        encode_corpus(["a text"], Dense(), actors=1, num_cpus=1e-5)
    from rerank.distributed.cluster import ray_share

    assert ray_share(0.0002 / 3) == 0 and ray_share(2 / 3) == 0.6666   # build_bm25's default share of what is free
    with pytest.raises(ConfigError, match="has 0 GPUs"):
        encode_corpus(["a text"], Dense(), actors=1, num_gpus=0.25)
    docs = [Doc("d1", "cats purr"), Doc("d2", "dogs bark")]
    with RayExecutor(workers=2, num_cpus=2) as ex:  # every CPU held
        assert list(ex.map(abs, [-1, -2, -3])) == [1, 2, 3]
        with pytest.raises(ConfigError, match="0 of 4 CPUs free"):
            RayExecutor()
        with build_bm25(docs, shards=2) as index:  # shards that take no CPU still start
            assert len(index({"q": "cats"})) == 1
            from rerank.retrievers.bm25 import BM25

            assert index({"q": "zzz"}).columns == BM25().index(docs)({"q": "zzz"}).columns   # none found (review helper-60)
        with pytest.raises(ConfigError, match="do not fit"):
            build_bm25(docs, shards=2, num_cpus=1)


def test_sharded_bm25_refuses_bad_shards_and_files_in_one_line(cluster, tmp_path):
    from rerank.distributed.bm25 import build_bm25

    docs = [Doc("d1", "cats purr"), Doc("d2", "dogs bark"), Doc("d3", "birds sing")]
    for shards in (0, 2.5, "2"):
        with pytest.raises(ConfigError, match="shards"):
            build_bm25(docs, shards=shards)
    with pytest.raises(DataError, match="corpus file .*nope.jsonl not found"):
        build_bm25([tmp_path / "nope.jsonl"])
    full, empty = write_corpus(tmp_path / "a" / "corpus.jsonl", docs), tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError) as failed:
        build_bm25([full, empty])
    assert str(failed.value) == f"a BM25 shard failed: {empty}: the corpus file holds no documents (a shard would be empty)"
    index = build_bm25(docs, shards=2)
    index.close()
    with pytest.raises(ConfigError, match="is closed"):
        index({"q": "cats"})
    with pytest.raises(ConfigError, match="is closed"):
        index.merge()


def test_a_worker_dead_for_good_is_one_rerank_error(cluster):
    from rerank.distributed.ray import RayExecutor
    from rerank.errors import RerankError

    def die(x: int) -> int:
        os.kill(os.getpid(), signal.SIGKILL)
        return x

    with RayExecutor(workers=1, max_retries=0) as ex, pytest.raises(RerankError) as dead:
        list(ex.map(die, [1]))
    assert str(dead.value).startswith("a Ray worker died and its 0 restarts are used up: ") and "\n" not in str(dead.value)


def dead_by(actor, seconds: float) -> None:
    """Wait until a killed Ray actor is dead (its calls fail), at most ``seconds``."""
    import ray

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return
        except ray.exceptions.GetTimeoutError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the killed actor still answered after {seconds} s")


def test_closing_an_executor_mid_map_and_a_dead_shard_are_one_line_each(cluster):
    from rerank.distributed.bm25 import build_bm25
    from rerank.distributed.ray import RayExecutor
    from rerank.errors import RerankError

    ex = RayExecutor(workers=1)
    results = ex.map(abs, [-1, -2, -3])
    assert next(results) == 1
    ex.close()
    with pytest.raises(ConfigError, match="was closed before its map finished"):
        list(results)
    import ray

    with build_bm25([Doc("d1", "cats purr"), Doc("d2", "dogs bark")], shards=2) as index:
        ray.kill(index.shards[1])
        dead_by(index.shards[1], seconds=30)  # kill is asynchronous: a query sent at once could still be answered
        with pytest.raises(RerankError) as dead:
            index({"q": "cats"})
    assert "a shard actor died and its part of the index with it" in str(dead.value) and "\n" not in str(dead.value)


# -- parallel(): a stage over query shards ----------------------------------------------------------
def test_parallel_bm25_equals_local_and_ships_once(cluster, scifact):
    from rerank.distributed.parallel import parallel
    from rerank.backends.fake import FakeBackend
    from rerank.distributed.ray import RayExecutor
    from rerank.rerankers.listwise import Listwise
    from rerank.retrievers.bm25 import BM25

    bm25 = BM25().index(scifact.corpus()).with_num_results(50)
    topics = scifact.topics().select(list(scifact.topics().queries())[:40])
    with RayExecutor(workers=2) as ex:
        stage = parallel(bm25, ex, shards=4)
        assert stage(topics).to_pandas().equals(bm25(topics).to_pandas())
        assert stage(topics).to_pandas().equals(bm25(topics).to_pandas())
        assert len(ex._shipped) == 1
        nothing = {"z": "qqqzzzxxx", "y": "xxxzzzqqq"}  # no document has these words: the local columns all the same
        assert stage(nothing).to_pandas().equals(bm25(nothing).to_pandas())
        bm25.index(scifact.corpus()[:2000])  # in place (review helper-60: the workers kept answering from the old index)
        assert stage(topics).to_pandas().equals(bm25(topics).to_pandas())
        with pytest.raises(DataError) as raised:   # as itself, in one line, not Ray's remote traceback
            stage({"a": "", "b": "cats"})
        assert type(raised.value) is DataError and "\n" not in str(raised.value) and "ray::" not in str(raised.value)
        listwise = Listwise(FakeBackend(generate=str.upper), window=3, step=1)  # answers it cannot parse: repaired
        shards = parallel(bm25 % 3 >> listwise, ex, shards=2)(topics.select(list(topics.queries())[:4]))
        assert all(shards.results(q).info["parse"]["repaired"] for q in shards.queries())  # the shards' notes kept
    with parallel(bm25, workers=1) as own, pytest.raises(DataError):   # its own executor, stopped though the run fails
        own({"a": ""})
    assert own._executor is None


def test_parallel_bad_inputs():
    from rerank.distributed.parallel import parallel

    with pytest.raises(ConfigError, match="needs a Stage"):
        parallel("bm25")
    from rerank.retrievers.bm25 import BM25

    for shards in (0, 2.5, float("nan"), "3"):
        with pytest.raises(ConfigError, match="shards to be an integer >= 1"):
            parallel(BM25(), shards=shards)


# -- dense encoding on Ray Data ---------------------------------------------------------------------
def test_dense_encoding_on_ray_data_matches_local(cluster, scifact):
    from rerank.distributed.dense import build_dense
    from rerank.retrievers.dense import Dense

    docs = scifact.corpus()[:32]
    topics = scifact.topics().select(list(scifact.topics().queries())[:5])
    local = Dense(num_results=10).index(docs)
    remote = build_dense(docs, Dense(num_results=10), actors=2, batch_size=8)
    assert np.allclose(remote.embeddings, local.embeddings, atol=1e-5)
    assert remote(topics).to_pandas()["docid"].tolist() == local(topics).to_pandas()["docid"].tolist()
    ivf = Dense(index="ivf", nlist=4, nprobe=4, num_results=10).index_embeddings(docs, remote.embeddings)
    assert ivf(topics).to_pandas()["docid"].tolist() == local(topics).to_pandas()["docid"].tolist()  # all lists probed


def test_dense_index_embeddings_bad_inputs():
    from rerank.retrievers.dense import Dense

    docs = [Doc("a", "x"), Doc("b", "y")]
    with pytest.raises(DataError, match="shape"):
        Dense().index_embeddings(docs, np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(DataError, match="NaN"):
        Dense().index_embeddings(docs, np.array([[np.nan, 0], [0, 1]], dtype=np.float32))
    with pytest.raises(ConfigError, match="nlist"):
        Dense(index="ivf", nlist=5).index_embeddings(docs, np.eye(2, dtype=np.float32))
    # checked as index() checks documents; another encoder's embeddings are named at search (review helper-62)
    with pytest.raises(DataError, match="the corpus is empty"):
        Dense().index_embeddings([], np.zeros((0, 4), dtype=np.float32))
    assert Dense().index_embeddings([("a", "x"), ("b", "y")], np.eye(2, dtype=np.float32)).docs == docs
    with pytest.raises(DataError, match="docid"):
        Dense().index_embeddings([Doc(" a", "x"), Doc("b", "y")], np.eye(2, dtype=np.float32))
    with pytest.raises(DataError, match="the index holds 2-dimensional embeddings and the encoder gives 384"):
        Dense().index_embeddings(docs, np.eye(2, dtype=np.float32)).search("x")


def test_dense_and_bm25_pickle_with_their_indexes():
    import pickle

    from rerank.retrievers.bm25 import BM25
    from rerank.retrievers.dense import Dense

    docs = [Doc("a", "cats purr"), Doc("b", "dogs bark"), Doc("c", "birds sing")]
    emb = np.eye(3, 4, dtype=np.float32)
    for index in ("flat", "hnsw"):
        dense = pickle.loads(pickle.dumps(Dense(index=index).index_embeddings(docs, emb)))
        assert dense._faiss.ntotal == 3 and dense._faiss.search(emb[1:2], 1)[1][0, 0] == 1
    bm25 = BM25().index(docs)
    assert pickle.loads(pickle.dumps(bm25)).search("barking dogs").docids == ["b"]


def test_a_loopback_address_ray_rewrites_names_the_way_in():
    """Review helper-60: a second process asking for a rerank-started cluster by 127.0.0.1:PORT read "no Ray
    cluster answers" (Ray had rewritten the address to the machine's), with no way to join it."""
    from rerank.distributed.cluster import _probe

    with pytest.raises(ConfigError, match=r"\(Ray connects to 127.0.0.2:1\): .*joined through a Ray client server"):
        _probe("127.0.0.1:1", "127.0.0.2", 1)
