"""Many writer processes on one registry: nothing lost, nothing duplicated, nothing half-written.

The issue's bar is PostgreSQL: 8 spawned writers x 500 strategies with scores, and a writer
SIGKILLed inside a transaction. SQLite runs the same checks with fewer records (it is meant for
one machine, and its writers take turns).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from ufarsap_registry import open_registry

pytestmark = pytest.mark.slow

SPAWN = multiprocessing.get_context("spawn")
METRICS = ("reward", "toxicity", "kl")


def _sizes(url: str) -> tuple[int, int]:
    """(writers, strategies per writer)."""
    return (8, 500) if url.startswith("postgresql") else (4, 60)


def _join_all(procs, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
        p.join()
    assert not alive, f"{len(alive)} worker(s) did not finish within {timeout} s"
    assert [p.exitcode for p in procs] == [0] * len(procs)


# -- workers (module level so that spawned processes can import them) ------------------------

def _writer(url: str, writer: int, count: int, start) -> None:
    start.wait()
    with open_registry(url, create=False) as reg:
        run_id = reg.start_run(f"writer-{writer}", {"writer": writer})
        for index in range(count):
            sid = reg.add_strategy(
                plugins=[f"w{writer}.plugin", "safety.toxicity"],
                params={"writer": writer, "index": index},
                origin="explore", run_id=run_id, reason=f"writer {writer} #{index}",
            )
            reg.record_scores(sid, {m: writer + index / 1000 for m in METRICS})
        reg.end_run(run_id, "complete")


def _pause_at_commit(flag: Path):
    """From now on, the next commit signals ``flag`` and hangs (the transaction stays open)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def hang(_conn):
        flag.write_text(str(os.getpid()))
        time.sleep(600)

    event.listen(Engine, "commit", hang)


def _victim(url: str, flag: str, where: str, done_before: int) -> None:
    with open_registry(url, create=False) as reg:
        for index in range(done_before):
            sid = reg.add_strategy(plugins=["a.p", "b.p"], params={"victim": where, "index": index},
                                   origin="explore")
            reg.record_scores(sid, {m: 1.0 for m in METRICS})
        if where == "add_strategy":
            _pause_at_commit(Path(flag))
            reg.add_strategy(plugins=["a.p", "b.p"], params={"victim": where, "index": -1}, origin="explore")
        else:
            sid = reg.add_strategy(plugins=["a.p", "b.p"], params={"victim": where, "index": -1},
                                   origin="explore")
            _pause_at_commit(Path(flag))
            reg.record_scores(sid, {m: 2.0 for m in METRICS})
    raise AssertionError("the victim should have been killed")


def _activator(url: str, ids: list[int], rounds: int, seed: int, start) -> None:
    rng = random.Random(seed)
    start.wait()
    with open_registry(url, create=False) as reg:
        for _ in range(rounds):
            reg.activate(rng.choice(ids), reason=f"activator {seed}")


# -- tests -------------------------------------------------------------------------------------

def _counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {t: conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar()
                    for t in ("strategies", "strategy_plugins", "scores", "lineage_events")}
    finally:
        engine.dispose()


