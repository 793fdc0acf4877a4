"""Bad pipeline expressions and stage parameters: one line naming the problem, never a silent change."""

import os
import subprocess
import sys

import pytest

from rerank.errors import ConfigError
from rerank.expr import build
from rerank.params import check_arguments
from rerank.retrievers.bm25 import BM25


def test_an_expression_is_text_and_may_span_lines():
    assert repr(build("bm25 % 10\n  >> cross-encoder  # rerank the top 10")) == "BM25() >> Cutoff(10) >> CrossEncoderReranker()"
    for bad in (5, None, ["bm25"], "  "):
        with pytest.raises(ConfigError, match="text|empty"):
            build(bad)


def test_strings_are_kept_verbatim_and_hyphenated_names_still_work():
    assert build("bm25(pattern='(foo-bar)')").pattern == "(foo-bar)"
    assert build('bm25(stemmer="english", pattern="a-b - c-d")').pattern == "a-b - c-d"
    pipeline = build("cross-encoder % 5 >> rank-r1(backend='openai:http://127.0.0.1:8000/v1#rank-r1-7b', set_size=3)")
    assert pipeline.stages[-1].backend == "openai:http://127.0.0.1:8000/v1#rank-r1-7b"
    assert repr(build("yes-no")) == "YesNo()"


@pytest.mark.parametrize("expr, message", [
    ("bm25(**{'k1': 1.2})", r"'\*\*' argument unpacking is not supported"),
    ("bm25(*[1.2])", r"'\*' argument unpacking is not supported"),
    ("bm25 % True", "'%' needs an integer, got 'True'"),
    ("bm25 % 1.0", "'%' needs an integer, got '1.0'"),
    ("bm25 % -1", "positive integer"),
    ("bm25 + dense", "'bm25 \\+ dense' is not supported"),
    ("bm25 - dense", "'bm25 - dense' is not supported"),
    ("-bm25", "'-bm25' is not supported"),
    ("bm25 >> -cross-encoder", "'-cross-encoder' is not supported"),  # review helper-66: quoted as -cross_encoder
    ("bm25.x", "'bm25.x' is not a stage"),
    ("bm25()()", "'bm25\\(\\)\\(\\)' is not a stage"),
    ("5 % bm25", "'5' is not a stage"),
    ("bm25 if True else dense", "is not a stage"),
    ("bm25(k1={1, 2})", "literal values"),
    ("bm25(k1=b'x')", "literal values"),
    ("bm25(k1=f'{1}')", "literal values"),
    ("bm25(k1=dense)", "literal values"),
    ("bm25(k1={1: 2})", "literal values"),
    ("bm25(k1=1.2, k1=1.3)", "bm25\\(\\): argument 'k1' is given more than once"),
    ("fusion(weights={'a': 1, 'a': 2})", "a dict argument repeats a key"),
    ("bm25) >> (dense", "unmatched '\\)'"),
    ("bm25\x00", "null bytes"),
    (" >> ".join(["bm25"] * 5000), "too long or too deeply nested"),
])
def test_unsupported_syntax_is_refused_by_name(expr, message):
    with pytest.raises(ConfigError, match=message) as e:
        build(expr)
    assert "\n" not in str(e.value) and repr(expr)[:40] in str(e.value)


@pytest.mark.parametrize("expr, message", [
    ("listwise(window=10)", r"^Listwise: step \(10\) must be smaller than window \(10\) .* in 'listwise\(window=10\)'$"),
    ("setwise(set_size=27)", r"^Setwise: set_size must be between 2 and 26, got 27 in 'setwise\(set_size=27\)'$"),
    ("insertrank(score_range=[5, 1])", r"^InsertRank: score_range must be finite .* in 'insertrank\(score_range=\[5, 1\]\)'$"),
])
def test_a_check_the_stage_makes_across_its_arguments_names_the_expression(expr, message):
    with pytest.raises(ConfigError, match=message):
        build(expr)


@pytest.mark.parametrize("expr, message", [
    ("bm25(k1='abc')", "bm25: k1 must be a number or None, got 'abc' \\(str\\)"),
    ("bm25(num_results=0)", "bm25: num_results must be >= 1, got 0"),
    ("bm25(num_results=10.5)", "bm25: num_results must be an integer, got 10.5"),
    ("bm25(b=2)", "bm25: b must be between 0 and 1, got 2"),
    # review helper-66: FAISS's raw OverflowError or TypeError, exit 1, after the corpus was encoded
    ("dense(ef_search=2147483648)", "dense: ef_search must be between 1 and 2147483647, got 2147483648"),
    ("dense(nprobe=100000000000000000000)", "dense: nprobe must be between 1 and 2147483647"),
    ("dense(hnsw_m=2147483648)", "dense: hnsw_m must be between 2 and 1024, got 2147483648"),
    ("bm25(k1=1e999)", "bm25: k1 must be a finite number, got inf"),
    ("bm25(lowercase=1)", "bm25: lowercase must be True or False, got 1"),
    ("bm25(stopwords=[1, 2])", "bm25: stopwords must be a string or a list of strings or None"),
    ("bm25(nope=1)", "bm25: bad arguments: .*'nope'; its parameters are k1, b"),
    ("dense(batch_size=0)", "dense: batch_size must be >= 1"),
    ("anncur(budget='lots')", "anncur: budget must be an integer"),
    ("cross-encoder(batch_size=True)", "cross-encoder: batch_size must be an integer, got True \\(bool\\)"),
    ("listwise(depth=0)", "listwise: depth must be >= 1, got 0"),
    ("listwise(temperature=-1)", "listwise: temperature must be >= 0"),
    ("setwise(set_size='4')", "setwise: set_size must be an integer"),
    ("insertrank(score_range=(0, 'x'))", "insertrank: score_range must be a pair"),
    ("prp(top_k=None)", "prp: top_k must be an integer, got None"),
    ("listwise(backend=3)", "listwise: backend must be "),
    # helper-78: refused only once llama.cpp loaded the model, after the first stage had run
    ("yes-no(backend='llamacpp:smollm2?n_ctx=-1')", "backend spec 'llamacpp:smollm2\\?n_ctx=-1': n_ctx must be >= 0, got -1"),
])
def test_stage_parameters_are_checked_against_the_constructor(expr, message):
    with pytest.raises(ConfigError, match=message):
        build(expr)


def test_the_same_check_serves_python_callers():
    check_arguments(BM25, [1.2], {"b": 0.5, "stopwords": ["a", "b"]}, "bm25")
    with pytest.raises(ConfigError, match="bm25: b must be"):
        check_arguments(BM25, [1.2, -0.1], {}, "bm25")


@pytest.mark.parametrize("expr", ["bm25 % True", "bm25(k1='abc')", "bm25(num_results=0)", "bm25(**{'k1': 1})"])
def test_cli_refuses_bad_expressions_in_one_line(expr):
    proc = subprocess.run([sys.executable, "-m", "rerank.cli", "--quiet", "search", "--dataset", "trec-dl-2019",
                           "--pipeline", expr, "anything"], capture_output=True, text=True, env=os.environ, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and expr in proc.stderr


@pytest.mark.parametrize("k", [0, -3, 2.5, True])
def test_retrievers_refuse_a_bad_num_results_from_python_too(k):
    with pytest.raises(ConfigError, match="BM25: num_results must be a positive integer"):
        BM25(num_results=k)
    with pytest.raises(ConfigError, match="BM25: num_results must be a positive integer"):
        BM25().with_num_results(k)
