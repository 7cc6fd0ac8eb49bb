"""A loopback OpenAI-compatible upstream for pass-through tests: records what it receives by each
request's correlation id and answers with canned JSON, or with server-sent events when asked to
stream.

Tests share upstreams (and Envoys) across a module, so none may read "the last request": each
sends its own id in `x-test-id` (see `tagged`) and reads back only what arrived under it."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The request header carrying a test's correlation id; llm-edge passes it on untouched.
TEST_ID = "x-test-id"


def tagged() -> tuple[str, dict[str, str]]:
    """A new correlation id, and the request headers that carry it through Envoy."""
    test_id = uuid.uuid4().hex
    return test_id, {TEST_ID: test_id}


class Upstream:
    """One upstream server on a free loopback port; `requests` holds what it got, by the
    `x-test-id` each request carried (untagged ones under "")."""

    def __init__(
        self, name: str, reply_text: str | None = "Hello from the upstream.", delta_size: int = 0,
        status: int = 200,
    ):
        """`reply_text` None: reply with the last user message, as received (an echo).
        `delta_size`: stream the text in deltas of that many characters instead of by word.
        `status` other than 200: a failing provider, answering every request with that error."""
        self.name = name
        self.reply_text = reply_text
        self.requests: dict[str, dict] = {}
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                headers = {k.lower(): v for k, v in self.headers.items()}
                upstream.requests[headers.get(TEST_ID, "")] = {
                    "path": self.path, "headers": headers, "body": body, "raw": raw
                }
                if status != 200:
                    self.fail()
                elif body.get("stream"):
                    self.stream(body)
                else:
                    self.whole(body)

            def text_for(self, body: dict) -> str:
                if upstream.reply_text is not None:
                    return upstream.reply_text
                users = [m for m in body.get("messages", []) if m.get("role") == "user"]
                content = users[-1]["content"] if users else ""
                return content if isinstance(content, str) else ""

            def fail(self) -> None:
                data = json.dumps({"error": {"message": f"{upstream.name} is failing",
                                             "type": "server_error", "param": None,
                                             "code": None}}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def whole(self, body: dict) -> None:
                reply = {
                    "id": "chatcmpl-upstream", "object": "chat.completion", "created": 1,
                    "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                 "message": {"role": "assistant", "content": self.text_for(body),
                                             "refusal": None}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
                    "served_by": upstream.name,
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def stream(self, body: dict) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()

                def chunk(payload: dict | str) -> bytes:
                    text = payload if isinstance(payload, str) else json.dumps(payload)
                    return f"data: {text}\n\n".encode()

                def delta(content: str) -> dict:
                    return {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": 1,
                            "model": body.get("model"),
                            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}

                text = self.text_for(body)
                if delta_size:
                    pieces = [text[i:i + delta_size] for i in range(0, len(text), delta_size)]
                else:
                    words = text.split(" ")
                    pieces = [words[0]] + [" " + word for word in words[1:]]
                events = [chunk(delta(piece)) for piece in pieces]
                events.append(chunk({"id": "chatcmpl-upstream", "object": "chat.completion.chunk",
                                     "created": 1, "model": body.get("model"),
                                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
                if (body.get("stream_options") or {}).get("include_usage"):
                    events.append(chunk({"id": "chatcmpl-upstream", "object": "chat.completion.chunk",
                                         "created": 1, "model": body.get("model"), "choices": [],
                                         "usage": {"prompt_tokens": 11, "completion_tokens": 4,
                                                   "total_tokens": 15}}))
                events.append(chunk("[DONE]"))
                stream = b"".join(events)
                # Cut the stream in odd places, so events arrive split across chunks.
                for start in range(0, len(stream), 37):
                    piece = stream[start:start + 37]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def seen(self, test_id: str) -> dict:
        """What arrived for the request tagged `test_id`: its path, headers, body and raw bytes."""
        assert test_id in self.requests, f"{self.name} never received request {test_id}"
        return self.requests[test_id]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
