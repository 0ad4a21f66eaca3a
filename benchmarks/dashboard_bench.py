"""Dashboard page time with many strategies, on PostgreSQL and SQLite side by side.

Fills a registry with N strategies (default 10,000; each with 2 plugins, a parent, 3 scores),
starts ``ufarsap-engine dashboard`` on it and requests the strategies page (first page, a
metric-sorted page, a deep page, a plugin filter) and a strategy page; prints the median server
time of each (the ``Server-Timing`` header, which excludes the network) over R requests.

    python benchmarks/dashboard_bench.py                     # PostgreSQL from $UFARSAP_TEST_PG_URL + SQLite
    python benchmarks/dashboard_bench.py --strategies 10000 --json

PostgreSQL runs in a throw-away schema (dropped afterwards), SQLite in a temporary folder;
tables are analysed after filling (fresh tables have no planner statistics).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_bench import pg_schema_url  # noqa: E402

PAGES = {
    "strategies, first page": "/strategies",
    "strategies sorted by a metric": "/strategies?metric=reward",
    "strategies, page 100 by a metric": "/strategies?metric=kl&order=asc&page=100",
    "strategies with a plugin, by a metric": "/strategies?plugin=p3.plugin&metric=toxicity",
    "one strategy": "/strategies/{mid}",
}


def fill(url: str, n: int) -> int:
    """N strategies in one run; returns an id from the middle."""
    import sqlalchemy as sa

    from ufarsap_registry import open_registry

    rng = random.Random(0)
    with open_registry(url) as reg:
        run_id = reg.start_run("dashboard-bench", {})
        ids: list[int] = []
        for i in range(n):
            sid = reg.add_strategy(plugins=[f"p{rng.randrange(5)}.plugin", "safety.toxicity"],
                                   params={"i": i}, origin=rng.choice(("explore", "exploit", "crossover")),
                                   run_id=run_id, parent_id=rng.choice(ids) if ids else None, state="complete")
            reg.record_scores(sid, {"reward": rng.random(), "toxicity": rng.random(), "kl": rng.random()})
            ids.append(sid)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return ids[n // 2]


def server_ms(base: str, path: str) -> float:
    with urllib.request.urlopen(base + path, timeout=60) as r:
        assert r.status == 200, (path, r.status)
        r.read()
        return float(re.search(r"dur=([\d.]+)", r.headers["Server-Timing"]).group(1))


def measure(url: str, repeats: int, port: int) -> dict[str, float]:
    mid = fill(url, ARGS.strategies)
    env = {**os.environ, "UFARSAP_REGISTRY_URL": url}
    proc = subprocess.Popen([sys.executable, "-m", "ufarsap_engine", "dashboard", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/plugins", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit(proc.stderr.read())
                time.sleep(0.1)
        out = {}
        for name, path in PAGES.items():
            path = path.format(mid=mid)
            server_ms(base, path)  # warm-up
            out[name] = statistics.median(server_ms(base, path) for _ in range(repeats))
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategies", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--pg-url", default=os.environ.get("UFARSAP_TEST_PG_URL"))
    p.add_argument("--no-sqlite", action="store_true")
    p.add_argument("--json", action="store_true")
    ARGS = p.parse_args()
    results: dict[str, dict[str, float] | None] = {}
    t0 = time.perf_counter()
    if ARGS.pg_url:
        url, drop = pg_schema_url(ARGS.pg_url)
        try:
            results["postgresql"] = measure(url, ARGS.repeats, 8871)
        finally:
            drop()
    else:
        results["postgresql"] = None
    if not ARGS.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            results["sqlite"] = measure(f"sqlite:///{Path(tmp) / 'reg.sqlite'}", ARGS.repeats, 8872)
    if ARGS.json:
        print(json.dumps({"strategies": ARGS.strategies, "median_server_ms": results,
                          "wall_s": round(time.perf_counter() - t0, 1)}, indent=2))
        return
    names = list(PAGES)
    print(f"dashboard server time, median of {ARGS.repeats} requests, {ARGS.strategies} strategies "
          f"(50 per page)")
    print(f"{'page':<40} {'postgresql ms':>14} {'sqlite ms':>10}")
    for name in names:
        cells = [f"{results[db][name]:.1f}" if results.get(db) else "-" for db in ("postgresql", "sqlite")]
        print(f"{name:<40} {cells[0]:>14} {cells[1]:>10}")
    worst = max((v for r in results.values() if r for v in r.values()), default=float("nan"))
    print(f"slowest page: {worst:.1f} ms (goal: strategies page < 1000 ms server time)")


if __name__ == "__main__":
    main()
