"""A cache keyed on a model never answers for other weights saved in the same place (a model trained
again, or resumed, into its folder): the index cache, the models loaded in a process, the LLM call
cache, teacher scores and a grid's saved cells. Real models, saved again with other weights."""

import gzip
import json
import os
import shutil

import pytest

from rerank.backends import load_backend
from rerank.bench import Grid, cell_path, run_grid
from rerank.data import load
from rerank.encoders import resolve_encoder
from rerank.index_cache import index_folder, indexed
from rerank.models import local_models, weights_stamp
from rerank.retrievers.dense import Dense
from rerank.train.distill import TeacherScores

pytestmark = pytest.mark.slow


def _perturbed(folder, kind):
    """Save the model in ``folder`` again with other weights, as a training run into it would."""
    import sentence_transformers as st
    import torch

    model = (st.SentenceTransformer if kind == "bi" else st.CrossEncoder)(str(folder), device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    model.save(str(folder))


@pytest.fixture
def minilm(tmp_path):
    """The offline MiniLM bi-encoder, copied into a folder of our own."""
    return shutil.copytree(resolve_encoder("all-MiniLM-L6-v2"), tmp_path / "minilm")


@pytest.fixture
def tiny(tmp_path):
    """A five-document BEIR folder."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    texts = ["cats purr and sleep", "dogs bark at cats", "fish swim in the sea", "birds sing", "cows eat grass"]
    with gzip.open(folder / "corpus.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "why do cats purr"}) + "\n")
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\n")
    return folder


def test_a_stamp_follows_the_files_of_a_local_model_and_only_them(minilm):
    assert weights_stamp("all-MiniLM-L6-v2") == "" == weights_stamp("org/not-a-folder")
    before = weights_stamp(minilm)
    assert len(before) == 16 and weights_stamp(minilm) == before
    (minilm / "checkpoints").mkdir()
    (minilm / "checkpoints" / "step-1").write_text("written while training")
    assert weights_stamp(minilm) == before                                  # checkpoints are not the model
    weights = minilm / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    after = weights_stamp(minilm)
    assert after != before and weights_stamp(weights) != ""                 # a single file (a .gguf) too
    expr = f"bm25 % 10 >> dense(model='{minilm}') >> listwise(backend=\"hf:{minilm}\", prompt='listwise/rankgpt')"
    assert local_models(expr) == {str(minilm): after, f"hf:{minilm}": after}
    with_options = f"yes-no(backend='hf:{weights}?dtype=float32') >> yes-no(backend='llamacpp:{weights}#n_ctx=4096')"
    assert set(local_models(with_options)) == {f"hf:{weights}?dtype=float32", f"llamacpp:{weights}#n_ctx=4096"}  # options cut off
    # review helper-66: a name written in pieces or with escapes is read as the expression is (a saved cell
    # answered for an edited prompt file)
    pieces = f"dense(model='{minilm.parent}/' '{minilm.name}') >> listwise(backend='hf:{str(minilm).replace('/', chr(92) + 'x2f')}')"
    assert local_models(pieces) == {str(minilm): after, f"hf:{minilm}": after}


def test_a_hub_id_is_stamped_with_the_revision_its_cache_resolves(tmp_path, monkeypatch):
    """Review helper-68: a dense index built at one revision of a hub model answered after the cache
    moved to another (document vectors of one, query vectors of the other)."""
    from huggingface_hub import constants

    from rerank.encoders import Encoder

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--acme--mini"
    for commit in ("aaaa1111", "bbbb2222"):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    assert weights_stamp("acme/mini") == ""  # no revision resolved yet
    (repo / "refs" / "main").write_text("aaaa1111")
    before = Encoder("acme/mini").identity("doc")
    assert weights_stamp("acme/mini") == "hub:aaaa1111" == before["weights"]
    (repo / "refs" / "main").write_text("bbbb2222")
    assert Encoder("acme/mini").identity("doc")["weights"] == "hub:bbbb2222"
    assert local_models("dense(model='acme/mini')") == {"acme/mini": "hub:bbbb2222"}


def test_a_dense_index_and_the_loaded_model_follow_weights_saved_again(minilm, tiny, tmp_path):
    cache = tmp_path / "cache"
    tiny = load(str(tiny))
    first = indexed(Dense(model=str(minilm)), tiny, cache)
    assert indexed(Dense(model=str(minilm)), tiny, cache).embeddings.tolist() == first.embeddings.tolist()  # a hit
    old_folder = index_folder(Dense(model=str(minilm)), tiny, cache)
    _perturbed(minilm, "bi")
    again = Dense(model=str(minilm))
    assert index_folder(again, tiny, cache) != old_folder
    rebuilt = indexed(again, tiny, cache)
    assert rebuilt.embeddings.tolist() != first.embeddings.tolist()       # encoded anew, by the new weights


def test_a_grid_cell_and_teacher_scores_with_a_model_folder_run_again_after_it_changes(minilm, tiny, tmp_path):
    import sentence_transformers as st

    ce = tmp_path / "ce"
    st.CrossEncoder(str(minilm), num_labels=1, device="cpu").save(str(ce))
    expr = f"bm25 % 3 >> cross-encoder(model='{ce}')"
    grid = Grid.from_dict({"grid": {"metrics": ["ndcg@10"]}, "datasets": [{"name": str(tiny), "label": "tiny"}],
                           "pipelines": {"CE": expr}}, name="stamps")
    tiny = load(str(tiny))
    teacher = TeacherScores(expr, tiny, depth=3, cache=tmp_path / "calls.sqlite")
    key = teacher._key("q1", "why do cats purr")
    out = tmp_path / "bench"
    record = cell_path(out, "tiny", "CE").with_suffix(".json")
    run_grid(grid, out, progress=False)
    started, scores = json.loads(record.read_text())["started"], cell_path(out, "tiny", "CE").read_text()
    run_grid(grid, out, progress=False)
    assert json.loads(record.read_text())["started"] == started             # unchanged model: the cell stands
    _perturbed(ce, "cross")
    run_grid(grid, out, progress=False)
    assert json.loads(record.read_text())["started"] != started             # new weights: run again
    assert cell_path(out, "tiny", "CE").read_text() != scores
    assert TeacherScores(expr, tiny, depth=3, cache=tmp_path / "calls.sqlite")._key("q1", "why do cats purr") != key


def test_a_backend_of_a_model_folder_loads_again_and_caches_apart_after_it_changes(smollm2_dense_dir, tmp_path):
    folder = tmp_path / "smol"
    folder.mkdir()
    for f in os.listdir(smollm2_dense_dir):                                 # the weights linked, not copied
        (folder / f).symlink_to(os.path.join(smollm2_dense_dir, f))
    first = load_backend(f"hf:{folder}?dtype=float32")
    assert load_backend(f"hf:{folder}?dtype=float32") is first
    config = folder / "generation_config.json"
    config.unlink()
    shutil.copy(os.path.join(smollm2_dense_dir, "generation_config.json"), config)   # saved again
    second = load_backend(f"hf:{folder}?dtype=float32")
    assert second is not first and second.cache_id != first.cache_id
    assert first.cache_id.startswith(f"hf:{folder}:float32@")
    first.close()
    second.close()


def test_teacher_scores_reading_a_shipped_run_are_asked_anew_after_it_is_edited(tiny, tmp_path):
    run = tiny / "run.bm25.top100.trec.gz"
    with gzip.open(run, "wt") as f:
        f.write("q1 Q0 d0 1 9.0 bm25\nq1 Q0 d1 2 5.0 bm25\n")
    cache = tmp_path / "calls.sqlite"
    first = TeacherScores("run('bm25')", load(str(tiny)), depth=2, cache=cache).scores({"q1": "why do cats purr"})
    assert first["q1"][0] == ("d0", 9.0)
    with gzip.open(run, "wt") as f:                                         # edited in place; the corpus is the same
        f.write("q1 Q0 d1 1 7.0 bm25\nq1 Q0 d0 2 2.0 bm25\n")
    teacher = TeacherScores("run('bm25')", load(str(tiny)), depth=2, cache=cache)
    assert teacher.scores({"q1": "why do cats purr"})["q1"][0] == ("d1", 7.0) and teacher.hits == 0


def test_teacher_scores_of_two_queries_with_one_text_are_kept_apart(tiny, tmp_path):
    """A run answers by query id: two ids with one text must get their own scores, in one call or two."""
    (tiny / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": "why do cats purr"}) + "\n" for q in ("q1", "q3")))
    with gzip.open(tiny / "run.bm25.top100.trec.gz", "wt") as f:
        f.write("q1 Q0 d0 1 9.0 bm25\nq1 Q0 d1 2 5.0 bm25\nq3 Q0 d4 1 8.0 bm25\nq3 Q0 d3 2 4.0 bm25\n")
    cache = tmp_path / "calls.sqlite"
    teacher = TeacherScores("run('bm25')", load(str(tiny)), depth=2, cache=cache)
    assert teacher.scores({"q1": "why do cats purr"})["q1"] == [("d0", 9.0), ("d1", 5.0)]
    assert teacher.scores({"q3": "why do cats purr"})["q3"] == [("d4", 8.0), ("d3", 4.0)]  # not q1's, from the cache
    both = TeacherScores("bm25", load(str(tiny)), depth=2, cache=cache).scores({"q1": "why do cats purr", "q3": "why do cats purr"})
    assert both["q1"] == both["q3"] and len(both["q1"]) == 2  # one list each, not one merged list


def test_backend_settings_that_change_answers_are_in_the_call_cache_key():
    from rerank.backends.base import weights_suffix
    from rerank.backends.llamacpp import LlamaCppBackend
    from rerank.backends.openai import OpenAIBackend
    from rerank.models import local_gguf

    packaged = local_gguf("smollm2")
    assert weights_suffix("smollm2") == (f"@{weights_stamp(packaged)}" if packaged else "")  # the file an alias loads
    assert local_models("listwise(backend='hf:smollm2')") == ({"hf:smollm2": weights_stamp(packaged)} if packaged else {})
    plain, seeded = LlamaCppBackend("smollm2"), LlamaCppBackend("smollm2", seed=7)
    templated = LlamaCppBackend("smollm2", chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert plain.cache_id == f"llamacpp:{plain.path.name}{weights_suffix('smollm2')}"
    assert len({plain.cache_id, seeded.cache_id, templated.cache_id}) == 3
    for backend in (plain, seeded, templated):
        backend.close()
    url = "http://127.0.0.1:9/v1"                                           # never called: the model is named
    variants = [{}, {"extra_body": {"top_k": 1}}, {"top_logprobs": 1}, {"guided": "off"}, {"tokenizer": "smollm2"}]
    ids = [OpenAIBackend("m", base_url=url, **kw).cache_id for kw in variants]
    assert ids[0] == f"openai:{url}#m" and len(set(ids)) == len(variants)


def test_an_openai_backend_rendering_with_a_tokenizer_folder_caches_apart_after_it_is_saved_again(smollm2_dense_dir, tmp_path):
    """The local tokenizer renders chat prompts, so its chat template changes what the server is sent."""
    from rerank.backends.openai import OpenAIBackend

    folder = tmp_path / "tok"
    shutil.copytree(smollm2_dense_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.gguf"))
    url = "http://127.0.0.1:9/v1"                                           # never called: the model is named
    first = OpenAIBackend("m", base_url=url, tokenizer=str(folder)).cache_id
    assert OpenAIBackend("m", base_url=url, tokenizer=str(folder)).cache_id == first
    config = folder / "tokenizer_config.json"
    config.write_text(config.read_text())                                   # saved again (another chat template, maybe)
    assert OpenAIBackend("m", base_url=url, tokenizer=str(folder)).cache_id != first


def test_converted_weights_of_an_alias_are_reused_only_for_the_same_gguf(tmp_path):
    from rerank.models import dense_location, local_gguf

    packaged = local_gguf("smollm2")
    if packaged is None:
        pytest.skip("the packaged SmolLM2 GGUF is not installed")
    old = tmp_path / "models" / "smollm2-bfloat16"                         # converted from another GGUF, unstamped
    current = tmp_path / "models" / f"smollm2-bfloat16-{weights_stamp(packaged)}"
    for folder in (old, current):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    assert dense_location("smollm2", "bfloat16", tmp_path) == str(current)


def test_an_empty_model_name_stamps_nothing_rather_than_the_working_directory(tmp_path, monkeypatch):
    """``Path("")`` is the working directory: ``HFBackend("")`` hashed every file under it before failing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a model")
    assert weights_stamp("") == weights_stamp("  ") == "" and weights_stamp(".") != ""


def test_a_stamp_sees_files_under_linked_folders_once_each(tmp_path):
    from rerank.models import files_stamp

    (tmp_path / "real_qrels").mkdir()
    (tmp_path / "real_qrels" / "test.tsv").write_text("q1\td1\t1\n")
    data = tmp_path / "ds"
    data.mkdir()
    (data / "qrels").symlink_to(tmp_path / "real_qrels")
    (data / "loop").symlink_to(data)  # a cycle is walked once
    before = files_stamp(data)
    (tmp_path / "real_qrels" / "test.tsv").write_text("q1\td2\t1\n")
    assert before and files_stamp(data) != before


# -- what a stage resolves to on this machine (review helper-53) ------------------------------------
def test_a_default_backend_and_an_openai_server_from_the_environment_are_in_the_keys(monkeypatch):
    from rerank.models import resolved_stamps

    assert resolved_stamps("bm25 % 4 >> yes-no") == [{"stage": "YesNo", "backend": {
        "spec": "hf:smollm2", "weights": weights_stamp("smollm2"), "gpu": False}}]    # the default names no model
    monkeypatch.setenv("OPENAI_BASE_URL", "http://user:s3cret@127.0.0.1:9/v1?key=abc")
    first = resolved_stamps("bm25 >> yes-no(backend='openai:m')")
    server = first[0]["backend"]["server"]
    assert server.startswith("http://127.0.0.1:9/v1?sha256=") and "s3cret" not in server and "abc" not in server  # records are shared
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert resolved_stamps("bm25 >> yes-no(backend='openai:m')") != first
    first = resolved_stamps("bm25 >> yes-no(backend='openai:m')")
    a = load_backend("openai:m")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:10/v1")
    assert resolved_stamps("bm25 >> yes-no(backend='openai:m')") != first
    assert load_backend("openai:m").base_url == "http://127.0.0.1:10/v1" != a.base_url  # not the first server's


def test_a_grid_cell_and_an_index_follow_the_runtime_auto_resolves_to(monkeypatch, tmp_path):
    """A results folder or cache copied to a machine without bfloat16 must not answer with bf16 numbers."""
    import rerank.encoders as encoders
    from rerank.models import resolved_stamps
    from rerank.runner import DatasetSpec, Runner

    tiny = load("scifact")
    runner = Runner({"D": "dense"}, [DatasetSpec("scifact")])
    monkeypatch.setattr(encoders, "native_bf16", lambda device=None: True)
    bf16 = (resolved_stamps("dense"), runner.saved_settings(runner.cells()[0]), index_folder(Dense(), tiny, tmp_path))
    monkeypatch.setattr(encoders, "native_bf16", lambda device=None: False)
    runner = Runner({"D": "dense"}, [DatasetSpec("scifact")])
    f32 = (resolved_stamps("dense"), runner.saved_settings(runner.cells()[0]), index_folder(Dense(), tiny, tmp_path))
    assert bf16[0][0]["encoder"]["runtime"] == "bf16" and f32[0][0]["encoder"]["runtime"] == "torch"
    assert bf16[1] != f32[1] and bf16[2] != f32[2]


def test_a_packaged_encoders_identity_names_its_files_the_same_on_every_machine(tmp_path):
    """Prebuilt embeddings record it; another version of the package (other pooling, other weights) differs."""
    from rerank.encoders import Encoder
    from rerank.models import content_stamp, files_stamp

    packaged = resolve_encoder("all-MiniLM-L6-v2")
    stamp = Encoder().identity("doc")["weights"]
    assert stamp == "package:" + content_stamp(packaged, files_stamp(packaged))
    copy = shutil.copytree(packaged, tmp_path / "copy")
    assert content_stamp(str(copy), files_stamp(copy)) == stamp.removeprefix("package:")   # where it lies is no part
    pooling = copy / "1_Pooling" / "config.json"
    pooling.write_text(pooling.read_text().replace('"pooling_mode_cls_token": false', '"pooling_mode_cls_token": true'))
    assert content_stamp(str(copy), files_stamp(copy)) != stamp.removeprefix("package:")


def test_a_cell_records_what_its_stages_resolved_to_where_it_ran(tiny, tmp_path, monkeypatch, caplog):
    """On Ray a worker may resolve "auto" otherwise than the driver: the record says what it ran with and
    the driver warns; the cell is saved under the driver's settings, so that a resume there finds it."""
    import rerank.encoders as encoders
    from rerank.runner import Cell, DatasetSpec, Runner, Settings, run_cell

    monkeypatch.setenv("RERANK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(encoders, "native_bf16", lambda device=None: False)
    record = run_cell(Cell(DatasetSpec(str(tiny)), "D", "dense", Settings(limit=1)))   # a worker without bf16
    assert record.ok and record.ran_with[0]["encoder"]["runtime"] == "torch"
    monkeypatch.setattr(encoders, "native_bf16", lambda device=None: True)             # the driver has it
    runner = Runner({"D": "dense"}, [DatasetSpec(str(tiny))], Settings(limit=1), out=tmp_path / "out")
    runner._save(runner._same_data(record))
    assert "ran where its stages resolve otherwise than here" in caplog.text
    assert runner.saved(runner.cells()[0]).status == "ok"                               # a resume here finds it


def test_a_stage_whose_stamps_cannot_be_read_here_is_marked_and_still_runs(tiny, tmp_path, monkeypatch):
    """A Ray head without torch, say: stamping never fails the experiment (review helper-56)."""
    import rerank.encoders as encoders
    from rerank.errors import MissingDependency
    from rerank.models import resolved_stamps
    from rerank.runner import DatasetSpec, Runner, Settings

    def no_torch(device=None):
        raise MissingDependency("torch is not installed")

    monkeypatch.setattr(encoders, "native_bf16", no_torch)
    assert resolved_stamps("bm25 >> dense") == [{"stage": "Dense", "unresolved": "MissingDependency: torch is not installed"}]
    runner = Runner({"B": "bm25"}, [DatasetSpec(str(tiny))], Settings(limit=1), out=tmp_path / "out")
    assert runner.saved_settings(runner.cells()[0])["data"]                              # the key is made
