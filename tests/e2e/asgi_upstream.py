"""A real ASGI upstream, Starlette served by uvicorn (the stack vLLM and LiteLLM serve on), for
the hostile-traffic tests: it routes paths as such servers do (percent-decoded, redirecting a
trailing slash), records every request by its `x-test-id` (see upstream.tagged), and answers as
each request's `x-upstream-*` headers ask, so tests share no state through it.

Reply headers a test may send (all optional):
- `x-upstream-reply`: `json` (default), `stream` (one character a delta), `gzip` (gzip'd when
  the request accepts it), `gzip-always` (gzip'd whatever it accepts), `empty` (no body), `raw`
  (the bytes of `x-upstream-raw`, base64, as they are), `parts` (`x-upstream-parts` choices at
  once, the text split across two chunks);
- `x-upstream-say`: the reply text (default: the last user message, an echo);
- `x-upstream-status`, `x-upstream-content-type`, `x-upstream-eol` (`lf`, `cr`, `crlf`),
  `x-upstream-pad` (that many spaces of padding in a JSON reply);
- for chat streams, `x-upstream-field`: `content` (default), `reasoning_content`, or
  `arguments` (a tool call's), and `x-upstream-end`: `finish` (a finish chunk with no `delta`,
  then `[DONE]`), `done` (`[DONE]` with no finish chunk) or `eof` (neither).

`/v1/responses` and `/v1/messages` stream their own event shapes, one character a delta;
embeddings are answered `{}`, and any other path a 404 (recorded too, with the path it came on).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socket
import threading

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from upstream import TEST_ID


class AsgiUpstream:
    """The app on a loopback socket bound before it starts, so it takes connections at once."""

    def __init__(self):
        self.requests: dict[str, dict] = {}
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/responses", self.responses, methods=["POST"]),
                Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/v1/embeddings", self.recorded, methods=["POST"]),
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
        """What arrived, on any route, for the request tagged `test_id`."""
        assert test_id in self.requests, f"the upstream never received request {test_id}"
        return self.requests[test_id]

    async def record(self, request: Request) -> dict:
        """Files the request under its `x-test-id` (untagged ones under "")."""
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
        self.requests[request.headers.get(TEST_ID, "")] = entry
        return entry

    async def recorded(self, request: Request) -> Response:
        await self.record(request)
        return JSONResponse({})

    async def responses(self, request: Request) -> Response:
        await self.record(request)
        text = request.headers.get("x-upstream-say", "")
        return StreamingResponse(self.responses_events(text), media_type="text/event-stream")

    async def messages(self, request: Request) -> Response:
        await self.record(request)
        text = request.headers.get("x-upstream-say", "")
        field = request.headers.get("x-upstream-field", "text")
        return StreamingResponse(self.anthropic_events(text, field), media_type="text/event-stream")

    @staticmethod
    async def parts(count: int, text: str):
        """One chunk opening `count` choices with the first half of `text`, one finishing them
        all with the rest."""
        half = len(text) // 2
        for piece, finish in [(text[:half], None), (text[half:], "stop")]:
            choices = [{"index": i, "delta": {"content": piece}, "finish_reason": finish}
                       for i in range(count)]
            yield f"data: {json.dumps({'choices': choices})}\n\n".encode()
        yield b"data: [DONE]\n\n"

    @staticmethod
    async def responses_events(text: str):
        sequence = iter(range(1 << 30))

        def event(kind: str, **fields) -> bytes:
            payload = {"type": kind, "sequence_number": next(sequence), **fields}
            return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

        item = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}
        response = {"id": "resp_1", "object": "response", "status": "completed", "output": [item],
                    "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}}
        yield event("response.created", response={**response, "status": "in_progress",
                                                   "output": []})
        yield event("response.output_item.added", output_index=0,
                    item={**item, "status": "in_progress", "content": []})
        yield event("response.content_part.added", item_id="msg_1", output_index=0,
                    content_index=0, part={"type": "output_text", "text": "", "annotations": []})
        for character in text:
            yield event("response.output_text.delta", item_id="msg_1", output_index=0,
                        content_index=0, delta=character)
        yield event("response.output_text.done", item_id="msg_1", output_index=0,
                    content_index=0, text=text)
        yield event("response.content_part.done", item_id="msg_1", output_index=0,
                    content_index=0, part=item["content"][0])
        yield event("response.output_item.done", output_index=0, item=item)
        yield event("response.completed", response=response)

    @staticmethod
    async def anthropic_events(text: str, field: str):
        def event(kind: str, **fields) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()

        yield event("message_start", message={
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 1}})
        if field == "input":
            block = {"type": "tool_use", "id": "toolu_1", "name": "send", "input": {}}
        else:
            block = {"type": "text", "text": ""}
        yield event("content_block_start", index=0, content_block=block)
        for character in text:
            delta = ({"type": "input_json_delta", "partial_json": character} if field == "input"
                     else {"type": "text_delta", "text": character})
            yield event("content_block_delta", index=0, delta=delta)
        yield event("content_block_stop", index=0)
        yield event("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None},
                    usage={"output_tokens": 3})
        yield event("message_stop")

    async def unknown(self, request: Request) -> Response:
        await self.record(request)
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    async def chat(self, request: Request) -> Response:
        entry = await self.record(request)
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
        if reply == "parts":
            return StreamingResponse(self.parts(int(asked["x-upstream-parts"]), text),
                                     media_type="text/event-stream")
        if reply == "raw":
            raw = base64.b64decode(asked["x-upstream-raw"])
            return Response(raw, status_code=status, media_type=content_type)
        if reply == "stream":
            eol = {"lf": "\n", "cr": "\r", "crlf": "\r\n"}[asked.get("x-upstream-eol", "lf")]
            return StreamingResponse(
                self.events(body.get("model"), text, eol, asked.get("x-upstream-field", "content"),
                            asked.get("x-upstream-end", "finish-with-delta")),
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
    async def events(model: str | None, text: str, eol: str, field: str, end: str):
        def event(payload: dict | str) -> bytes:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            return f"data: {data}{eol}{eol}".encode()

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {"id": "chatcmpl-asgi", "object": "chat.completion.chunk", "created": 1,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        def piece(character: str) -> dict:
            if field == "arguments":
                return {"tool_calls": [{"index": 0, "function": {"arguments": character}}]}
            return {field: character}

        yield event(chunk({"role": "assistant", "content": ""}))
        if field == "arguments":
            yield event(chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                               "function": {"name": "send", "arguments": ""}}]}))
        for character in text:
            yield event(chunk(piece(character)))
        if end == "finish":
            finish = chunk({}, "stop")
            del finish["choices"][0]["delta"]
            yield event(finish)
        elif end == "finish-with-delta":
            yield event(chunk({}, "stop"))
        if end != "eof":
            yield event("[DONE]")
