"""What many tests send llm-edge, and the checks of its answers: shared here rather than imported
from one test module into another, so each test file runs on its own, from any folder."""

from __future__ import annotations

import httpx
import openai

from openai_schema import ERROR_RESPONSE, assert_valid

CHAT = "/v1/chat/completions"
# The mock echoes the last user message; the lab's provider is the mock, so it echoes it too.
HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello, edge!"}]}
# Each fault status, the exception the openai SDK raises for it, and the `code` of its error.
FAULT_EXCEPTIONS = [
    (400, openai.BadRequestError, None),
    (401, openai.AuthenticationError, "invalid_api_key"),
    (403, openai.PermissionDeniedError, "unsupported_country_region_territory"),
    (404, openai.NotFoundError, "model_not_found"),
    (429, openai.RateLimitError, "rate_limit_exceeded"),
    (500, openai.InternalServerError, None),
    (503, openai.InternalServerError, None),
]


def assert_serves(http: httpx.Client) -> None:
    """A good request right after a bad one must still succeed."""
    reply = http.post(CHAT, json=HELLO)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "Hello, edge!"


def assert_openai_error(reply: httpx.Response, status: int, param=None, code=None) -> dict:
    """The reply is OpenAI's error envelope for an invalid request, with that status, `param`
    and `code`; returns its `error` object."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert_valid(ERROR_RESPONSE, body)
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param
    assert body["error"]["code"] == code
    return body["error"]
