#!/usr/bin/env python3
"""Times the web page's pages against a running berth: N requests of each
kind, one at a time, on one keep-alive connection; prints p50 / p99 / max in
milliseconds per kind. The first pass over the sampled pages is cold
(summaries computed), the second warm (cached).

    python3 integration/bench/ui_pages.py HOST:PORT [N=200] [REPOS=10000] [TAGS=10]
"""
import http.client
import random
import statistics
import sys
import time

host = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
repos = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
tags = int(sys.argv[4]) if len(sys.argv) > 4 else 10
random.seed(7)
conn = http.client.HTTPConnection(host, timeout=60)


def get(path):
    started = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    took = (time.perf_counter() - started) * 1000
    assert resp.status == 200, (path, resp.status, body[:200])
    return took


pages = max(1, repos // 50)
kinds = {
    "list page": [f"/ui/?page={random.randint(1, pages)}" for _ in range(n)],
    "search": [f"/ui/?q=app{random.randint(0, repos - 1)}" for _ in range(n)],
    "repository": [f"/ui/repo?name=team{r % 100}/app{r}" for r in (random.randint(0, repos - 1) for _ in range(n))],
    "tag": [f"/ui/tag?name=team{r % 100}/app{r}&tag=v{random.randint(0, tags - 1)}"
            for r in (random.randint(0, repos - 1) for _ in range(n))],
}
print("| page | pass | p50 ms | p99 ms | max ms |")
print("|---|---|---|---|---|")
for kind, paths in kinds.items():
    for label in ("cold", "warm"):
        times = sorted(get(p) for p in paths)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(f"| {kind} | {label} | {statistics.median(times):.1f} | {p99:.1f} | {times[-1]:.1f} |")
