"""Token-budget overhead: llm-edge pass-through with no budget, versus the same with reserving
per-key budgets (a minute and a day budget keyed by `authorization`), against plain Envoy proxying
measured in the same run.

Every request is admitted (the budgets are far from spent), so what is measured is the work each
request adds: counting the prompt's tokens for the reservation, two sharded-lock updates per
budget, the x-ratelimit-* headers and the settlement. Same upstream and wrk setup as
bench/passthrough.py.

    .venv/bin/python bench/budgets.py            # 4 KB chat body, 10 s each
    .venv/bin/python bench/budgets.py --seconds 5
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from passthrough import (bootstrap, chat_body, listener, llm_edge_filter, run_wrk, start,
                         upstream_config, wrk_bench_args)

BUDGETS = {
    "mode": "passthrough",
    "budgets": {"reserve": True, "limits": [
        {"name": "key_tpm", "tokens": 10**15, "per": "minute", "key": {"header": "authorization"}},
        {"name": "key_tpd", "tokens": 10**15, "per": "day", "key": {"header": "authorization"}},
    ]},
}


def main() -> None:
    args = wrk_bench_args(__doc__)
    route = {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        upstream = start(workdir, "upstream", upstream_config())
        contenders = {
            "plain Envoy proxy": [],
            "llm-edge pass-through, no budget": [llm_edge_filter({"mode": "passthrough"})],
            "llm-edge pass-through, 2 reserving budgets": [llm_edge_filter(BUDGETS)],
        }
        proxies = {name: start(workdir, f"proxy{i}", bootstrap(listener(route, filters), upstream.port))
                   for i, (name, filters) in enumerate(contenders.items())}
        try:
            body = chat_body(4 * 1024)
            headers = {"authorization": "Bearer sk-bench"}
            results = {name: run_wrk(f"{envoy.base_url}/v1/chat/completions", body, args.seconds,
                                     workdir, headers)
                       for name, envoy in proxies.items()}
            base = results["plain Envoy proxy"]["rps"]
            print("| Contender | Requests/s | p50 | p99 | Non-2xx | Ratio to plain Envoy |")
            print("|---|---|---|---|---|---|")
            for name, result in results.items():
                print(f"| {name} | {result['rps']:.0f} | {result['p50']} | {result['p99']} | "
                      f"{result['non_2xx']} | {result['rps'] / base:.2f} |")
        finally:
            for envoy in (*proxies.values(), upstream):
                envoy.stop()


if __name__ == "__main__":
    main()
