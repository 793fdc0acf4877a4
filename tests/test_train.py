"""Training cross-encoders (rerank.train): real short trainings of the offline MiniLM on a SciFact slice.

The slice: the first 120 SciFact documents, SciFact's real test queries and qrels, and a training
split whose queries are titles of other slice documents (each judged relevant to its document).
"""

from __future__ import annotations

import gzip
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from rerank.backends.fake import FakeBackend
from rerank.cli import main
from rerank.data.beir import BeirDataset
from rerank.errors import ConfigError, DataError
from rerank.train import TrainingRecord, TrainSettings, build_examples, train_bi_encoder, train_cross_encoder
from rerank.train.labels import labelled_queries, training_split
from rerank.train.querygen import LLMGenerator, SentenceGenerator, TitleGenerator
from rerank.types import Doc

SCIFACT = Path(__file__).resolve().parents[1] / "datasets" / "scifact"
TINY = dict(encoder="dense(max_length=64)", num_documents=12, clusters=3, num_negatives=2, negatives_depth=10, roundtrip_k=10, teacher_depth=10,
            teacher_docs=3, batch_size=4, max_length=64, max_steps=2, save_steps=1, progress=False)


def write_beir(folder: Path, docs: list[dict], queries: list[dict], qrels: dict[str, list[tuple[str, str, int]]]) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    for split, rows in qrels.items():
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{r}\n" for q, d, r in rows))
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny BEIR folder with a train split, and a private $RERANK_CACHE (indexes, call cache)."""
    root = tmp_path_factory.mktemp("train")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RERANK_CACHE", str(root / "cache"))
        with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt") as f:
            docs = [json.loads(line) for _, line in zip(range(120), f)]
        tests = [json.loads(line) for line in (SCIFACT / "queries.jsonl").read_text().splitlines()]
        test_rows = [tuple(line.split("\t")[:2]) + (1,) for line in (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()[1:]]
        train = [{"_id": f"train-{d['_id']}", "text": d["title"]} for d in docs[60:90]]
        folder = write_beir(root / "slice", docs, tests + train,
                            {"test": test_rows, "train": [(q["_id"], q["_id"][6:], 1) for q in train]})
        yield {"root": root, "folder": folder, "dataset": BeirDataset(folder, name="scifact-slice")}


# -- settings and bad inputs (no model) -------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"data": ("labels",)}, "sources"), ({"data": ()}, "sources"), ({"data": ("qrels", "qrels")}, "distinct"),
    ({"generator": "gpt"}, "generator"), ({"num_negatives": 0}, "num_negatives"), ({"num_documents": 2.5}, "num_documents"),
    ({"teacher_docs": 50}, "teacher_docs"), ({"epochs": 0}, "epochs"), ({"learning_rate": float("nan")}, "learning_rate"),
    ({"nosuch": 1}, "unknown training settings"), ({"distill_loss": "bce"}, "labels in \\[0, 1\\]"),
    ({"teacher_scale": float("nan")}, "teacher_scale \\(--teacher-scale\\) must be a finite"), ({"teacher_scale": float("inf")}, "teacher_scale"),
    ({"epochs": float("inf")}, "epochs \\(--epochs\\) must be a finite"), ({"epochs": -1.0}, "epochs \\(--epochs\\) in \\(0, 10,000\\]"),
    ({"seed": -1}, "seed \\(--seed\\) must be >= 0"), ({"seed": 2**32}, "seed \\(--seed\\) must be between 0 and 4294967295"),
    ({"max_length": "64"}, "max_length \\(--max-length\\) must be an integer"), ({"data": 5}, "data \\(--data\\) must be"), ({"extra": ["fp16"]}, "extra must be"),
    ({"max_steps": 0}, "max_steps \\(--max-steps\\) must be an integer from 1 to 10,000,000, or -1"), ({"max_steps": -2}, "max_steps \\(--max-steps\\) must be"),
    ({"max_steps": 10**20}, "max_steps \\(--max-steps\\) must be an integer from 1"), ({"epochs": 1e12}, "epochs \\(--epochs\\) in \\(0, 10,000\\]"),
    ({"batch_size": 10**8}, "batch_size \\(--batch-size\\) must be at most 65,536"), ({"learning_rate": 5.0}, "learning_rate \\(--learning-rate\\) must be in \\(0, 1\\), got 5.0"),
    ({"warmup_ratio": 1.0}, "warmup_ratio \\(--warmup-ratio\\) must be in \\[0, 1\\), got 1.0"), ({"teacher_scale": -1.0}, "teacher_scale \\(--teacher-scale\\) must be > 0"),
    ({"min_words": -1}, "min_words \\(--min-words\\) must be >= 0"),
    ({"num_negatives": 5, "negatives_depth": 1}, "num_negatives \\(--num-negatives\\) \\(5\\) must be at most negatives_depth"),
    ({"generator": "llm", "queries_per_document": 2}, "queries_per_document \\(--queries-per-document\\) 1, got 2"),
])
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainSettings().with_(**changes)


def _blank_slice(folder: Path, blank_doc: bool = False, query_text: str | None = None) -> BeirDataset:
    """Ten training queries judging one document each; the first document without text, or the first
    query of ``query_text`` (review helper-88)."""
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt") as f:
        docs = [json.loads(line) for _, line in zip(range(60), f)]
    train = [{"_id": f"train-{d['_id']}", "text": d["title"]} for d in docs[30:40]]
    if blank_doc:
        docs[30] = {"_id": docs[30]["_id"], "title": "\u200b", "text": " "}
    if query_text is not None:
        train[0]["text"] = query_text
    write_beir(folder, docs, train + [{"_id": "t1", "text": "x y"}],
               {"train": [(q["_id"], q["_id"][6:], 1) for q in train], "test": [("t1", docs[0]["_id"], 1)]})
    return BeirDataset(folder, name="slice")


QRELS_ONLY = TrainSettings(data=("qrels",), num_negatives=2, negatives_depth=10, progress=False)


def test_a_judged_document_without_text_is_no_positive_nor_negative(tmp_path, monkeypatch):
    """It was trained on as a relevant example, "" labelled 1.0, and nothing counted it (review helper-88)."""
    monkeypatch.setenv("RERANK_CACHE", str(tmp_path / "cache"))
    groups, counts, _ = build_examples(_blank_slice(tmp_path / "d", blank_doc=True), QRELS_ONLY)
    assert counts["qrels"]["dropped_blank_positives"] == 1 and counts["qrels"]["dropped_no_positive"] == 1
    assert len(groups["qrels"]) == 9 and all(t.strip("\u200b ") for g in groups["qrels"] for t in g.texts)


def test_a_query_with_no_visible_character_is_empty_as_the_service_says(tmp_path, monkeypatch):
    """A zero-width space was a training query with its positive; the service refused it as empty (review helper-88)."""
    monkeypatch.setenv("RERANK_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="1 queries have empty text \\(e.g. \\['train-"):
        build_examples(_blank_slice(tmp_path / "d", query_text="\u200b"), QRELS_ONLY)


def test_the_training_split_reads_the_corpus_once_with_the_collection(tmp_path, caplog):
    """Its own BeirDataset read the corpus again: every corpus warning twice, and twice the memory (review helper-88)."""
    dataset = _blank_slice(tmp_path / "d")
    lines = (tmp_path / "d" / "corpus.jsonl").read_text().splitlines()
    (tmp_path / "d" / "corpus.jsonl").write_text("\n".join(lines + lines[:1]) + "\n")  # one exact repeat: a warning
    with caplog.at_level("INFO", logger="rerank"):
        train = training_split(dataset)
        queries, _ = labelled_queries(dataset, train)
    assert caplog.text.count("repeated") == 1 and len(queries) == 10
    assert train.qrels() != dataset.qrels() and dataset.with_split("test").qrels() == dataset.qrels()


def test_training_without_the_train_extra_names_it(tmp_path, monkeypatch, capsys):
    """README walkthrough (helper-74): a plain install built the examples, then died of an unexpected
    ModuleNotFoundError for accelerate (exit 1)."""
    import sys

    monkeypatch.setitem(sys.modules, "accelerate", None)  # not installed
    assert main(["--quiet", "train", "cross-encoder", "--dataset", "scifact", "--out", str(tmp_path / "m")]) == 2
    assert "accelerate is not installed: pip install 'rerank[train]'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_paths_and_numpy_numbers_are_settings_too():
    s = TrainSettings(base=Path("models/ce"), cache=Path("calls.sqlite"), seed=np.int64(3), teacher_scale=np.float32(2.0))
    assert (s.base, s.cache, s.seed, s.teacher_scale) == ("models/ce", "calls.sqlite", 3, 2.0) and type(s.seed) is int


def test_leakage_guard_refuses_overlapping_train_and_test_ids(env, tmp_path):
    ds = env["dataset"]
    queries, counts = labelled_queries(ds, training_split(ds))
    assert counts["queries"] == len(queries) == 30 and counts["dropped_test_text"] == 0
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    (leaky / "qrels").mkdir()
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        (leaky / name).write_text((env["folder"] / name).read_text())
    (leaky / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n1\t4983\t1\ntrain-4983\t4983\t1\n")
    leaky_ds = BeirDataset(leaky)
    with pytest.raises(DataError, match="also test query ids.*refusing"):
        labelled_queries(leaky_ds, training_split(leaky_ds))
    # test qrels that cannot be read must not switch the guard off
    (leaky / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nnot-a-query\t4983\t1\n")
    broken = BeirDataset(leaky)
    with pytest.raises(DataError, match="none of the 1 judged queries"):
        labelled_queries(broken, training_split(broken))
    assert TrainSettings().with_(distill_loss="bce", teacher_scale=1.0).distill_loss == "bce"


def test_training_queries_equal_to_a_test_query_are_dropped_and_counted(env, tmp_path):
    """Case, punctuation and spacing aside (review helper-59: only case and outer spaces were)."""
    copies = ["same words ", "Same  words.", "same words?", "SAME\twords"]
    folder = write_beir(tmp_path / "dup", [json.loads(line) for line in (env["folder"] / "corpus.jsonl").read_text().splitlines()],
                        [{"_id": "t1", "text": "Same words"}, {"_id": "tr2", "text": "other words"},
                         *({"_id": f"tr{i}", "text": t} for i, t in enumerate(copies, 3))],
                        {"test": [("t1", "4983", 1)], "train": [("tr2", "5836", 1), *((f"tr{i}", "4983", 1) for i in range(3, 7))]})
    ds = BeirDataset(folder)
    queries, counts = labelled_queries(ds, training_split(ds))
    assert [q.qid for q in queries] == ["tr2"] and counts["dropped_test_text"] == 4


def test_training_qrels_of_queries_the_split_lacks_are_dropped_and_counted_with_one_warning(env, tmp_path, caplog):
    folder = write_beir(tmp_path / "orphan", [json.loads(line) for line in (env["folder"] / "corpus.jsonl").read_text().splitlines()],
                        [{"_id": "t1", "text": "a test query"}, {"_id": "tr1", "text": "cells and genes"}],
                        {"test": [("t1", "4983", 1)], "train": [("tr1", "4983", 1), ("nosuch", "5836", 1)]})
    ds = BeirDataset(folder)
    queries, counts = labelled_queries(ds, training_split(ds))
    assert [q.qid for q in queries] == ["tr1"] and counts["dropped_unknown_queries"] == 1
    assert [r.getMessage() for r in caplog.records] == [
        "orphan/train: 1 of 2 judged queries are not among its queries, so they are neither evaluated nor trained on (e.g. ['nosuch'])"]


@pytest.mark.parametrize("kind, args, message", [
    ("cross-encoder", ["--data", "qrels", "--train-split", "dev"], "has no qrels/dev.tsv: give the training queries as another dataset"),
    ("cross-encoder", ["--data", "qrels", "--train-split", "test"], "is the evaluation split"),
    ("cross-encoder", ["--data", "synthetic", "--num-negatives", "0"], "num_negatives"),
    ("cross-encoder", ["--data", "distill", "--teacher", "bm25 >> nosuch"], "unknown stage"),
    ("cross-encoder", ["--loss", "mnrl"], "loss='mnrl' (--loss) does not train a cross-encoder"),
    ("bi-encoder", ["--data", "qrels", "--train-split", "test"], "is the evaluation split"),
    ("bi-encoder", ["--loss", "listnet"], "loss='listnet' (--loss) does not train a bi-encoder"),
    ("bi-encoder", ["--data", "distill", "--distill-loss", "bce", "--teacher-scale", "1"], "distill_loss='bce' (--distill-loss) does not train a bi-encoder"),
])
def test_cli_bad_inputs_exit_2_with_one_line(env, tmp_path, capsys, kind, args, message):
    code = main(["--quiet", "train", kind, "--dataset", str(env["folder"]), "--out", str(tmp_path / "m"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m").exists()  # a failed run leaves no empty folder behind


def test_a_train_split_that_is_not_read_is_warned_about(env, caplog):
    assert training_split(env["dataset"], "dev", str(env["folder"])).name
    assert "train_split='dev' (--train-split) is not read" in caplog.text


@pytest.mark.parametrize("args, message", [
    (["--dataset", ""], "is empty; give a dataset name"),
    (["--data", "distill", "--teacher", "cross-encoder"], "reranks but retrieves nothing"),
    (["--data", "qrels", "--negatives", "cross-encoder"], "(--negatives) reranks but retrieves nothing"),
    (["--from", "no/such/folder"], "no such folder"),
    (["--from", "."], "a folder without config.json"),
    (["--from", "nosuch-org/nosuch-model"], "cannot be loaded"),
    (["--max-length", "100000"], "longer than"),
    (["--seed", "-1"], "seed (--seed) must be >= 0"),
    (["--teacher-scale", "nan"], "teacher_scale (--teacher-scale) must be a finite number"),
    (["--data", "distill", "--teacher", "bm25 % 100 >> cross-encoder(model='/no/such/model')"],
     "teacher (--teacher) model '/no/such/model' cannot be loaded (no such folder)"),
    (["--data", "distill", "--teacher", "bm25 % 100 >> cross-encoder(model='nosuch-org/nosuch-model')"],
     "teacher (--teacher) model 'nosuch-org/nosuch-model' cannot be loaded (not a local folder, and neither in the hub cache"),
    (["--data", "synthetic", "--encoder", "dense(model='nosuch-org/nosuch-model')"], "encoder (--encoder) model 'nosuch-org/nosuch-model'"),
])
def test_cli_bad_model_and_stage_inputs_exit_2_before_any_work(env, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)  # '.' is a folder without a model; nothing may be written here
    argv = ["--quiet", "train", "cross-encoder", "--dataset", str(env["folder"]), "--out", "m", *args]
    code = main(argv[:3] + argv[5:] if args[0] == "--dataset" else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_bi_encoder_may_start_from_a_sentence_transformers_folder_without_a_transformers_config(tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from transformers import AutoTokenizer

    from rerank.encoders import resolve_encoder
    from rerank.train.trainer import check_base

    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("all-MiniLM-L6-v2"))
    SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=8)]).save(str(tmp_path / "static"))
    assert not (tmp_path / "static" / "config.json").exists()
    check_base("bi-encoder", str(tmp_path / "static"), 256)
    with pytest.raises(ConfigError, match="a folder without config.json, not a model"):
        check_base("cross-encoder", str(tmp_path / "static"), 256)


def test_out_must_be_a_new_folder_or_a_training_output(env, tmp_path):
    s = TrainSettings(**TINY)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        train_cross_encoder(env["dataset"], afile, s)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="does not hold a training output"):
        train_cross_encoder(env["dataset"], tmp_path / "notes", s)
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "training_record.json").write_text('{"model_dir": ')
    with pytest.raises(DataError, match="training_record.json is damaged"):
        train_cross_encoder(env["dataset"], tmp_path / "damaged", s)
    with pytest.raises(ConfigError, match="not training arguments"):
        train_cross_encoder(env["dataset"], tmp_path / "new", s.with_(extra={"no_such_argument": 1}))
    with pytest.raises(ConfigError, match="rerank sets \\['seed'\\]"):
        train_cross_encoder(env["dataset"], tmp_path / "new", s.with_(extra={"seed": 1}))
    with pytest.raises(ConfigError, match="extra: weight_decay must be a finite number \\(its default is 0.0\\), got 'abc'"):
        train_cross_encoder(env["dataset"], tmp_path / "new", s.with_(extra={"weight_decay": "abc"}))
    with pytest.raises(ConfigError, match="settings must be a TrainSettings"):
        train_cross_encoder(env["dataset"], tmp_path / "new", "synthetic")
    with pytest.raises(ConfigError, match="out must be the folder"):
        train_cross_encoder(env["dataset"], None, s)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_a_non_finite_training_loss_is_refused():
    from rerank.train.trainer import check_finite_loss

    check_finite_loss([{"loss": 0.5, "step": 1}, {"train_loss": 0.4}], Path("ckpt"))
    with pytest.raises(ConfigError, match="loss became nan at step 3"):
        check_finite_loss([{"loss": 0.5, "step": 1}, {"loss": float("nan"), "step": 3}], Path("ckpt"))


def test_a_really_diverging_training_is_refused_and_saves_no_model(env, tmp_path, capsys):
    """Real short trainings whose loss leaves the float32 range. learning_rate is capped below 1 and, with
    AdamW and gradient clipping, 0.99 only lifted the loss to ~40 in 4 steps; two settings do overflow it on CPU:
    - teacher_scale=1e20 (CLI): the distillation margins' squares overflow, loss inf at step 1;
    - plain SGD without clipping at learning_rate 0.99 (``extra``), teacher_scale 1e8: the loss grows
      ~1e6x a step (1e16, 6e16, 5e22, 8e28, 1e35) and is inf at step 6; the last checkpoint's weights are not finite.
      (rerank's default AdamW with clipping kept the loss flat, ~1e36, at teacher_scale 1e18.)"""
    import torch
    from safetensors.torch import load_file

    from rerank.train.trainer import check_base

    def no_model(out):
        assert not any(out.glob("*.safetensors")) and not (out / "training_record.json").exists()
        with pytest.raises(ConfigError, match="a folder without config.json, not a model"):
            check_base("cross-encoder", str(out), 64)

    out = tmp_path / "scaled"
    code = main(["--quiet", "train", "cross-encoder", "--dataset", str(env["folder"]), "--out", str(out), "--data", "distill",
                 "--teacher", "bm25", "--teacher-scale", "1e20", "--num-documents", "12", "--clusters", "3", "--roundtrip-k", "10",
                 "--teacher-depth", "10", "--teacher-docs", "3", "--batch-size", "4", "--max-length", "64", "--max-steps", "1"])
    err = capsys.readouterr().err.strip()  # transformers' own loading and saving bars come first, even with --quiet
    line = err.splitlines()[-1]
    assert code == 2 and err.count("rerank:") == 1, err
    assert line.startswith("rerank: error: the training loss became inf at step 1; the model was not saved"), err
    assert "Lower learning_rate (--learning-rate) or teacher_scale (--teacher-scale)" in line
    no_model(out)

    out = tmp_path / "sgd"
    s = TrainSettings(**{**TINY, "max_steps": 6, "save_steps": 100}, data=("distill",), teacher="bm25", teacher_scale=1e8,
                      learning_rate=0.99, warmup_ratio=0.0, extra={"optim": "sgd", "max_grad_norm": 0.0, "lr_scheduler_type": "constant"})
    with pytest.raises(ConfigError, match=r"the training loss became inf at step 6; the model was not saved.*Lower learning_rate"):
        train_cross_encoder(env["dataset"], out, s)
    no_model(out)
    weights = load_file(out / "checkpoints" / "checkpoint-6" / "model.safetensors")  # the trainer's final save
    assert not all(torch.isfinite(w).all() for w in weights.values())


def test_a_model_broken_by_its_last_update_is_refused_though_its_logged_loss_was_finite(env, tmp_path):
    """Each step's loss is computed before its update: at teacher_scale 1e11, one plain-SGD step at learning_rate
    0.99 logs a finite loss (9.6e21) and leaves finite weights whose scores are NaN (this model used to be saved)."""
    from rerank.train.trainer import check_base

    out = tmp_path / "one-step"
    s = TrainSettings(**{**TINY, "max_steps": 1, "save_steps": 100}, data=("distill",), teacher="bm25", teacher_scale=1e11,
                      learning_rate=0.99, warmup_ratio=0.0, extra={"optim": "sgd", "max_grad_norm": 0.0})
    with pytest.raises(ConfigError, match=r"the trained model's scores are not finite after step 1, though the logged loss was "
                                          r"\(the last update broke it\); the model was not saved.*Lower learning_rate"):
        train_cross_encoder(env["dataset"], out, s)
    assert not (out / "model.safetensors").exists() and not (out / "training_record.json").exists()
    with pytest.raises(ConfigError, match="a folder without config.json, not a model"):
        check_base("cross-encoder", str(out), 64)


def test_the_finite_model_check_reads_every_layout_and_checks_weights_and_embeddings():
    import torch

    from rerank.train.examples import Group, layout, to_dataset
    from rerank.train.trainer import check_finite_model, first_pairs, load_student

    groups = [Group("scurvy", ["Limes cure scurvy.", "Paris is in France.", "Dogs bark."], [1.0, 0.0, 0.0], "qrels")]
    tables = {loss: (to_dataset(layout(groups, loss)[0], 0), loss) for loss in ("bce", "margin-mse", "listnet")}
    pairs = first_pairs(tables)  # bce: the first 2 rows of one pair; margin-mse, listnet: a row of 3 documents
    assert len(pairs) == 2 + 3 + 3 and set(pairs) == {("scurvy", text) for text in groups[0].texts}
    model = load_student("bi-encoder", "all-MiniLM-L6-v2", 64, 0)
    mnrl = {"mnrl": (to_dataset(layout(groups, "mnrl")[0], 0), "mnrl")}
    check_finite_model("bi-encoder", model, mnrl, 1, Path("ckpt"))
    norm = model[0].auto_model.encoder.layer[-1].output.LayerNorm.weight
    with torch.no_grad():
        norm.fill_(3e38)  # finite weights, infinite hidden states
    with pytest.raises(ConfigError, match="the trained model's embeddings are not finite after step 1"):
        check_finite_model("bi-encoder", model, mnrl, 1, Path("ckpt"))
    with torch.no_grad():
        norm[0] = float("nan")
    with pytest.raises(ConfigError, match="the trained model's weights are not finite after step 1"):
        check_finite_model("bi-encoder", model, mnrl, 1, Path("ckpt"))


def test_cli_refuses_an_empty_corpus_and_qrels_naming_unknown_queries(env, tmp_path, capsys):
    empty = write_beir(tmp_path / "empty", [], [{"_id": "q", "text": "x"}], {"test": [("q", "d", 1)]})
    assert main(["--quiet", "train", "cross-encoder", "--dataset", str(empty), "--out", str(tmp_path / "m")]) == 2
    assert "corpus is empty" in capsys.readouterr().err
    docs = [json.loads(line) for line in (env["folder"] / "corpus.jsonl").read_text().splitlines()]
    orphan = write_beir(tmp_path / "orphan", docs, [{"_id": "t1", "text": "a test query"}],
                        {"test": [("t1", "4983", 1)], "train": [("tr9", "4983", 1)]})
    assert main(["--quiet", "train", "cross-encoder", "--dataset", str(orphan), "--out", str(tmp_path / "m"), "--data", "qrels"]) == 2
    err = capsys.readouterr().err
    assert "tr9" in err and "queries" in err and len(err.strip().splitlines()) == 1


def test_generators_without_llm():
    doc = Doc("d1", "Scurvy follows a lack of vitamin C in the diet. Sailors once died of it on long voyages. Limes cured it.",
              "Scurvy in sailors")
    rng = np.random.default_rng(0)
    made = SentenceGenerator(min_words=3).generate([doc], 2, rng)[0]
    assert len(made) == 2 and all(q.query not in q.passage for q in made)
    title = TitleGenerator().generate([doc, Doc("d2", "no title here")], 1, rng)
    assert title[0][0].query == "Scurvy in sailors" and "Scurvy in sailors" not in title[0][0].passage and title[1] == []
    unpunctuated = Doc("d3", " ".join(f"w{i}" for i in range(40)))
    assert len(SentenceGenerator().generate([unpunctuated], 1, rng)[0][0].query.split()) == 12
    spaced = SentenceGenerator().generate([Doc("d4", "  ".join(f"w{i}" for i in range(40)), "T")], 1, rng)[0][0]
    assert spaced.query.split()[0] not in spaced.passage.split()   # cut however the words were spaced (review helper-59)


def test_llm_generator_answers_are_cleaned_and_unusable_ones_counted():
    gen = LLMGenerator(backend="hf:smollm2")
    assert gen.clean('Query: "what causes scurvy"\nmore') == "what causes scurvy"
    assert gen.clean("") is None and gen.clean("scurvy") is None
    with pytest.raises(ConfigError, match="querygen"):
        LLMGenerator(prompt="pointwise/yes_no")


def test_llm_generator_drops_and_counts_copies_of_its_few_shot_answers(tmp_path):
    echo = FakeBackend(generate=lambda p: "What causes scurvy in sailors" if "Limes" in p.rsplit("Document:", 1)[1] else "flea bites on dogs")
    gen = LLMGenerator(backend=echo, cache=tmp_path / "calls.sqlite")
    docs = [Doc("d1", "Limes cured sailors of scurvy."), Doc("d2", "Fleas bite dogs and cats.")]
    made = gen.generate(docs, 1, np.random.default_rng(0))
    assert made[0] == [] and [q.query for q in made[1]] == ["flea bites on dogs"] and gen.dropped == {"copied_example": 1}


def test_llm_generator_writes_queries_with_smollm2_through_the_call_cache(smollm2, tmp_path):
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt") as f:
        docs = [Doc(r["_id"], r["text"], r["title"]) for r in (json.loads(line) for _, line in zip(range(2), f))]
    gen = LLMGenerator(backend=smollm2, cache=tmp_path / "calls.sqlite", doc_words=60)
    made = gen.generate(docs, 1, np.random.default_rng(0))
    assert len(made) == 2 and sum(map(len, made)) + gen.dropped["unusable"] == 2 and gen.cache_misses == 2
    assert all(q.docid == d.docid and q.passage == d.full_text() and 2 <= len(q.query.split()) <= 24 for qs, d in zip(made, docs) for q in qs)
    again = LLMGenerator(backend=smollm2, cache=tmp_path / "calls.sqlite", doc_words=60)
    assert again.generate(docs, 1, np.random.default_rng(0)) == made and again.cache_hits == 2


# -- data sources (real stages, no training) ----------------------------------------------------------

class CorpusOnly(BeirDataset):
    """The slice, with queries and qrels made unreadable: the synthetic path must not need them."""

    def queries(self):
        raise AssertionError("the synthetic path read the queries")

    def qrels(self):
        raise AssertionError("the synthetic path read the qrels")


def test_synthetic_path_reads_only_the_corpus_and_is_deterministic(env):
    ds = CorpusOnly(env["folder"], name="scifact-slice")
    s = TrainSettings(**TINY)
    groups, counts, _ = build_examples(ds, s)
    again, _, _ = build_examples(ds, s)
    syn = counts["synthetic"]
    assert syn["sampled_documents"] == 12 and syn["generated"] == syn["roundtrip_kept"] + syn["roundtrip_dropped"] + syn["duplicate_queries"]
    assert groups["synthetic"] and groups == again
    assert all(g.labels[0] == 1.0 and set(g.labels[1:]) <= {0.0} for g in groups["synthetic"])


def test_a_copy_of_the_source_document_is_never_its_negative(env, tmp_path):
    """Review helper-59: in a corpus holding a document twice, the copy was a negative of its own query."""
    docs = [json.loads(line) for line in (env["folder"] / "corpus.jsonl").read_text().splitlines()][:40]
    folder = write_beir(tmp_path / "dups", docs + [{**d, "_id": d["_id"] + "-copy"} for d in docs], [], {})
    groups, counts, _ = build_examples(BeirDataset(folder, name="dups"), TrainSettings(**{**TINY, "num_negatives": 4}))
    assert counts["synthetic"]["copies_not_negatives"] > 0
    assert not [g for g in groups["synthetic"] if any(g.query in t for t in g.texts[1:])]


def test_qrels_and_distill_sources_from_python_with_cached_teacher(env):
    s = TrainSettings(**TINY, data=("qrels", "distill"), teacher="bm25")
    groups, counts, _ = build_examples(env["dataset"], s)
    assert counts["qrels"]["queries"] == 30 and len(groups["qrels"]) == 30
    assert counts["distill"]["queries"] == 30 and counts["distill"]["teacher_cache_misses"] == 30
    assert all(len(g.texts) == 3 and g.labels[0] == max(g.labels) for g in groups["distill"])
    _, again, _ = build_examples(env["dataset"], s)
    assert again["distill"]["teacher_cache_hits"] == 30 and again["distill"]["teacher_cache_misses"] == 0


@pytest.mark.parametrize("setting", ["teacher", "negatives"])
def test_an_error_of_a_stage_names_the_setting_that_gave_it(env, setting):
    """Review helper-59: the teacher's max_length refusal did not say it was the teacher's (the
    clustering encoder has a max_length too)."""
    s = TrainSettings(**{**TINY, setting: "bm25 % 10 >> dense(max_length=100000)"}, data=("qrels", "distill"))
    with pytest.raises(ConfigError, match=f"^{setting} \\(--{setting}\\) 'bm25 % 10 >> dense\\(max_length=100000\\)': "
                                          "max_length=100000 exceeds the 512 positions"):
        build_examples(env["dataset"], s)


# -- real training ---------------------------------------------------------------------------------------

def test_training_changes_scores_saves_a_pipeline_model_and_resumes(env, tmp_path, capsys):
    from rerank.expr import build
    from rerank.train.trainer import load_student

    out = tmp_path / "ce"
    s = TrainSettings(**TINY)
    pairs = [("vitamin C and scurvy", "Scurvy follows a lack of vitamin C."), ("vitamin C and scurvy", "Paris is in France.")]
    before = load_student("cross-encoder", s.base, s.max_length, s.seed).predict(pairs)
    capsys.readouterr()
    record = train_cross_encoder(env["dataset"], out, s)
    assert "Writing model shards" not in capsys.readouterr().err  # progress=False: none of the libraries' bars (helper-74)
    assert record.steps == 2 and (out / "config.json").exists() and (out / "loss.png").stat().st_size > 0
    assert TrainingRecord.load(out).counts["synthetic"]["examples"] == record.counts["synthetic"]["examples"] > 0
    assert record.settings["data"] == ["synthetic"] and record.seconds["training"] > 0 and len(record.loss) >= 2

    pipe = build(f"bm25 % 5 >> cross-encoder(model='{out}', truncation='truncate')", env["dataset"])
    ranked = pipe({"q": pairs[0][0]})
    from sentence_transformers import CrossEncoder

    trained = CrossEncoder(str(out))
    assert not np.allclose(trained.predict(pairs), before, atol=1e-4)
    frame = ranked.to_pandas()
    assert 1 <= len(frame) <= 5 and np.allclose(frame["score"], trained.predict([(pairs[0][0], t) for t in frame["text"]]), atol=1e-4)

    with pytest.raises(ConfigError, match="already holds a model"):
        train_cross_encoder(env["dataset"], out, s)
    with pytest.raises(ConfigError, match="is a cross-encoder trained by rerank .*, not a bi-encoder"):   # review helper-59
        build(f"dense(model='{out}')", env["dataset"])
    with pytest.raises(ConfigError, match="is a cross-encoder trained by rerank .*, not a bi-encoder: rerank train bi-encoder "
                                          "--from would load it with a new, untrained head or pooling; start from a bi-encoder"):
        train_bi_encoder(env["dataset"], tmp_path / "bi", s.with_(base=str(out)))  # review helper-88: it dropped the head
    assert not (tmp_path / "bi").exists()
    resumed = train_cross_encoder(env["dataset"], out, s.with_(max_steps=3, resume=True))
    assert resumed.steps == 3
    with pytest.raises(ConfigError, match=r"is complete \(3 steps of 3\); raise max_steps \(--max-steps\) or epochs"):
        train_cross_encoder(env["dataset"], out, s.with_(max_steps=3, resume=True))  # not one step more
    with pytest.raises(ConfigError, match=r"trained with other settings: data \(--data\), learning_rate \(--learning-rate\)"):
        train_cross_encoder(env["dataset"], out, s.with_(max_steps=4, resume=True, learning_rate=1e-3, data=["synthetic", "distill"]))
    half = tmp_path / "half"  # a run stopped before it saved its model
    shutil.copytree(out / "checkpoints", half / "checkpoints")
    shutil.copy(out / "run_settings.json", half / "run_settings.json")
    with pytest.raises(ConfigError, match="holds checkpoints of an earlier run .*; continue it with --resume"):
        train_cross_encoder(env["dataset"], half, s)
    latest = max((half / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    (latest / "optimizer.pt").unlink()
    with pytest.raises(ConfigError, match=f"checkpoint {latest} is damaged .*optimizer.pt missing"):
        train_cross_encoder(env["dataset"], half, s.with_(max_steps=4, resume=True))

    latest = max((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a save cut off midway
    with pytest.raises(ConfigError, match=f"checkpoint {latest} is damaged"):
        train_cross_encoder(env["dataset"], out, s.with_(max_steps=4, resume=True))


def test_bi_encoder_fine_tuning_changes_embeddings_and_loads_as_dense_and_biencoder(env, tmp_path):
    """GPL-style: the bi-encoder learns from the same synthetic and teacher examples (MNRL and MarginMSE)."""
    from sentence_transformers import SentenceTransformer

    from rerank.encoders import resolve_encoder
    from rerank.expr import build
    from rerank.train.trainer import check_base

    out = tmp_path / "bi"
    texts = ["vitamin C and scurvy", "Scurvy follows a lack of vitamin C."]
    before = SentenceTransformer(resolve_encoder("all-MiniLM-L6-v2")).encode(texts)
    record = train_bi_encoder(env["dataset"], out, TrainSettings(**TINY, data=("synthetic", "distill"), teacher="bm25",
                                                                 teacher_scale=1.0, learning_rate=1e-3))
    assert record.steps == 2 and record.settings["model"] == "bi-encoder" and record.settings["loss"] == "mnrl"
    assert record.counts["synthetic"]["examples"] > 0 and record.counts["distill"]["examples"] > 0
    assert (out / "loss.png").stat().st_size > 0 and TrainingRecord.load(out).settings["distill_loss"] == "margin-mse"
    after = SentenceTransformer(str(out)).encode(texts)
    assert not np.allclose(after, before, atol=1e-4)
    ranked = build(f"dense(model='{out}', num_results=5, runtime='torch')", env["dataset"])({"q": texts[0]}).to_pandas()
    rescored = build(f"bm25 % 5 >> biencoder(model='{out}')", env["dataset"])({"q": texts[0]}).to_pandas()
    assert len(ranked) == 5 and 1 <= len(rescored) <= 5
    query = after[0] / np.linalg.norm(after[0])
    doc = SentenceTransformer(str(out)).encode([ranked["text"].iloc[0]])[0]
    # the trained weights, in float32 as SentenceTransformer runs them ('auto' is bfloat16 where the CPU computes it)
    assert np.isclose(ranked["score"].iloc[0], query @ (doc / np.linalg.norm(doc)), atol=1e-3)
    with pytest.raises(ConfigError, match="holds a bi-encoder, not a cross-encoder"):
        train_cross_encoder(env["dataset"], out, TrainSettings(**TINY, resume=True))
    check_base("cross-encoder", str(out), 64)  # its body gets a new head, as the default MiniLM bi-encoder's does
    with pytest.raises(ConfigError, match="is a bi-encoder trained by rerank .*, not a cross-encoder"):   # review helper-59
        build(f"bm25 % 5 >> cross-encoder(model='{out}')", env["dataset"])({"q": texts[0]})
    with pytest.raises(ConfigError, match="does not train a bi-encoder"):
        train_bi_encoder(env["dataset"], tmp_path / "bad", TrainSettings(**TINY, loss="bce"))
    with pytest.raises(ConfigError, match="does not train a cross-encoder"):
        train_cross_encoder(env["dataset"], tmp_path / "bad", TrainSettings(**TINY, loss="mnrl"))


def test_resuming_on_other_data_is_refused(env, tmp_path, caplog):
    out, s = tmp_path / "ce", TrainSettings(**{**TINY, "max_steps": 1})
    assert train_cross_encoder(env["dataset"], out, s.with_(resume=True)).steps == 1  # start or continue: starts
    # review helper-88: it started a new run in silence (a mistyped --out too)
    assert f"--resume: {out} holds no checkpoint; starting a new run" in caplog.text
    (out / "config.json").unlink()  # as if stopped after its checkpoint, before the model was saved
    docs = [json.loads(line) for line in (env["folder"] / "corpus.jsonl").read_text().splitlines()]
    docs = [{**d, "text": d["text"] + " Edited since the first steps."} for d in docs]
    queries = [json.loads(line) for line in (env["folder"] / "queries.jsonl").read_text().splitlines()]
    other = BeirDataset(write_beir(tmp_path / "other", docs, queries, {"test": [("1", docs[1]["_id"], 1)]}), name="scifact-slice")
    with pytest.raises(ConfigError, match="trained on other examples from 'scifact-slice' .*; choose another"):
        train_cross_encoder(other, out, s.with_(max_steps=2, resume=True))
    renamed = BeirDataset(other.path, name="elsewhere")
    with pytest.raises(ConfigError, match="trained on 'scifact-slice', not 'elsewhere'"):
        train_cross_encoder(renamed, out, s.with_(max_steps=2, resume=True))
    assert train_cross_encoder(env["dataset"], out, s.with_(max_steps=2, resume=True)).steps == 2


def test_resuming_after_the_training_judgments_changed_is_refused(env, tmp_path):
    """Review helper-59: the resume check hashed the evaluation split only, so edited training qrels (or a
    teacher's weights) went on silently; now it compares the examples themselves."""
    folder = tmp_path / "slice"
    shutil.copytree(env["folder"], folder)
    out, s = tmp_path / "ce", TrainSettings(**{**TINY, "max_steps": 1, "data": ("qrels",)})
    train_cross_encoder(BeirDataset(folder, name="slice"), out, s)
    (out / "config.json").unlink()
    rows = (folder / "qrels" / "train.tsv").read_text().splitlines()
    moved = [rows[0]] + [f"{q}\t{rows[(i + 1) % (len(rows) - 1) + 1].split(chr(9))[1]}\t1" for i, q in
                         enumerate(r.split("\t")[0] for r in rows[1:])]   # each query judged relevant to another document
    (folder / "qrels" / "train.tsv").write_text("\n".join(moved) + "\n")
    with pytest.raises(ConfigError, match="trained on other examples from 'slice'"):
        train_cross_encoder(BeirDataset(folder, name="slice"), out, s.with_(max_steps=2, resume=True))


def test_resume_never_overwrites_a_model_it_has_no_checkpoint_of(env, tmp_path):
    """Review helper-59: --resume on a folder with a model but no checkpoints trained anew over it."""
    out, s = tmp_path / "ce", TrainSettings(**{**TINY, "max_steps": 1})
    train_cross_encoder(env["dataset"], out, s)
    shutil.rmtree(out / "checkpoints")
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds a model, and no checkpoint to resume; choose another output folder$"):
        train_cross_encoder(env["dataset"], out, s.with_(resume=True, seed=7))
    with pytest.raises(ConfigError, match="already holds a model; choose another output folder$"):
        train_cross_encoder(env["dataset"], out, s)   # no "--resume" advice where nothing can be resumed
    assert (out / "model.safetensors").read_bytes() == before


def test_label_free_training_needs_only_a_corpus_and_counts_steps_as_the_trainer_runs_them(env, tmp_path):
    """Review helper-59: a folder of a corpus alone was refused (its queries were hashed for resume), and two
    sources were counted as one (10 steps of 11: an interrupted last step could not be resumed)."""
    folder = tmp_path / "corpus-only"
    folder.mkdir()
    shutil.copy(env["folder"] / "corpus.jsonl", folder / "corpus.jsonl")
    s = TrainSettings(**{**TINY, "max_steps": -1, "epochs": 1, "batch_size": 5, "data": ("synthetic", "distill"), "teacher": "bm25"})
    record = train_cross_encoder(BeirDataset(folder, name="mine"), tmp_path / "ce", s)
    per_source = [-(-record.counts[n]["examples"] // 5) for n in ("synthetic", "distill")]
    assert record.steps == sum(per_source) and record.counts["synthetic"]["examples"] > 0


def test_a_training_dataset_with_another_corpus_is_refused(env, tmp_path):
    """Review helper-59: its judgments named documents by id, and were read against the collection's corpus."""
    docs = [{"_id": d["_id"], "title": "", "text": f"chocolate cake recipe {i}"} for i, d in
            enumerate(json.loads(line) for line in (env["folder"] / "corpus.jsonl").read_text().splitlines())]
    queries = [{"_id": f"c{i}", "text": f"chocolate cake recipe {i}"} for i in range(20)]
    cake = write_beir(tmp_path / "cake", docs, queries, {"test": [(f"c{i}", docs[i]["_id"], 1) for i in range(20)]})
    with pytest.raises(DataError, match="holds another corpus than scifact-slice; its judgments name documents by id"):
        labelled_queries(env["dataset"], training_split(env["dataset"], "train", str(cake)))


def test_cli_trains_on_all_three_sources_combined(env, tmp_path, capfd):
    out = tmp_path / "all"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["--quiet", "train", "cross-encoder", "--dataset", str(env["folder"]), "--out", str(out),
                     "--data", "qrels", "synthetic", "distill", "--teacher", "bm25", "--generator", "title",
                     "--num-documents", "12", "--clusters", "3", "--num-negatives", "2", "--negatives-depth", "10",
                     "--roundtrip-k", "10", "--teacher-depth", "10", "--teacher-docs", "3", "--batch-size", "4",
                     "--max-length", "64", "--max-steps", "2", "--save-steps", "5"])
    printed, err = capfd.readouterr()
    assert code == 0, err
    assert f"cross-encoder(model='{out}')" in printed
    # the expected notices of turning an encoder body into a cross-encoder on a CPU are not shown
    assert not any(n in err for n in ("not sharded", "newly initialized", "Converting")), err
    assert not [w for w in caught if "pin_memory" in str(w.message)]
    record = TrainingRecord.load(out)
    assert set(record.counts) == {"qrels", "synthetic", "distill"} and all(c["examples"] > 0 for c in record.counts.values())
    # each source's loss is logged apart (its own loss, on its own scale): a step logs its batch's source only
    by_step = {step: loss for step, loss in record.loss}
    logged = sorted((step, name, loss) for name, curve in record.loss_by_source.items() for step, loss in curve)
    assert set(record.loss_by_source) <= set(record.counts) and [s for s, _, _ in logged] == sorted(by_step)
    assert all(loss == pytest.approx(by_step[step], abs=1e-3) for step, _, loss in logged)
    assert (out / "loss.png").stat().st_size > 0


@pytest.mark.parametrize("native, warned", [(False, True), (True, False)])
def test_bf16_on_a_cpu_that_emulates_it_is_warned_about(monkeypatch, caplog, native, warned):
    """Emulated bf16 made a training step 20-26x slower than float32 on an AVX2 CPU: say so before training."""
    import torch

    import rerank.encoders
    from rerank.train.trainer import warn_slow_bf16

    monkeypatch.setattr(rerank.encoders, "native_bf16", lambda device=None: native)  # the CPU's flags, not a component
    expected = warned and not torch.cuda.is_available()
    assert warn_slow_bf16(True) is expected and ("emulated" in caplog.text) is expected
    assert warn_slow_bf16(False) is False


def test_llm_generator_settings_that_a_run_does_not_read_are_warned_about(caplog):
    from rerank.train.run import warn_unread

    warn_unread(TrainSettings(prompt="nosuch/prompt"))
    warn_unread(TrainSettings(backend="hf:other", data=("qrels",)))
    warn_unread(TrainSettings(prompt="nosuch/prompt", generator="llm"))  # read: no warning
    warn_unread(TrainSettings(train_dataset="irds:beir/scifact/train", teacher="bm25", distill_loss="listnet"))
    warn_unread(TrainSettings(train_dataset="x", teacher="bm25", data=("qrels", "distill")))  # read: no warning
    assert [r.getMessage() for r in caplog.records] == [
        "prompt (--prompt) is read only by the llm generator; generator='sentence': not read",
        "backend (--backend) is read only by the llm generator; no synthetic queries are made: not read",
        "train_dataset (--train-dataset): read only by --data qrels, which this run does not use: not read",  # review helper-59
        "teacher (--teacher), distill_loss (--distill-loss): read only by --data distill, which this run does not use: not read"]
