"""Pass-through overhead: plain Envoy proxying to an upstream, versus the same Envoy with llm-edge
transforming every request on the way (a system prompt and every built-in detector).

The upstream is a third Envoy answering a canned chat completion with `direct_response`, so it is
never the bottleneck. Each proxy runs one worker; wrk (Debian's `wrk`) drives it with a Lua script
that POSTs the same chat body. Results are requests per second and latency, and the ratio of
llm-edge to plain Envoy measured in the same run.

    .venv/bin/python bench/passthrough.py            # 4 KB and 64 KB bodies, 10 s each
    .venv/bin/python bench/passthrough.py --seconds 5
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from harness import MODULE_DIR, Envoy  # noqa: E402

CANNED = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "gpt-4o",
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                 "message": {"role": "assistant", "content": "Benchmark reply.", "refusal": None}}],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 3, "total_tokens": 1003},
})
GUARD = {
    "mode": "passthrough",
    "transform": {"system_prompts": [{"position": "prepend", "content": "You are a benchmark."}]},
    "guard": {"detectors": {name: "mask" for name in [
        "email", "phone", "credit_card", "us_ssn", "iban", "ipv4", "ipv6", "jwt", "openai_key",
        "aws_access_key", "github_token", "slack_token", "private_key"]}},
}


# The upstream's route: the canned completion, as JSON (direct_response alone says text/plain).
UPSTREAM_ROUTE = {
    "match": {"prefix": "/"},
    "direct_response": {"status": 200, "body": {"inline_string": CANNED}},
    "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"},
                                 "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
}

# The same reply as Anthropic's Messages API writes it, for the translating proxy's upstream.
CANNED_MESSAGE = json.dumps({
    "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Benchmark reply."}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 1000, "output_tokens": 3},
})
MESSAGES_ROUTE = {
    "match": {"prefix": "/v1/messages"},
    "direct_response": {"status": 200, "body": {"inline_string": CANNED_MESSAGE}},
    "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"},
                                 "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
}
# A streamed reply of 64 words, as each API streams it, for the contenders whose stand-in
# provider streams (the proxies add STREAMED_HEADER to each request, which picks these routes).
STREAMED_WORDS = [f"word{i} " for i in range(64)]
STREAMED_HEADER = "x-bench-stream"


def sse(events: list[tuple[str | None, object]]) -> str:
    """Server-sent events: each with its `event:` line when named, then its data."""
    return "".join((f"event: {name}\n" if name else "")
                   + f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
                   for name, data in events)


def streamed_chat() -> str:
    """The chat chunks of the streamed reply, with a usage chunk, as OpenAI streams them."""
    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> dict:
        choices = [] if usage else [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]
        return {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-4o", "choices": choices, "usage": usage}
    return sse([(None, chunk({"role": "assistant", "content": ""}))]
               + [(None, chunk({"content": word})) for word in STREAMED_WORDS]
               + [(None, chunk({}, "stop")),
                  (None, chunk({}, usage={"prompt_tokens": 1000, "completion_tokens": 64,
                                          "total_tokens": 1064})),
                  (None, "[DONE]")])


def streamed_message() -> str:
    """The same reply as Anthropic's Messages API streams it."""
    return sse([("message_start", {"type": "message_start", "message": {
                    "id": "msg_bench", "type": "message", "role": "assistant",
                    "model": "claude-sonnet-4-5", "content": [], "stop_reason": None,
                    "stop_sequence": None, "usage": {"input_tokens": 1000, "output_tokens": 1}}}),
                ("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}})]
               + [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": word}})
                  for word in STREAMED_WORDS]
               + [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                  ("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                     "usage": {"output_tokens": 64}}),
                  ("message_stop", {"type": "message_stop"})])


def streamed_route(prefix: str, events: str) -> dict:
    """A route of the stand-in provider answering `events` to requests marked STREAMED_HEADER."""
    return {
        "match": {"prefix": prefix, "headers": [{"name": STREAMED_HEADER, "present_match": True}]},
        "direct_response": {"status": 200, "body": {"inline_string": events}},
        "response_headers_to_add": [{"header": {"key": "content-type", "value": "text/event-stream"},
                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
    }


# Chat clients translated to an upstream that speaks Anthropic's Messages API.
TRANSLATE = {
    "mode": "passthrough",
    "translate": [{"client": "chat", "upstream": "messages", "upstream_path": "/v1/messages",
                   "headers": {"anthropic-version": "2023-06-01"}}],
}

# The upstream reads each request body whole before it answers, as a provider does; answering
# on the headers alone would leave the body unread, and the proxy would have to close the
# upstream connection after every request.
READ_WHOLE_BODY = {
    "name": "envoy.filters.http.buffer",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 1 << 20,
    },
}


def upstream_config() -> dict:
    """The stand-in provider: reads the body, answers the canned completion (or, on Anthropic's
    path, the canned message), streamed to requests marked STREAMED_HEADER."""
    return bootstrap(listener([streamed_route("/v1/messages", streamed_message()),
                               streamed_route("/", streamed_chat()),
                               MESSAGES_ROUTE, UPSTREAM_ROUTE], [READ_WHOLE_BODY]))


def listener(routes: dict | list, http_filters: list) -> dict:
    return {
        "name": "bench",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "bench",
                "http_filters": http_filters + [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }],
                # A streamed reply's events are larger than direct_response's default 4 KB limit.
                "route_config": {"max_direct_response_body_size_bytes": 1 << 16,
                                 "virtual_hosts": [{"name": "all", "domains": ["*"],
                                                    "routes": routes if isinstance(routes, list) else [routes]}]},
            },
        }]}],
    }


