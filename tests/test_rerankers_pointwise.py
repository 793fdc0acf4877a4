"""Pointwise rerankers: cross-encoder and bi-encoder on real (offline) MiniLM weights, the yes/no and
ERank scoring arithmetic on a FakeBackend, then SmolLM2-135M on TREC-DL 2019 (marked slow).

No cross-encoder checkpoint installs offline, so the cross-encoder tests build a real one: the
offline all-MiniLM-L6-v2 BERT with a fresh (untrained) one-score head, saved and loaded by path.
They check mechanics (shapes, batching, MaxP vs truncation, order, empty input), not effectiveness.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from rerank import Ranking, get
from rerank.backends.fake import FakeBackend
from rerank.errors import ConfigError
from rerank.prompts import load as load_prompt
from rerank.encoders import DEFAULT_ENCODER, resolve_encoder
from rerank.rerankers.biencoder import BiEncoderReranker
from rerank.expr import build
from rerank.rerankers.cross_encoder import CrossEncoderReranker
from rerank.rerankers.e2rank import E2Rank
from rerank.rerankers._parsing import parse_rating, parse_yes_no
from rerank.rerankers.pointwise import ERank, YesNo

FLEA = "how long is the life cycle of a flea"
FLEA_DOC = "The life cycle of a flea lasts from two weeks to several months, depending on temperature."
OFF_TOPIC = ["The stock market fell sharply on Monday after the announcement.", "Paris is the capital of France."]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory) -> str:
    """Folder of a real BERT cross-encoder (MiniLM body, untrained head) built offline."""
    from sentence_transformers import CrossEncoder

    folder = tmp_path_factory.mktemp("tiny-ce")
    CrossEncoder(resolve_encoder(DEFAULT_ENCODER), num_labels=1).save(str(folder))
    return str(folder)


def long_doc(words: int = 200, tail: str = "") -> str:
    return " ".join(f"filler{i}" for i in range(words)) + tail


# -- cross-encoder --------------------------------------------------------------------------------
def test_cross_encoder_scores_agree_with_sentence_transformers(tiny_cross_encoder):
    from sentence_transformers import CrossEncoder

    docs = [FLEA_DOC, *OFF_TOPIC]
    ce = CrossEncoderReranker(tiny_cross_encoder, batch_size=2)
    res = ce.rerank(FLEA, docs)
    direct = CrossEncoder(tiny_cross_encoder).predict([(FLEA, d) for d in docs])
    assert sorted(res.docids) == ["0", "1", "2"]
    assert [r.score for r in res] == pytest.approx(sorted(direct.tolist(), reverse=True), abs=1e-5)
    assert res.docids == [str(i) for i in np.argsort(-direct, kind="stable")]
    assert res.info == {"long_documents": 0, "truncated": 0}


def test_cross_encoder_batch_size_does_not_change_scores(tiny_cross_encoder, dl19_top10):
    one = CrossEncoderReranker(tiny_cross_encoder, batch_size=1)(dl19_top10).to_pandas()
    many = CrossEncoderReranker(tiny_cross_encoder, batch_size=64)(dl19_top10).to_pandas()
    assert one[["qid", "docid"]].values.tolist() == many[["qid", "docid"]].values.tolist()
    np.testing.assert_allclose(one["score"], many["score"], atol=1e-5)
    assert len(one) == len(dl19_top10) and set(one["qid"]) == set(dl19_top10.to_pandas()["qid"])


def test_truncation_is_stated_and_counted(tiny_cross_encoder, caplog):
    docs = [FLEA_DOC, long_doc(), long_doc(300)]
    ce = CrossEncoderReranker(tiny_cross_encoder, max_length=48, truncation="truncate")
    with caplog.at_level(logging.WARNING, logger="rerank"):
        res = ce.rerank(FLEA, docs)
    assert res.info == {"long_documents": 2, "truncated": 2}
    assert "2 of 3 documents exceed 48 tokens and were truncated" in caplog.text


def test_maxp_scores_every_passage_and_keeps_the_best(tiny_cross_encoder):
    from sentence_transformers import CrossEncoder

    doc = long_doc(120, tail=" " + FLEA_DOC)
    ce = CrossEncoderReranker(tiny_cross_encoder, max_length=48, truncation="maxp", stride=10)
    passages = ce._passages(FLEA, doc)
    assert len(passages) > 5 and passages[-1].endswith("temperature.")
    assert doc.startswith(passages[0]) and all(p in doc for p in passages)
    room = ce._room(FLEA)
    assert all(len(ce.encoder.tokenizer(p, add_special_tokens=False)["input_ids"]) <= room for p in passages)
    expected = CrossEncoder(tiny_cross_encoder, max_length=48).predict([(FLEA, p) for p in passages]).max()
    res = ce.rerank(FLEA, [doc, FLEA_DOC])
    assert res.get("0").score == pytest.approx(float(expected), abs=1e-5)
    assert res.info == {"long_documents": 1, "truncated": 0}
    head_only = CrossEncoderReranker(tiny_cross_encoder, max_length=48, truncation="truncate").rerank(FLEA, [doc])
    assert res.get("0").score >= head_only[0].score - 1e-6


def test_cross_encoder_empty_input_and_config_errors(tiny_cross_encoder):
    ce = CrossEncoderReranker(tiny_cross_encoder)
    assert len(ce.rerank(FLEA, [])) == 0
    assert len(ce(Ranking.empty().assign(text=[]))) == 0
    with pytest.raises(ConfigError, match="choose one of"):
        CrossEncoderReranker(tiny_cross_encoder, truncation="silent")
    with pytest.raises(ConfigError, match="shorten it or raise max_length"):
        CrossEncoderReranker(tiny_cross_encoder, max_length=8).rerank(FLEA, [FLEA_DOC])
    assert get("reranker", "cross-encoder").model == "cross-encoder/ms-marco-MiniLM-L-6-v2"


def test_cross_encoder_bounds_name_the_setting_at_fault(tiny_cross_encoder, caplog):   # review helper-68
    with pytest.raises(ConfigError, match="^CrossEncoderReranker: max_length must be >= 8, got 7$"):
        CrossEncoderReranker(tiny_cross_encoder, max_length=7)
    with pytest.raises(ConfigError, match="^CrossEncoderReranker: stride must be >= 1, got 0$"):
        CrossEncoderReranker(tiny_cross_encoder, stride=0)
    for expression, limit in (("cross-encoder(max_length=0)", 8), ("e2rank(max_length=2)", 16)):  # an expression said >= 2
        with pytest.raises(ConfigError, match=f"max_length must be >= {limit}, got"):
            build(expression)
    with pytest.raises(ConfigError, match="^E2Rank: max_length must be >= 16, got 8$"):
        E2Rank(max_length=8)
    with pytest.raises(ConfigError, match="^max_length=600 exceeds the 512 positions of "):   # not torch's size mismatch
        CrossEncoderReranker(tiny_cross_encoder, max_length=600).rerank(FLEA, [long_doc(700)])
    wide = CrossEncoderReranker(tiny_cross_encoder, max_length=32, stride=1000)
    with caplog.at_level(logging.WARNING, logger="rerank"):  # passages a passage apart: no text unread (helper-77: it stopped the run)
        assert len(wide.rerank(FLEA, ["Fleas bite.", long_doc(200)])) == 2
    assert "stride=1000 is longer than a passage next to a query of this length" in caplog.text
    assert wide._passages(FLEA, long_doc(200)) == CrossEncoderReranker(tiny_cross_encoder, max_length=32, stride=wide._room(FLEA))._passages(FLEA, long_doc(200))


def test_a_model_of_the_other_kind_is_refused_not_scored_at_random(tiny_cross_encoder, tmp_path):   # review helper-68
    from transformers import AutoModel, AutoTokenizer

    bi, body, hf_ce = resolve_encoder(DEFAULT_ENCODER), tmp_path / "body", tmp_path / "hf-ce"
    AutoModel.from_pretrained(bi).save_pretrained(body)   # plain transformers checkpoints, no sentence-transformers files
    CrossEncoderReranker(tiny_cross_encoder).encoder.model.save_pretrained(hf_ce)
    for folder in (body, hf_ce):
        AutoTokenizer.from_pretrained(bi).save_pretrained(folder)
    for name in (bi, "minilm"):
        with pytest.raises(ConfigError, match=r"is a bi-encoder \(its modules.json has a Pooling module\), not a cross-encoder"):
            CrossEncoderReranker(name).rerank(FLEA, [FLEA_DOC])
    with pytest.raises(ConfigError, match=r"is a model with no scoring head \(its config.json names BertModel\).*rerank train"):
        CrossEncoderReranker(str(body)).rerank(FLEA, [FLEA_DOC])
    with pytest.raises(ConfigError, match="is a cross-encoder .*model_type CrossEncoder.*, not a bi-encoder"):
        BiEncoderReranker(tiny_cross_encoder).rerank(FLEA, [FLEA_DOC])
    with pytest.raises(ConfigError, match=r"is a cross-encoder \(its config.json names BertForSequenceClassification\)"):
        BiEncoderReranker(str(hf_ce)).rerank(FLEA, [FLEA_DOC])
    assert len(CrossEncoderReranker(str(hf_ce)).rerank(FLEA, [FLEA_DOC])) == 1   # a transformers cross-encoder loads
    assert len(BiEncoderReranker(str(body)).rerank(FLEA, [FLEA_DOC])) == 1      # a bare body gets mean pooling, as before


# -- bi-encoder -------------------------------------------------------------------------------------
def test_biencoder_ranks_the_on_topic_passage_first_and_counts_truncation(dl19_top10):
    bi = BiEncoderReranker(batch_size=4)
    res = bi.rerank(FLEA, [*OFF_TOPIC, long_doc(400), FLEA_DOC])
    assert res.docids[0] == "3" and res.info == {"truncated": 1, "query_tokens_cut": 0}
    assert all(-1.0 <= r.score <= 1.0 + 1e-6 for r in res)
    out = (get("reranker", "biencoder") % 3)(dl19_top10)
    assert len(out) == 6 and np.isfinite(out.to_pandas()["score"]).all()


# -- LLM pointwise: scoring arithmetic on a fake backend -------------------------------------------
def test_yes_no_score_is_the_normalized_log_probability_of_yes():
    logps = {"flea": [math.log(0.6), math.log(0.2)], "stock": [math.log(0.1), math.log(0.7)], "Paris": [-9.0, -1.0]}
    backend = FakeBackend(score=lambda p, opts: next(v for k, v in logps.items() if k in p.split("Document:")[1]))
    res = YesNo(backend).rerank(FLEA, [*OFF_TOPIC, FLEA_DOC])
    assert res.docids == ["2", "0", "1"]
    assert res[0].score == pytest.approx(math.log(0.6 / 0.8))
    assert res.get("0").score == pytest.approx(math.log(0.1 / 0.8))


def test_erank_score_is_the_expected_rating():
    probs = np.array([0.0] * 8 + [0.5, 0.0, 0.5]) + 1e-12  # half "8", half "10"
    backend = FakeBackend(score=lambda p, opts: np.log(probs if "flea" in p.split("Document:")[1] else probs[::-1]))
    res = ERank(backend).rerank(FLEA, [OFF_TOPIC[0], FLEA_DOC])
    assert res.docids == ["1", "0"]
    assert res[0].score == pytest.approx(9.0, abs=1e-6) and res[1].score == pytest.approx(1.0, abs=1e-6)
    assert load_prompt("pointwise/fine_grained").options == tuple(str(i) for i in range(11))


def test_pairs_of_all_queries_share_backend_calls():
    calls: list[int] = []

    class Counting(FakeBackend):
        def score(self, prompts, options):
            calls.append(len(prompts))
            return super().score(prompts, options)

    inp = Ranking.from_records([(q, f"query {q}", f"d{i}", -i) for q in ("a", "b", "c") for i in range(5)]).assign(text="some passage")
    out = YesNo(Counting(score=lambda p, o: [0.0, -1.0]), batch_size=8)(inp)
    assert calls == [8, 7] and len(out) == 15


def test_generate_method_parses_answers_and_counts_failures():
    answers = {"flea": "Yes.", "stock": "No", "Paris": "I cannot tell"}
    backend = FakeBackend(generate=lambda p: next(v for k, v in answers.items() if k in p.split("Document:")[1]))
    res = YesNo(backend, method="generate").rerank(FLEA, [*OFF_TOPIC, FLEA_DOC])
    assert res.docids == ["2", "0", "1"] and [r.score for r in res] == [1.0, 0.0, -1.0]  # unreadable below "No" (review helper-61)
    assert res.info["parse"] == {"answers": 3, "valid": 2, "repaired": 1, "problems": {"empty": 1}}
    assert parse_yes_no("yes").value == 1.0 and parse_rating("Relevance: 7/10").value == 7.0
    assert parse_rating("I cannot tell").value == parse_yes_no("maybe").value == -np.inf


def test_user_prompt_override_and_option_checks(tmp_path):
    custom = tmp_path / "mine.yaml"
    custom.write_text("name: mine\nparadigm: pointwise\nprefix: 'Q: {query} D: {text} Relevant?'\noptions: [' true', ' false']\nparser: yes_no\n")
    backend = FakeBackend(score=lambda p, o: [0.0, -1.0])
    judge = YesNo(backend, prompt=str(custom))
    judge.rerank("q", ["d"])
    assert backend.calls == ["Q: q D: d Relevant?"]
    with pytest.raises(ConfigError, match="two options"):
        YesNo(backend, prompt="pointwise/fine_grained")
    reversed_ = tmp_path / "reversed.yaml"  # scored, P('No') would be the relevance; generated, a 'yes' is 1.0
    reversed_.write_text(custom.read_text().replace("[' true', ' false']", "[' No', ' Yes']"))
    with pytest.raises(ConfigError, match="reads option ' Yes' above ' No', but the log-probability read takes the first option to mean relevant"):
        YesNo(backend, prompt=str(reversed_))
    with pytest.raises(ConfigError, match="numeric options"):
        ERank(backend, prompt="pointwise/yes_no")
    with pytest.raises(ConfigError, match="paradigm"):
        YesNo(backend, prompt="pairwise/prp")
    with pytest.raises(ConfigError, match="choose one of"):
        YesNo(backend, method="sample")


def test_long_documents_are_cut_and_counted():
    backend = FakeBackend(score=lambda p, o: [0.0, -1.0])
    res = YesNo(backend, max_words=20).rerank("q", [long_doc(50), "short"])
    assert res.info["truncated"] == 1 and "filler20" not in backend.calls[0] + backend.calls[1]


def test_repr_names_the_settings_and_reranker_state_is_not_changed_by_calls():
    backend = FakeBackend(score=lambda p, o: [0.0, -1.0])
    judge = YesNo(backend, batch_size=4)
    before = repr(judge)
    judge.rerank("q", ["a", "b"])
    assert repr(judge) == before and "batch_size=4" in before
    assert repr(get("reranker", "erank", backend=backend)).startswith("ERank(")


# -- end to end: SmolLM2-135M on TREC-DL 2019 -------------------------------------------------------
@pytest.mark.slow
def test_yes_no_moves_the_relevant_passage_up_on_easy_cases(smollm2):
    cases = [(FLEA, FLEA_DOC, OFF_TOPIC[0]),
             ("What is the capital of France?", "Paris is the capital and largest city of France.",
              "Bananas are a yellow fruit rich in potassium.")]
    inp = Ranking.from_records([(f"q{k}", q, d, s) for k, (q, rel, irr) in enumerate(cases)
                                for d, s in (("irrelevant", 2.0), ("relevant", 1.0))])
    texts = {(f"q{k}", d): t for k, (_, rel, irr) in enumerate(cases) for d, t in (("relevant", rel), ("irrelevant", irr))}
    inp = inp.assign(text=[texts[k] for k in zip(inp.to_pandas()["qid"], inp.to_pandas()["docid"])])
    out = YesNo(smollm2)(inp).to_pandas()
    assert out[out["rank"] == 1]["docid"].tolist() == ["relevant", "relevant"]


@pytest.mark.slow
@pytest.mark.parametrize("name, depth", [("yes-no", 5), ("erank", 3)])  # ERank: 11 options, "10" is 2 tokens
def test_end_to_end_on_trec_dl(smollm2, dl19_top10, name, depth):
    top = dl19_top10.top(depth)
    out = (get("reranker", name, backend=smollm2) % 2)(top).to_pandas()
    assert len(out) == 4 and np.isfinite(out["score"]).all()
    for qid, group in out.groupby("qid"):
        assert group["rank"].tolist() == [1, 2]
        assert set(group["docid"]) <= set(top.select([qid]).to_pandas()["docid"])
    if name == "erank":
        assert out["score"].between(0, 10).all()


@pytest.mark.slow
def test_yes_no_and_erank_through_llamacpp(llamacpp_smollm2, smollm2, dl19_top10):
    """The same GGUF on llama.cpp: finite scores, and log-probs close to the HF backend's (same weights)."""
    top = dl19_top10.top(2)
    for name in ("yes-no", "erank"):
        out = get("reranker", name, backend=llamacpp_smollm2)(top).to_pandas()
        assert len(out) == 4 and np.isfinite(out["score"]).all()
    docs = [FLEA_DOC, OFF_TOPIC[0]]
    via_llamacpp = [r.score for r in sorted(YesNo(llamacpp_smollm2).rerank(FLEA, docs), key=lambda r: r.docid)]
    via_hf = [r.score for r in sorted(YesNo(smollm2).rerank(FLEA, docs), key=lambda r: r.docid)]
    assert via_llamacpp == pytest.approx(via_hf, abs=0.3)


