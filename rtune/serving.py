"""The OpenAI-compatible API `rtune serve` speaks: requests checked into what the engine needs, and responses,
stream chunks and errors in the shapes the official `openai` client reads. Plain functions, no Serve: the
deployments (`driver/serve.py`) call them.

Statuses (OpenAI-style body `{"error": {"message", "type", "param", "code"}}`):
    400 malformed JSON or a field of the wrong type     401 no or a wrong API key
    404 an unknown model                                  413 a prompt longer than serve.max_prompt_tokens
    422 a parameter out of range (temperature, top_p, n, max_tokens above serve.max_tokens, ...)
    429 the replica's queue is full (retry)               503 the model is not available right now
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

MAX_N = 16
MAX_STOP = 4


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def body(self) -> Dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}


@dataclass
class GenerationRequest:
    """What the engine needs for one request, checked."""

    model: str
    chat: bool
    prompt: Any  # the prompt string, or the message list
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: List[str] = field(default_factory=list)
    seed: Optional[int] = None
    stream: bool = False

    def sampling_dict(self) -> Dict[str, Any]:
        seed = self.seed if self.seed is not None else secrets.randbelow(2 ** 31)  # unseeded: a fresh draw
        return {"max_new_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p, "n": self.n,
                "seed": seed, "stop": tuple(self.stop)}


def parse_json(raw: bytes) -> Dict[str, Any]:
    try:
        body = json.loads(raw or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _number(body: Dict[str, Any], key: str, default: float, low: float, high: float, integer: bool = False,
            low_open: bool = False):
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ApiError(400, f"'{key}' must be {'an integer' if integer else 'a number'}, got {value!r}", param=key)
    if value < low or value > high or (low_open and value == low):
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise ApiError(422, f"'{key}'={value} is out of range {bounds}", param=key)
    return value


def parse_request(body: Dict[str, Any], chat: bool, max_tokens_cap: int) -> GenerationRequest:
    """A /v1/completions (chat=False) or /v1/chat/completions body, checked; raises ApiError."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required: one of the names GET /v1/models lists", param="model")
    if chat:
        prompt = body.get("messages")
        if not isinstance(prompt, list) or not prompt or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in prompt):
            raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects", param="messages")
        if any(m["role"] not in ("system", "user", "assistant") for m in prompt):
            raise ApiError(400, "a message's role must be system, user or assistant", param="messages")
        prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(400, "'prompt' must be a non-empty string (one prompt per request)", param="prompt")
    default_tokens = max_tokens_cap if chat else min(16, max_tokens_cap)  # OpenAI's completions default: 16
    key = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, key, default_tokens, 1, max_tokens_cap, integer=True)
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, "'stop' must be a string or a list of non-empty strings", param="stop")
    if len(stop) > MAX_STOP:
        raise ApiError(422, f"'stop' holds {len(stop)} strings: at most {MAX_STOP}", param="stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    n = _number(body, "n", 1, 1, MAX_N, integer=True)
    if stream and n != 1:
        raise ApiError(422, "'stream': true takes n=1", param="n")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ApiError(400, "'seed' must be an integer", param="seed")
    return GenerationRequest(model, chat, prompt, max_tokens, _number(body, "temperature", 1.0, 0.0, 2.0),
                             _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True), n, stop, seed, stream)


def _head(kind: str, model: str) -> Dict[str, Any]:
    prefix = "chatcmpl" if kind.startswith("chat") else "cmpl"
    return {"id": f"{prefix}-{secrets.token_hex(12)}", "object": kind, "created": int(time.time()), "model": model}


def usage(prompt_tokens: int, completion_tokens: int) -> Dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def response(req: GenerationRequest, prompt_tokens: int, completions: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The whole answer. completions: [{"text", "tokens", "finish_reason"}]."""
    if req.chat:
        choices = [{"index": i, "message": {"role": "assistant", "content": c["text"]},
                    "finish_reason": c["finish_reason"], "logprobs": None} for i, c in enumerate(completions)]
    else:
        choices = [{"index": i, "text": c["text"], "finish_reason": c["finish_reason"], "logprobs": None}
                   for i, c in enumerate(completions)]
    return {**_head("chat.completion" if req.chat else "text_completion", req.model), "choices": choices,
            "usage": usage(prompt_tokens, sum(c["tokens"] for c in completions))}


class StreamChunks:
    """Server-sent events of one streamed answer: a chunk per text delta, then the finish reason with the usage,
    then `[DONE]`."""

    def __init__(self, req: GenerationRequest):
        self.req = req
        self.head = _head("chat.completion.chunk" if req.chat else "text_completion", req.model)
        self.first = True

    def delta(self, text: str, finish_reason: Optional[str] = None, usage_counts: Optional[Dict] = None) -> str:
        if self.req.chat:
            delta: Dict[str, Any] = {"content": text} if text or finish_reason is None else {}
            if self.first:
                delta["role"] = "assistant"
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
        self.first = False
        chunk = {**self.head, "choices": [choice], **({"usage": usage_counts} if usage_counts else {})}
        return f"data: {json.dumps(chunk)}\n\n"

    @staticmethod
    def done() -> str:
        return "data: [DONE]\n\n"

    @staticmethod
    def error(err: ApiError) -> str:
        return f"data: {json.dumps(err.body())}\n\n"
