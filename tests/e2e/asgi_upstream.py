"""A real ASGI upstream, Starlette served by uvicorn (the stack vLLM and LiteLLM serve on), for
the hostile-traffic tests: it routes paths as such servers do (percent-decoded, redirecting a
trailing slash), records every request by its `x-test-id`, and answers as each request's
`x-upstream-*` headers ask, so tests share no state through it.

Reply headers a test may send (all optional):
- `x-upstream-reply`: `json` (default), `stream` (one character a delta), `gzip` (gzip'd when
  the request accepts it), `gzip-always` (gzip'd whatever it accepts), `empty` (no body);
- `x-upstream-say`: the reply text (default: the last user message, an echo);
- `x-upstream-status`, `x-upstream-content-type`, `x-upstream-eol` (`lf`, `cr`, `crlf`),
  `x-upstream-pad` (that many spaces of padding in a JSON reply).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class AsgiUpstream:
    """The app on a loopback socket bound before it starts, so it takes connections at once."""

    def __init__(self):
        self.requests: dict[str, dict] = {}
        self.unrouted: list[dict] = []
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/{rest:path}", self.unknown, methods=["GET", "POST"]),
            ]
        )
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(128)
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.socket])), daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()

    def seen(self, test_id: str) -> dict:
        """What the chat route received for the request tagged `test_id`."""
        return self.requests[test_id]

    async def record(self, request: Request) -> tuple[dict, bytes]:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        entry = {
            "path": request.url.path,
            "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
            "headers": dict(request.headers),
            "body": body,
            "raw": raw,
        }
        return entry, raw

    async def unknown(self, request: Request) -> Response:
        entry, _ = await self.record(request)
        self.unrouted.append(entry)
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    async def chat(self, request: Request) -> Response:
        entry, _ = await self.record(request)
        self.requests[request.headers.get("x-test-id", "")] = entry
        body = entry["body"]
        asked = request.headers
        text = asked.get("x-upstream-say")
        if text is None:
            users = [m for m in body.get("messages", []) if m.get("role") == "user"]
            content = users[-1]["content"] if users else ""
            text = content if isinstance(content, str) else json.dumps(content)
        reply = asked.get("x-upstream-reply", "json")
        status = int(asked.get("x-upstream-status", "200"))
        content_type = asked.get("x-upstream-content-type")
        if reply == "empty":
            return Response(b"", status_code=status, media_type=content_type)
        if reply == "stream":
            eol = {"lf": "\n", "cr": "\r", "crlf": "\r\n"}[asked.get("x-upstream-eol", "lf")]
            return StreamingResponse(
                self.events(body.get("model"), text, eol),
                status_code=status,
                media_type=content_type or "text/event-stream",
            )
        completion = {
            "id": "chatcmpl-asgi", "object": "chat.completion", "created": 1,
            "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": text, "refusal": None}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
        data = json.dumps(completion).encode() + b" " * int(asked.get("x-upstream-pad", "0"))
        headers = {}
        accepts_gzip = "gzip" in asked.get("accept-encoding", "")
        if reply == "gzip-always" or (reply == "gzip" and accepts_gzip):
            data = gzip.compress(data)
            headers["content-encoding"] = "gzip"
        return Response(
            data, status_code=status, headers=headers,
            media_type=content_type or "application/json",
        )

    @staticmethod
    async def events(model: str | None, text: str, eol: str):
        def event(payload: dict | str) -> bytes:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            return f"data: {data}{eol}{eol}".encode()

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {"id": "chatcmpl-asgi", "object": "chat.completion.chunk", "created": 1,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        yield event(chunk({"role": "assistant", "content": ""}))
        for character in text:
            yield event(chunk({"content": character}))
        yield event(chunk({}, "stop"))
        yield event("[DONE]")
