"""Request shapes of the HTTP API (pydantic), and the checks every rerank request goes through.

Field names follow the clients: Cohere's v1 and v2 rerank, Jina's and vLLM's ``/rerank``, and
rerank's own ``/v1/search``. Unknown fields are refused (a typo must not be ignored), and types are
strict (``"5"`` is not a ``top_n``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError, field_validator

from rerank.io import RepeatedKey, decode_json
from rerank.serve.config import ServeConfig
from rerank.serve.errors import ApiError, limit_error
from rerank.types import is_blank


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: StrictStr
    model: StrictStr | None = None


class RerankRequest(_Request):
    """The fields every rerank shape shares. ``documents``: strings or objects with a ``text``."""

    documents: list[Any]
    top_n: StrictInt | None = None


class CohereV1Request(RerankRequest):
    return_documents: StrictBool = False
    max_chunks_per_doc: StrictInt | None = None
    rank_fields: list[StrictStr] | None = None


class CohereV2Request(RerankRequest):
    """``priority`` is accepted and has no effect (requests run in arrival order)."""

    max_tokens_per_doc: StrictInt | None = None
    priority: StrictInt | None = None
    relevant_spans: dict[str, Any] | None = None


class JinaRequest(RerankRequest):
    """Jina's and vLLM's ``/rerank`` (documents come back unless ``return_documents`` is false).

    vLLM's optional fields are accepted, so its clients work unchanged: ``top_n``,
    ``max_tokens_per_doc`` and ``max_tokens_per_query`` of 0 (its defaults) mean no limit;
    ``request_id`` becomes the answer's ``id``; ``user`` and ``priority`` have no effect; the fields of
    :attr:`IGNORED` would change how vLLM builds the model input and are answered with a warning.
    """

    IGNORED: ClassVar[tuple[str, ...]] = ("truncate_prompt_tokens", "truncation_side", "padding", "instruction",
                                          "chat_template_kwargs")

    return_documents: StrictBool = True
    max_tokens_per_doc: StrictInt | None = None
    max_tokens_per_query: StrictInt | None = None
    request_id: StrictStr | None = None
    user: StrictStr | None = None
    priority: StrictInt | None = None
    use_activation: StrictBool | None = None
    truncate_prompt_tokens: StrictInt | None = None
    truncation_side: StrictStr | None = None
    padding: StrictStr | None = None
    instruction: StrictStr | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    @field_validator("top_n", "max_tokens_per_doc", "max_tokens_per_query")
    @classmethod
    def _zero_is_no_limit(cls, value: int | None) -> int | None:
        return None if value == 0 else value

    def ignored(self) -> list[str]:
        """Warnings for the vLLM fields given here that have no effect on the scores."""
        out = [f"{f} is ignored: the served pipeline builds its own model input" for f in self.IGNORED
               if getattr(self, f) is not None]
        if self.use_activation is False:
            out.append("use_activation=false is ignored: relevance_score is the family's score (see the docs)")
        return out


class SearchRequest(_Request):
    top_n: StrictInt = 10
    return_documents: StrictBool = True


def parse(body: bytes, shape: type[_Request]) -> Any:
    """Validate a JSON body against ``shape``: malformed JSON is 400, anything else wrong is 422."""
    if not body.strip():
        raise ApiError(400, "invalid_json", "the request body is empty; send a JSON object")
    readable = False  # by Python's json, which lets a lone surrogate escape through
    try:
        decode_json(body.decode("utf-8"))
        readable = True
    except UnicodeDecodeError as e:
        raise ApiError(400, "invalid_json", f"the body is not UTF-8 (byte {e.start} is {body[e.start:e.start + 1]!r})") from None
    except RepeatedKey as e:
        raise ApiError(422, "invalid_request", str(e)) from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body nests arrays or objects too deeply") from None
    except ValueError:
        pass  # not JSON: the validation below says where
    try:
        return shape.model_validate_json(body)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        if any(err["type"] == "json_invalid" for err in errors):
            why = errors[0]["msg"].removeprefix("Invalid JSON: ")
            if readable:
                why += " (an escape from \\ud800 to \\udfff that is not half of a pair is no character)"
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: {why}") from None
        raise ApiError(422, "invalid_request", "; ".join(_describe(err) for err in errors[:5])) from None


def _describe(err: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "body"
    if err["type"] == "extra_forbidden":
        return f"unknown field {where!r}"
    if err["type"] == "missing":
        return f"field {where!r} is required"
    return f"{where}: {err['msg']} (got {type(err.get('input')).__name__})"


def document_texts(documents: list[Any]) -> list[str]:
    """The text of each document: a string, or an object whose ``text`` is a string."""
    texts = []
    for i, d in enumerate(documents):
        if isinstance(d, str):
            texts.append(d)
        elif isinstance(d, dict) and isinstance(d.get("text"), str):
            texts.append(d["text"])
        else:
            got = "an object without a string 'text'" if isinstance(d, dict) else type(d).__name__
            raise ApiError(422, "invalid_request", f"documents[{i}] must be a string or an object with a string 'text', got {got}")
    return texts


def check_query(query: str, config: ServeConfig) -> None:
    if is_blank(query):
        raise ApiError(422, "invalid_request", "the query is empty")
    if len(query) > config.max_query_chars:
        raise limit_error("max_query_chars", config.max_query_chars, f"the query has {len(query)} characters")


def check_rerank(req: RerankRequest, config: ServeConfig) -> list[str]:
    """Check a rerank request against the shape rules and the limits; return the document texts."""
    check_query(req.query, config)
    spans = getattr(req, "relevant_spans", None)
    if spans and spans.get("mode") != "disabled":
        raise ApiError(422, "invalid_request", "relevant_spans is not supported; leave it out or set mode='disabled'")
    if getattr(req, "rank_fields", None):
        raise ApiError(422, "invalid_request", "rank_fields is not supported; send each document's text as 'text'")
    if not req.documents:
        raise ApiError(422, "invalid_request", "the document list is empty; send at least one document")
    if len(req.documents) > config.max_documents:
        raise limit_error("max_documents", config.max_documents, f"the request has {len(req.documents)} documents")
    texts = document_texts(req.documents)
    for i, t in enumerate(texts):
        if is_blank(t):
            raise ApiError(422, "invalid_request", f"documents[{i}] is empty")
        if len(t) > config.max_doc_chars:
            raise limit_error("max_doc_chars", config.max_doc_chars, f"documents[{i}] has {len(t)} characters")
    if req.top_n is not None and req.top_n < 1:
        raise ApiError(422, "invalid_request", f"top_n must be at least 1, got {req.top_n}")
    for cap in ("max_tokens_per_doc", "max_tokens_per_query"):
        if getattr(req, cap, None) is not None and getattr(req, cap) < 1:
            raise ApiError(422, "invalid_request", f"{cap} must be at least 1, got {getattr(req, cap)}")
    return texts


def check_search(req: SearchRequest, config: ServeConfig) -> None:
    check_query(req.query, config)
    if req.top_n < 1:
        raise ApiError(422, "invalid_request", f"top_n must be at least 1, got {req.top_n}")
    if req.top_n > config.max_top_n:
        raise limit_error("max_top_n", config.max_top_n, f"top_n is {req.top_n}")