def bootstrap(listener_config: dict, upstream_port: int | None = None) -> dict:
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [listener_config], "clusters": []},
    }
    if upstream_port is not None:
        config["static_resources"]["clusters"].append({
            "name": "upstream", "type": "STATIC", "connect_timeout": "5s",
            "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{
                "endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]},
        })
    return config


def llm_edge_filter(config: dict) -> dict:
    return {
        "name": "envoy.filters.http.dynamic_modules",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "llm_edge"},
            "filter_name": "llm_edge",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(config)},
        },
    }


def start(workdir: Path, name: str, config: dict, module_dir: Path = MODULE_DIR) -> Envoy:
    directory = workdir / name
    directory.mkdir()
    path = directory / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    return Envoy(path, directory, module_dir=module_dir, concurrency=1)


def streamed_chat_body(size: int) -> bytes:
    """A streamed chat request of about `size` bytes of prose, asking for the usage chunk itself
    (so that no contender has to ask for it)."""
    body = json.loads(chat_body(size))
    body.update({"stream": True, "stream_options": {"include_usage": True}})
    return json.dumps(body).encode()


def chat_body(size: int, sensitive: bool = True) -> bytes:
    """A chat request of about `size` bytes of prose: with an e-mail address and a phone number
    in every sentence, or with nothing for the guard to find but numbers, as prose has (the
    guard's number detectors look only where digits are: digit-free prose would flatter it)."""
    # A typographic apostrophe, as real prose has: non-ASCII text must stay on the fast path.
    sentence = ("Please summarise the quarter’s report for the board; contact jane.doe@example.com "
                "or call +1 415-555-2671 if anything is unclear. " if sensitive else
                "Please summarise the quarter’s 3 reports (Q2 2026) for the board; ask the "
                "finance team if any of the 14 points is still unclear. ")
    text = (sentence * (size // len(sentence) + 1))[:size]
    return json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}).encode()


def run_wrk(url: str, body: bytes, seconds: int, workdir: Path,
            headers: dict[str, str] | None = None, cpu: int | None = None) -> dict:
    """wrk POSTing `body` to `url` for `seconds` (on CPU `cpu` if given)."""
    body_file = workdir / "body.json"
    body_file.write_bytes(body)
    script = (
        'local f = io.open("%s", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
        'wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\n' % body_file
        + "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in (headers or {}).items())
    )
    return run_wrk_script(url, script, seconds, workdir, cpu)


def pin(pid: int, cpu: int) -> None:
    """Every thread of `pid` onto `cpu` (Envoy starts its workers before we can pin the process)."""
    subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], check=True, capture_output=True)


def run_wrk_script(url: str, script: str, seconds: int, workdir: Path, cpu: int | None = None) -> dict:
    """wrk (1 thread, 16 connections) with a Lua script; requests/s, latency and errors."""
    path = workdir / "wrk.lua"
    path.write_text(script)
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    out = subprocess.run(
        [*pin, "wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", "-s", str(path), url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+\w+)", out).group(1)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out).group(1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50": p50, "p99": p99, "requests": requests,
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def wrk_bench_args(doc: str) -> argparse.Namespace:
    """The command line of a wrk benchmark (`--seconds`); exits if wrk is missing."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")
    return args


def main() -> None:
    args = wrk_bench_args(__doc__)
    route_to_upstream = {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        upstream = start(workdir, "upstream", upstream_config())
        plain = start(workdir, "plain", bootstrap(listener(route_to_upstream, []), upstream.port))
        edge = start(workdir, "edge", bootstrap(listener(route_to_upstream, [llm_edge_filter(GUARD)]), upstream.port))
        try:
            print("| Body | Contender | Requests/s | p50 | p99 | Non-2xx | Ratio to plain Envoy |")
            print("|---|---|---|---|---|---|---|")
            for size in (4 * 1024, 64 * 1024):
                body = chat_body(size)
                url_of = lambda envoy: f"{envoy.base_url}/v1/chat/completions"  # noqa: E731
                base = run_wrk(url_of(plain), body, args.seconds, workdir)
                with_edge = run_wrk(url_of(edge), body, args.seconds, workdir)
                for name, result in (("plain Envoy proxy", base), ("llm-edge pass-through", with_edge)):
                    ratio = result["rps"] / base["rps"]
                    print(f"| {size // 1024} KB | {name} | {result['rps']:.0f} | {result['p50']} | "
                          f"{result['p99']} | {result['non_2xx']} | {ratio:.2f} |")
        finally:
            for envoy in (edge, plain, upstream):
                envoy.stop()


if __name__ == "__main__":
    main()