def _check_integrity(url: str) -> None:
    """No strategy without plugins or its created event; scores all-or-nothing per strategy."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            q = conn.exec_driver_sql
            assert q("SELECT count(*) FROM strategies s WHERE NOT EXISTS"
                     " (SELECT 1 FROM strategy_plugins p WHERE p.strategy_id = s.id)").scalar() == 0
            assert q("SELECT count(*) FROM strategies s WHERE NOT EXISTS (SELECT 1 FROM"
                     " lineage_events e WHERE e.strategy_id = s.id AND e.event = 'created')").scalar() == 0
            assert q("SELECT count(*) FROM scores c WHERE NOT EXISTS"
                     " (SELECT 1 FROM strategies s WHERE s.id = c.strategy_id)").scalar() == 0
            partial = q("SELECT strategy_id, count(*) FROM scores GROUP BY strategy_id, step"
                        f" HAVING count(*) <> {len(METRICS)}").all()
            assert partial == []
    finally:
        engine.dispose()


def test_concurrent_writers_lose_and_duplicate_nothing(registry_url):
    writers, count = _sizes(registry_url)
    open_registry(registry_url).close()  # create the schema once, up front
    start = SPAWN.Event()
    procs = [SPAWN.Process(target=_writer, args=(registry_url, w, count, start)) for w in range(writers)]
    for p in procs:
        p.start()
    start.set()
    _join_all(procs, timeout=120)

    total = writers * count
    assert _counts(registry_url) == {
        "strategies": total, "strategy_plugins": 2 * total,
        "scores": len(METRICS) * total, "lineage_events": total,
    }
    with open_registry(registry_url, create=False) as reg:
        records = reg.list(order="asc")
        seen = sorted((r.params["writer"], r.params["index"]) for r in records)
        assert seen == [(w, i) for w in range(writers) for i in range(count)]
        for r in records:
            w, i = r.params["writer"], r.params["index"]
            assert r.plugins == sorted([f"w{w}.plugin", "safety.toxicity"])
            assert r.scores == {m: w + i / 1000 for m in METRICS}
            assert r.run_id is not None
        assert len({r.id for r in records}) == total
        assert len(reg.list(plugin="w3.plugin")) == count
    _check_integrity(registry_url)


@pytest.mark.parametrize("where", ["add_strategy", "record_scores"])
def test_writer_killed_inside_a_transaction_leaves_no_partial_record(registry_url, tmp_path, where):
    done_before = 5
    open_registry(registry_url).close()
    flag = tmp_path / "paused"
    victim = SPAWN.Process(target=_victim, args=(registry_url, str(flag), where, done_before))
    victim.start()
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert victim.is_alive(), "the victim exited before pausing"
        assert time.monotonic() < deadline, "the victim never reached its commit"
        time.sleep(0.02)
    before_kill = _counts(registry_url)  # the open transaction is invisible to others
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)
    assert victim.exitcode == -signal.SIGKILL

    counts = _counts(registry_url)
    assert counts == before_kill
    kept = done_before + (where == "record_scores")  # that strategy was committed before the kill
    assert counts == {"strategies": kept, "strategy_plugins": 2 * kept,
                      "scores": len(METRICS) * done_before, "lineage_events": kept}
    _check_integrity(registry_url)
    with open_registry(registry_url, create=False) as reg:  # the lock died with the victim
        sid = reg.add_strategy(plugins=["c.p"], params={"after": True}, origin="manual")
        reg.record_scores(sid, {m: 3.0 for m in METRICS})
        assert reg.get(sid).scores == {m: 3.0 for m in METRICS}


def test_concurrent_activation_never_yields_two_active(registry_url):
    procs_n, rounds = 4, 15
    with open_registry(registry_url) as reg:
        ids = [reg.add_strategy(plugins=["a.p"], params={"i": i}, origin="seed") for i in range(6)]
        other = reg.add_strategy(plugins=["a.p"], params={"i": "other"}, origin="seed", scope="other")
        reg.activate(other)
    start = SPAWN.Event()
    procs = [SPAWN.Process(target=_activator, args=(registry_url, ids, rounds, seed, start))
             for seed in range(procs_n)]
    for p in procs:
        p.start()
    engine = sa.create_engine(registry_url)
    try:
        start.set()
        while any(p.is_alive() for p in procs):
            with engine.connect() as conn:
                active = conn.exec_driver_sql(
                    "SELECT count(*) FROM strategies WHERE lifecycle = 'active' AND scope = 'default'"
                ).scalar()
            assert active <= 1
            time.sleep(0.05)
    finally:
        engine.dispose()
    _join_all(procs, timeout=60)

    with open_registry(registry_url, create=False) as reg:
        active = reg.list(lifecycle="active", scope="default")
        assert len(active) == 1
        assert reg.active_strategy("other").id == other
        events = sorted((e for i in ids for e in reg.lineage(i) if e.event in ("activated", "retired")),
                        key=lambda e: e.id)
    activations = [e for e in events if e.event == "activated"]
    # The activations form one chain: each names the strategy it replaced.
    assert activations[0].from_strategy_id is None
    for prev, cur in zip(activations, activations[1:], strict=False):
        assert cur.from_strategy_id == prev.strategy_id
    assert activations[-1].strategy_id == active[0].id
    assert sum(e.event == "retired" for e in events) == len(activations) - 1