def test_few_shot_examples_are_chat_turns_checked_at_load(tmp_path):
    head = "name: shots\nparadigm: pointwise\nprefix: 'Q: {query} D: {text} Relevant?'\noptions: [' yes', ' no']\nparser: yes_no\n"
    good = tmp_path / "shots.yaml"
    good.write_text(head + "examples:\n  - {query: fleas, text: Fleas bite dogs., answer: ' yes'}\n")
    messages = load_prompt(str(good)).render("q", text="d")
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert [m["content"] for m in messages] == ["Q: fleas D: Fleas bite dogs. Relevant?", " yes", "Q: q D: d Relevant?"]
    backend = FakeBackend(score=lambda p, o: [0.0, -1.0])
    YesNo(backend, prompt=str(good)).rerank("q", ["d"])
    assert backend.calls == ["Q: fleas D: Fleas bite dogs. Relevant?\n yes\nQ: q D: d Relevant?"]
    bad = {
        "- just a string": "mapping of placeholder values",
        "- {query: fleas, text: x}": "non-empty text answer",
        "- {query: fleas, text: x, answer: ''}": "non-empty text answer",
        "- {query: fleas, text: x, answer: [yes]}": "non-empty text answer",
        "- {query: fleas, text: x, answer: yes}": "quote answers",
        "- {query: fleas, text: x, answer: .nan}": "non-empty text answer",
        "- {query: fleas, answer: ' yes'}": r"example 1: .*\{text\}",
        "- {query: fleas, text: x, answer: ' yes', items: 3}": "items must be a list",
    }
    for example, message in bad.items():
        (tmp_path / "bad.yaml").write_text(head + "examples:\n  " + example + "\n")
        with pytest.raises(ConfigError, match=message):
            load_prompt(str(tmp_path / "bad.yaml"))
