"""Run rank_llm's RankGPT sliding window (LiteLLM path) on candidates from a JSON file; write JSON.

Runs in rank_llm's own virtual environment (Python 3.12, ``pip install 'rank-llm[litellm]==0.26.0'``),
as a subprocess of ``pipelines/bench_peer_rankllm.py``. Only rank_llm's public API is used:
``SafeLiteLLM`` + ``Reranker.rerank_batch`` with the packaged ``rank_gpt_template.yaml``.

Input  (argv[1]): ``{"config": {...}, "requests": [{"query": {"text", "qid"}, "candidates": [{"docid", "score", "doc": {"text"}}]}]}``
Output (argv[2]): ``{"seconds": float, "results": [{"qid", "docids", "responses", "window_sizes", "valid"}]}``;
``valid[i]`` says whether response ``i`` was a full permutation before rank_llm's silent repair.

Why the LiteLLM path: rank_llm's ``SafeOpenai`` calls the Responses API (``/v1/responses``), which
llama.cpp's server does not have, and it retries every error (the 404 included) forever. ``SafeLiteLLM``
uses ``/v1/chat/completions``; its output is uncapped unless ``max_tokens`` goes in ``sampling_kwargs``.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm fetches a price table at import otherwise

from dacite import from_dict  # noqa: E402  (rank_llm's own dependency)
from rank_llm.data import Request  # noqa: E402
from rank_llm.rerank import Reranker  # noqa: E402
from rank_llm.rerank.listwise import SafeLiteLLM  # noqa: E402
from rank_llm.rerank.listwise.response_utils import clean_ranking_response  # noqa: E402
from rank_llm.rerank.reranker import TEMPLATES  # noqa: E402


def window_sizes(n: int, window: int, stride: int) -> list[int]:
    """Sizes of the windows rank_llm's ``sliding_windows`` visits over ranks ``[0, n)``, in order."""
    sizes, end, start = [], n, n - min(window, n)
    while end > 0 and start + stride != 0:
        sizes.append(end - max(start, 0))
        end, start = end - stride, start - stride
    return sizes


def is_permutation(response: str, n: int) -> bool:
    """True when rank_llm's own response cleaning yields each of ``1..n`` exactly once (no repair needed)."""
    try:
        ids = [int(x) for x in clean_ranking_response(response).split()]
    except (ValueError, TypeError, AttributeError):  # None or error strings
        return False
    return sorted(ids) == list(range(1, n + 1))


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    cfg = spec["config"]
    requests = [from_dict(data_class=Request, data=r) for r in spec["requests"]]
    coordinator = SafeLiteLLM(
        model=cfg["model"], api_base=cfg["api_base"], api_key="EMPTY", context_size=cfg["context_size"],
        prompt_template_path=str(TEMPLATES / "rank_gpt_template.yaml"), window_size=cfg["window"],
        stride=cfg["step"], batch_size=cfg["concurrency"], max_passage_words=cfg["max_words"],
        sampling_kwargs={"temperature": 0.0, "max_tokens": cfg["max_tokens"]})
    started = time.perf_counter()
    results = Reranker(coordinator).rerank_batch(requests, rank_start=0, rank_end=cfg["depth"],
                                                 populate_invocations_history=True)
    seconds = time.perf_counter() - started
    out = []
    for result, request in zip(results, requests):
        sizes = window_sizes(min(cfg["depth"], len(request.candidates)), cfg["window"], cfg["step"])
        responses = [inv.response for inv in result.invocations_history]
        out.append({"qid": str(result.query.qid), "docids": [str(c.docid) for c in result.candidates],
                    "responses": responses, "window_sizes": sizes,
                    "valid": [is_permutation(r, n) for r, n in zip(responses, sizes)]})
    json.dump({"seconds": seconds, "results": out}, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
