"""Registry throughput on SQLite and PostgreSQL, side by side.

Writes: strategies per second, each with 2 plugins, a lineage event and 3 scores (two
transactions: ``add_strategy`` + ``record_scores``), by one writer and by N writer processes.
Reads: ``list`` with filters, ``list`` top-k by a metric, and ``get``, on what was written.

    python benchmarks/registry_bench.py                      # PostgreSQL from $UFARSAP_TEST_PG_URL
    python benchmarks/registry_bench.py --pg-url URL --writers 8 --json

PostgreSQL runs in a throw-away schema (dropped afterwards); SQLite in a temporary folder.
Reads run after ``ANALYZE`` (fresh tables have no planner statistics yet).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

METRICS = ("reward", "toxicity", "kl")
SPAWN = multiprocessing.get_context("spawn")


def write_batch(reg, writer: int, count: int) -> None:
    run_id = reg.start_run(f"bench-{writer}", {"writer": writer})
    rng = random.Random(writer)
    for i in range(count):
        sid = reg.add_strategy(
            plugins=[f"p{rng.randrange(5)}.plugin", "safety.toxicity"],
            params={"writer": writer, "index": i, "w": rng.random()},
            origin=rng.choice(("explore", "exploit", "crossover")),
            run_id=run_id,
            state=rng.choice(("complete", "complete", "failed")),
        )
        reg.record_scores(sid, {m: rng.random() for m in METRICS})
    reg.end_run(run_id, "complete")


def _writer_process(url: str, writer: int, count: int, ready, start, done) -> None:
    from ufarsap_registry import open_registry

    with open_registry(url, create=False) as reg:
        ready.put(writer)
        start.wait()
        write_batch(reg, writer, count)
    done.put(writer)


def concurrent_write(url: str, writers: int, count: int) -> float:
    """Strategies per second over all writers, from the start signal to the last finish."""
    ready, done, start = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event()
    procs = [SPAWN.Process(target=_writer_process, args=(url, 1000 + w, count, ready, start, done))
             for w in range(writers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    t0 = time.perf_counter()
    start.set()
    for _ in procs:
        done.get(timeout=300)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"writer process exited with {p.exitcode}")
    return writers * count / elapsed


def analyze(url: str) -> None:
    """Planner statistics, as PostgreSQL's autovacuum would have them within a minute."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def rate(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t0)


def bench_backend(url: str, args: argparse.Namespace) -> dict[str, float]:
    from ufarsap_registry import open_registry

    out: dict[str, float] = {}
    with open_registry(url) as reg:
        t0 = time.perf_counter()
        write_batch(reg, 0, args.single)
        out["write_1"] = args.single / (time.perf_counter() - t0)
        out[f"write_{args.writers}"] = concurrent_write(url, args.writers, args.per_writer)
        analyze(url)
        ids = [r.id for r in reg.list(order="asc")]
        rng = random.Random(0)
        out["n_strategies"] = len(ids)
        out["list_filtered"] = rate(
            lambda: reg.list(state="complete", plugin=f"p{rng.randrange(5)}.plugin", scope="default",
                             limit=50), args.queries)
        out["top_k"] = rate(lambda: reg.list(metric=rng.choice(METRICS), top_k=10), args.queries)
        out["best"] = rate(lambda: reg.best(rng.choice(METRICS)), args.queries)
        out["get"] = rate(lambda: reg.get(rng.choice(ids)), args.gets)
    return out


def pg_schema_url(base: str):
    """A URL confined to a new schema, and a function that drops it."""
    import sqlalchemy as sa

    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = admin.url.update_query_dict({"options": f"-csearch_path={schema}"})

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()

    return url.render_as_string(hide_password=False), drop


def render(results: dict[str, dict[str, float] | None], args: argparse.Namespace) -> str:
    rows = [
        ("write_1", "write, 1 writer (strategies+3 scores/s)"),
        (f"write_{args.writers}", f"write, {args.writers} writer processes (/s, total)"),
        ("list_filtered", "list state+plugin+scope, limit 50 (/s)"),
        ("top_k", "list top-10 by metric (/s)"),
        ("best", "best(metric) (/s)"),
        ("get", "get(id) (/s)"),
    ]
    sq, pg = results.get("sqlite"), results.get("postgresql")
    lines = [f"{'':44}{'sqlite':>10}{'postgresql':>12}{'pg/sqlite':>11}"]
    for key, label in rows:
        a = f"{sq[key]:10.0f}" if sq else f"{'-':>10}"
        b = f"{pg[key]:12.0f}" if pg else f"{'skipped':>12}"
        r = f"{pg[key] / sq[key]:10.2f}x" if sq and pg else f"{'-':>11}"
        lines.append(f"{label:44}{a}{b}{r}")
    n = (sq or pg or {}).get("n_strategies", 0)
    lines.append(f"(reads over {n:.0f} strategies; {os.cpu_count()} CPUs)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pg-url", default=os.environ.get("UFARSAP_TEST_PG_URL"),
                   help="PostgreSQL URL (default: $UFARSAP_TEST_PG_URL; PostgreSQL skipped if unset)")
    p.add_argument("--single", type=int, default=300, help="strategies written by the single writer")
    p.add_argument("--writers", type=int, default=4, help="concurrent writer processes")
    p.add_argument("--per-writer", type=int, default=150, help="strategies per concurrent writer")
    p.add_argument("--queries", type=int, default=100, help="list/top-k/best queries each")
    p.add_argument("--gets", type=int, default=300, help="get() calls")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)

    results: dict[str, dict[str, float] | None] = {"sqlite": None, "postgresql": None}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = bench_backend(f"sqlite:///{Path(tmp) / 'bench.sqlite'}", args)
    if args.pg_url:
        url, drop = pg_schema_url(args.pg_url)
        try:
            results["postgresql"] = bench_backend(url, args)
        finally:
            drop()
    if args.json:
        ratios = {}
        if results["sqlite"] and results["postgresql"]:
            ratios = {k: results["postgresql"][k] / v for k, v in results["sqlite"].items()
                      if v and k != "n_strategies"}
        print(json.dumps({"results": results, "pg_over_sqlite": ratios,
                          "settings": vars(args) | {"pg_url": bool(args.pg_url)}}, indent=2))
    else:
        print(render(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
