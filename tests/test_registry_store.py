"""Registry behaviour: writing, reading, filtering, lifecycle and lineage (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy import exc
from ufarsap_registry import (
    InvalidArgument,
    InvalidTransition,
    RunNotFound,
    StrategyNotFound,
    StrategyRecord,
)
from ufarsap_registry.encoding import content_hash
from ufarsap_registry.transactions import is_active_conflict, is_retryable

from ufarsap_engine.errors import UserError


def _engine(reg):
    return reg._engine  # tests reach below the API to prove what the database itself enforces


def _add(reg, plugins=("safety.toxicity",), params=None, origin="seed", **kw):
    return reg.add_strategy(plugins=list(plugins), params=params or {}, origin=origin, **kw)


def test_add_and_get_round_trip(registry):
    run_id = registry.start_run("evolve", {"lr": 1e-4, "plugins": ["safety.toxicity"]})
    sid = _add(registry, plugins=["self.eval", "safety.toxicity", "self.eval"],
               params={"weights": {"tox": 0.5}, "k": 3}, run_id=run_id, reason="first seed")
    rec = registry.get(sid)
    assert isinstance(rec, StrategyRecord)
    assert rec.id == sid and rec.run_id == run_id and rec.parent_id is None
    assert rec.plugins == ["safety.toxicity", "self.eval"]  # sorted, de-duplicated
    assert rec.params == {"weights": {"tox": 0.5}, "k": 3}
    assert (rec.origin, rec.state, rec.lifecycle, rec.scope) == ("seed", "candidate", "proposed", "default")
    assert rec.generation == 0 and rec.reason == "first seed" and rec.scores == {}
    assert rec.created_at.tzinfo is not None and rec.created_at.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - rec.created_at).total_seconds()) < 60
    assert rec.content_hash == content_hash(["self.eval", "safety.toxicity"], {"k": 3, "weights": {"tox": 0.5}})
    events = registry.lineage(sid)
    assert [(e.event, e.run_id) for e in events] == [("created", run_id)]
    with _engine(registry).connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT plugin_name, enabled FROM strategy_plugins WHERE strategy_id = {sid} ORDER BY 1"
        ).all()
    assert [(n, bool(e)) for n, e in rows] == [("safety.toxicity", True), ("self.eval", True)]


def test_content_hash_ignores_plugin_and_key_order(registry):
    a = registry.get(_add(registry, plugins=["b.x", "a.y"], params={"p": 1, "q": [1, 2]}))
    b = registry.get(_add(registry, plugins=["a.y", "b.x"], params={"q": [1, 2], "p": 1}))
    c = registry.get(_add(registry, plugins=["a.y", "b.x"], params={"q": [2, 1], "p": 1}))
    assert a.content_hash == b.content_hash != c.content_hash


def test_invalid_inputs_are_user_errors_naming_valid_values(registry):
    with pytest.raises(InvalidArgument, match="seed, explore, exploit, crossover, manual, plugin"):
        _add(registry, origin="mutated")
    with pytest.raises(InvalidArgument, match="candidate, running, complete, failed"):
        _add(registry, state="done")
    with pytest.raises(InvalidArgument, match="invalid plugin name"):
        _add(registry, plugins=["bad name; drop"])
    with pytest.raises(InvalidArgument, match="JSON"):
        _add(registry, params={"w": float("nan")})
    with pytest.raises(InvalidArgument, match="JSON"):
        _add(registry, params={"w": object()})
    with pytest.raises(StrategyNotFound, match="no parent strategy with id 999"):
        _add(registry, parent_id=999)
    with pytest.raises(RunNotFound):
        _add(registry, run_id="0" * 32)
    with pytest.raises(StrategyNotFound, match=r"no strategy with id 12345 in registry "):
        registry.get(12345)
    sid = _add(registry)
    with pytest.raises(InvalidArgument, match="must be a number"):
        registry.record_scores(sid, {"acc": "high"})
    with pytest.raises(InvalidArgument, match="lifecycle 'live': use one of proposed, active, retired, rejected"):
        registry.list(lifecycle="live")
    with pytest.raises(InvalidArgument, match="state"):
        registry.list(state="x'; DROP TABLE strategies;--")
    with pytest.raises(InvalidArgument, match="need a metric"):
        registry.list(top_k=3)
    with pytest.raises(InvalidArgument, match="order"):
        registry.list(order="sideways")
    assert issubclass(InvalidArgument, UserError)
    assert registry.list() == [registry.get(sid)]  # nothing else was written


def test_password_is_hidden_in_not_found_messages(registry):
    with pytest.raises(StrategyNotFound) as info:
        registry.get(7)
    if registry.dialect == "postgresql":
        assert "***" in str(info.value) and ":ufarsap@" not in str(info.value)


def test_scores_latest_step_and_upsert(registry):
    sid = _add(registry)
    registry.record_scores(sid, {"acc": 0.5, "tox": 0.2}, step=0)
    registry.record_scores(sid, {"acc": 0.7}, step=5)
    registry.record_scores(sid, {"acc": 0.6}, step=3)
    assert registry.get(sid).scores == {"acc": 0.7, "tox": 0.2}
    registry.record_scores(sid, {"acc": 0.8}, step=5)  # same (metric, step): replaced, not duplicated
    assert registry.get(sid).scores["acc"] == 0.8
    with _engine(registry).connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM scores WHERE strategy_id = {sid}").scalar() == 4
    with pytest.raises(StrategyNotFound):
        registry.record_scores(999, {"acc": 1.0})


def test_non_finite_scores_round_trip(registry):
    sid = _add(registry)
    registry.record_scores(sid, {"n": float("nan"), "p": float("inf"), "m": float("-inf"), "z": -0.0, "big": 1e308})
    rec = registry.get(sid)
    assert math.isnan(rec.scores["n"])
    assert rec.scores["p"] == math.inf and rec.scores["m"] == -math.inf
    assert rec.scores["z"] == 0.0 and rec.scores["big"] == 1e308
    out = rec.to_json_dict()
    assert out["scores"] == {"big": 1e308, "m": "-inf", "n": "nan", "p": "inf", "z": 0.0}
    json.dumps(out, allow_nan=False)  # strictly valid JSON
    assert out["created_at"].endswith("Z") or out["created_at"].endswith("+00:00")
    with _engine(registry).connect() as conn:
        rows = dict(conn.exec_driver_sql(
            f"SELECT metric, value_kind FROM scores WHERE strategy_id = {sid} AND value IS NULL"
        ).all())
    assert rows == {"n": "nan", "p": "inf", "m": "-inf"}


def _population(reg):
    """Six strategies with varied states, lifecycles, plugins and scores; returns their ids."""
    ids = {}
    ids["a"] = _add(reg, plugins=["safety.toxicity"], params={"i": 1})
    ids["b"] = _add(reg, plugins=["safety.toxicity", "self.eval"], params={"i": 2}, origin="explore", state="complete")
    ids["c"] = _add(reg, plugins=["self.eval"], params={"i": 3}, origin="exploit", state="complete")
    ids["d"] = _add(reg, plugins=["multi.debate"], params={"i": 4}, origin="crossover", state="failed")
    ids["e"] = _add(reg, plugins=["safety.toxicity"], params={"i": 5}, origin="manual", state="complete")
    ids["f"] = _add(reg, plugins=["safety.toxicity"], params={"i": 6}, scope="other", state="complete")
    scores = {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.99, "e": float("nan"), "f": 2.0}
    for key, value in scores.items():
        reg.record_scores(ids[key], {"reward": value})
    reg.record_scores(ids["c"], {"reward": 0.95}, step=1)  # latest step wins: c -> 0.95
    reg.record_scores(ids["a"], {"tox": 0.3})
    return ids


def test_list_filters_combine(registry):
    ids = _population(registry)

    def got(**kw):
        return [r.id for r in registry.list(**kw)]

    assert got() == sorted(ids.values(), reverse=True)
    assert got(order="asc") == sorted(ids.values())
    assert got(scope="default") == sorted([ids[k] for k in "abcde"], reverse=True)
    assert got(state="complete", scope="default") == [ids["e"], ids["c"], ids["b"]]
    assert got(plugin="self.eval") == [ids["c"], ids["b"]]
    assert got(plugin="safety.toxicity", state="complete", scope="default") == [ids["e"], ids["b"]]
    assert got(lifecycle="proposed", limit=2) == [ids["f"], ids["e"]]
    assert got(metric="tox") == [ids["a"]]
    assert got(metric="reward", scope="default") == [ids["d"], ids["c"], ids["b"], ids["a"], ids["e"]]
    assert got(metric="reward", scope="default", order="asc") == [ids["a"], ids["b"], ids["c"], ids["d"], ids["e"]]
    assert got(metric="reward", min_value=0.5, max_value=0.96) == [ids["c"], ids["b"]]
    assert got(metric="reward", min_value=0.95, max_value=0.95) == [ids["c"]]
    assert got(metric="reward", top_k=2) == [ids["f"], ids["d"]]
    assert got(metric="reward", top_k=2, state="complete", plugin="safety.toxicity") == [ids["f"], ids["b"]]
    assert got(metric="reward", top_k=3, limit=1) == [ids["f"]]
    assert got(metric="missing") == []


def test_top_k_ranks_infinities_and_puts_nan_last(registry):
    vals = {"nan": float("nan"), "hi": float("inf"), "lo": float("-inf"), "one": 1.0, "two": 2.0}
    ids = {k: _add(registry, params={"k": k}) for k in vals}
    for k, v in vals.items():
        registry.record_scores(ids[k], {"m": v})
    order = [ids[k] for k in ("hi", "two", "one", "lo", "nan")]
    assert [r.id for r in registry.list(metric="m")] == order
    assert [r.id for r in registry.list(metric="m", order="asc")] == [ids[k] for k in ("lo", "one", "two", "hi", "nan")]
    assert [r.id for r in registry.list(metric="m", min_value=1.5)] == [ids["hi"], ids["two"]]
    assert [r.id for r in registry.list(metric="m", max_value=1.5)] == [ids["one"], ids["lo"]]
    assert registry.best("m").id == ids["hi"]
    assert registry.best("m", higher_is_better=False).id == ids["lo"]


def test_best_skips_failed_rejected_and_other_scopes(registry):
    ids = _population(registry)
    assert registry.best("reward").id == ids["c"]  # d is higher but failed; f is another scope
    assert registry.best("reward", higher_is_better=False).id == ids["a"]
    registry.reject(ids["c"], "unsafe outputs")
    assert registry.best("reward").id == ids["b"]
    assert registry.best("reward", scope="other").id == ids["f"]
    assert registry.best("nothing") is None
    assert registry.best("reward", scope="nowhere") is None


@pytest.mark.parametrize("evil", [
    "x'; DROP TABLE strategies;--",
    "' OR '1'='1",
    "safety.toxicity' OR 1=1 --",
    "\"; DELETE FROM scores; --",
    "%",
    "_",
])
def test_sql_looking_filter_values_match_nothing(registry, evil):
    ids = _population(registry)
    assert registry.list(plugin=evil) == []
    assert registry.list(metric=evil) == []
    assert registry.list(scope=evil) == []
    assert registry.list(metric=evil, top_k=3, plugin=evil, scope=evil) == []
    assert registry.best(evil) is None and registry.best("reward", scope=evil) is None
    assert registry.active_strategy(scope=evil) is None
    assert registry.plugin_enablement(scope=evil) == {}
    assert len(registry.list()) == len(ids)  # tables intact
    with _engine(registry).connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM scores").scalar() == 8


def test_sql_looking_values_are_stored_verbatim(registry):
    evil = "x'; DROP TABLE strategies;--"
    sid = _add(registry, params={evil: evil}, reason=evil, scope=evil)
    registry.record_scores(sid, {evil: 1.0})
    rec = registry.get(sid)
    assert rec.params == {evil: evil} and rec.reason == evil and rec.scope == evil
    assert [r.id for r in registry.list(scope=evil, metric=evil)] == [sid]


def test_activate_retires_previous_and_records_lineage(registry):
    a, b = _add(registry, params={"i": 1}), _add(registry, params={"i": 2})
    other = _add(registry, params={"i": 3}, scope="other")
    assert registry.active_strategy() is None
    rec = registry.activate(a, reason="seed is good")
    assert rec.lifecycle == "active" and rec.reason == "seed is good"
    assert registry.activate(a).lifecycle == "active"  # idempotent: no new events
    registry.activate(other)
    registry.activate(b, reason="beats a")
    assert registry.active_strategy().id == b
    assert registry.get(a).lifecycle == "retired"
    assert registry.active_strategy("other").id == other  # scopes are independent
    ev_a = [(e.event, e.from_strategy_id) for e in registry.lineage(a)]
    ev_b = [(e.event, e.from_strategy_id) for e in registry.lineage(b)]
    assert ev_a == [("created", None), ("activated", None), ("retired", None)]
    assert ev_b == [("created", None), ("activated", a)]
    assert registry.lineage(a)[-1].detail["replaced_by"] == b
    assert registry.plugin_enablement() == {"safety.toxicity": b}


def test_plugin_enablement_lists_known_plugins(registry):
    a = _add(registry, plugins=["safety.toxicity", "self.eval"])
    _add(registry, plugins=["multi.debate"])
    _add(registry, plugins=["reflect.selfrefine"], scope="other")
    assert registry.plugin_enablement() == {"multi.debate": None, "safety.toxicity": None, "self.eval": None}
    registry.activate(a)
    assert registry.plugin_enablement() == {"multi.debate": None, "safety.toxicity": a, "self.eval": a}
    assert registry.plugin_enablement("other") == {"reflect.selfrefine": None}


def test_retire_and_reject_rules(registry):
    a, b, c = (_add(registry, params={"i": i}) for i in range(3))
    registry.activate(a)
    with pytest.raises(InvalidTransition, match="activate another strategy"):
        registry.reject(a, "bad")
    registry.reject(b, "toxic")
    assert registry.get(b).lifecycle == "rejected" and registry.get(b).reason == "toxic"
    with pytest.raises(InvalidTransition, match="rejected"):
        registry.activate(b)
    with pytest.raises(InvalidTransition):
        registry.retire(b)
    registry.retire(a, "pause")
    assert registry.active_strategy() is None and registry.get(a).lifecycle == "retired"
    registry.reject(a, "regressed")  # a retired strategy can be rejected
    registry.set_state(c, "failed")
    with pytest.raises(InvalidTransition, match="failed"):
        registry.activate(c)
    events = [e.event for e in registry.lineage(a)]
    assert events == ["created", "activated", "retired", "rejected"]
    assert registry.lineage(b)[-1].detail["reason"] == "toxic"


def test_one_active_per_scope_is_enforced_by_the_database(registry):
    a, b = _add(registry, params={"i": 1}), _add(registry, params={"i": 2})
    c = _add(registry, params={"i": 3}, scope="other")
    registry.activate(a)
    with _engine(registry).connect() as conn:
        with pytest.raises(exc.IntegrityError) as info:
            with conn.begin():
                conn.execute(sa.text("UPDATE strategies SET lifecycle = 'active' WHERE id = :i"), {"i": b})
        # ... and activation recognises this conflict (and only this one) as worth a retry.
        assert is_active_conflict(info.value)
        assert is_retryable(info.value, active_conflicts=True)
        assert not is_retryable(info.value, active_conflicts=False)
        with pytest.raises(exc.IntegrityError):
            with conn.begin():
                conn.execute(sa.text(
                    "INSERT INTO strategies (generation, origin, state, lifecycle, params, content_hash,"
                    " scope, reason, created_at) VALUES (0, 'manual', 'candidate', 'active', '{}', 'x',"
                    " 'default', '', :t)"), {"t": datetime.now(UTC)})
        with conn.begin():  # another scope may have its own active strategy
            conn.execute(sa.text("UPDATE strategies SET lifecycle = 'active' WHERE id = :i"), {"i": c})
        with conn.begin():  # retired/proposed are unconstrained
            conn.execute(sa.text("UPDATE strategies SET lifecycle = 'retired' WHERE id <> :i"), {"i": a})
    assert [r.id for r in registry.list(lifecycle="active")] == [a]


def test_other_integrity_errors_are_not_retried(registry):
    sid = _add(registry)
    with _engine(registry).connect() as conn, pytest.raises(exc.IntegrityError) as info:
        with conn.begin():
            conn.execute(sa.text("UPDATE strategies SET parent_id = 999 WHERE id = :i"), {"i": sid})
    assert not is_active_conflict(info.value)
    assert not is_retryable(info.value, active_conflicts=True)


@pytest.mark.parametrize("column,value", [
    ("state", "done"), ("lifecycle", "live"), ("origin", "magic"), ("generation", -1),
])
def test_check_constraints_reject_bad_values(registry, column, value):
    sid = _add(registry)
    with _engine(registry).connect() as conn, pytest.raises(exc.IntegrityError):
        with conn.begin():
            conn.execute(sa.text(f"UPDATE strategies SET {column} = :v WHERE id = :i"), {"v": value, "i": sid})


def test_scores_constraints(registry):
    sid = _add(registry)
    registry.record_scores(sid, {"acc": 1.0})
    with _engine(registry).connect() as conn:
        for sql in (
            "UPDATE scores SET value_kind = 'nan'",  # kind says NaN, value present
            "UPDATE scores SET value = NULL",  # kind says finite, no value
            "UPDATE scores SET value_kind = 'huge', value = NULL",
            "INSERT INTO scores (strategy_id, metric, step, value, value_kind, recorded_at)"
            " SELECT strategy_id, metric, step, value, value_kind, recorded_at FROM scores",
            "INSERT INTO scores (strategy_id, metric, step, value, value_kind, recorded_at)"
            " SELECT 999, metric, step, value, value_kind, recorded_at FROM scores",  # orphan
        ):
            with pytest.raises(exc.IntegrityError), conn.begin():
                conn.exec_driver_sql(sql)


def test_set_state_and_completed_at(registry):
    sid = _add(registry)
    registry.set_state(sid, "running")
    assert registry.get(sid).completed_at is None
    registry.set_state(sid, "complete", reason="evaluated")
    rec = registry.get(sid)
    assert rec.state == "complete" and rec.completed_at is not None and rec.reason == "evaluated"
    events = registry.lineage(sid)
    assert [(e.event, e.detail.get("from"), e.detail.get("to")) for e in events] == [
        ("created", None, None), ("state_changed", "candidate", "running"),
        ("state_changed", "running", "complete"),
    ]
    assert events[-1].at >= events[0].at


def test_ancestry_and_descendants(registry):
    root = _add(registry, params={"n": "root"})
    child = _add(registry, params={"n": "child"}, parent_id=root, origin="explore")
    sibling = _add(registry, params={"n": "sibling"}, parent_id=root, origin="exploit")
    grandchild = _add(registry, params={"n": "gc"}, parent_id=child, origin="crossover")
    explicit = _add(registry, params={"n": "x"}, parent_id=child, generation=7)
    assert registry.get(grandchild).generation == 2 and registry.get(explicit).generation == 7
    assert [r.id for r in registry.ancestry(grandchild)] == [root, child, grandchild]
    assert [r.id for r in registry.ancestry(root)] == [root]
    assert [r.id for r in registry.descendants(root)] == [child, sibling, grandchild, explicit]
    assert [r.id for r in registry.descendants(grandchild)] == []
    created = registry.lineage(grandchild)[0]
    assert created.event == "created" and created.from_strategy_id == child
    assert created.detail["origin"] == "crossover"
    with pytest.raises(StrategyNotFound):
        registry.ancestry(999)
    with pytest.raises(StrategyNotFound):
        registry.lineage(999)


def test_reap_stale_fails_running_strategies_of_dead_runs(registry):
    live = registry.start_run("live", {})
    dead = registry.start_run("dead", {})
    ended = registry.start_run("ended", {})
    s_live = _add(registry, run_id=live, state="running", params={"i": 1})
    s_dead = _add(registry, run_id=dead, state="running", params={"i": 2})
    s_dead_done = _add(registry, run_id=dead, state="complete", params={"i": 3})
    s_ended = _add(registry, run_id=ended, state="running", params={"i": 4})
    s_norun = _add(registry, state="running", params={"i": 5})
    with _engine(registry).connect() as conn, conn.begin():  # ended run left a strategy running
        conn.execute(sa.text("UPDATE runs SET status = 'complete', ended_at = heartbeat_at WHERE id = :r"),
                     {"r": ended})
    # Runs silent for over a second are stale; `live` heartbeats just before each reap, so a busy
    # machine has a full second of margin before it would count as stale too.
    time.sleep(1.2)
    registry.heartbeat(live)
    assert registry.reap_stale(timeout_s=1.0) == 2
    assert registry.get(s_dead).state == "failed"
    assert registry.get(s_dead).reason == "run stopped sending heartbeats"
    assert registry.get(s_dead).completed_at is not None
    assert registry.get(s_ended).state == "failed"
    assert registry.get(s_live).state == "running"
    assert registry.get(s_dead_done).state == "complete"
    assert registry.get(s_norun).state == "running"
    assert registry.lineage(s_dead)[-1].detail == {
        "from": "running", "to": "failed", "reason": "run stopped sending heartbeats"}
    registry.heartbeat(live)
    assert registry.reap_stale(timeout_s=1.0) == 0
    with _engine(registry).connect() as conn:
        statuses = dict(conn.exec_driver_sql("SELECT name, status FROM runs").all())
    assert statuses == {"live": "running", "dead": "killed", "ended": "complete"}
    with pytest.raises(RunNotFound):
        registry.heartbeat("nope")


def test_end_run_fails_its_running_strategies_and_start_run_reaps(registry):
    run = registry.start_run("r", {"a": 1}, scope="s")
    sid = _add(registry, run_id=run, state="running", scope="s")
    registry.end_run(run, "killed")
    assert registry.get(sid).state == "failed" and registry.get(sid).reason == "run ended (killed)"
    with pytest.raises(InvalidArgument, match="complete, failed, killed"):
        registry.end_run(run, "running")
    old = registry.start_run("old", {})
    s_old = _add(registry, run_id=old, state="running")
    with _engine(registry).connect() as conn, conn.begin():
        conn.execute(sa.text("UPDATE runs SET heartbeat_at = :t WHERE id = :r"),
                     {"t": datetime(2000, 1, 1, tzinfo=UTC), "r": old})
    registry.start_run("new", {})  # reaps with the default timeout
    assert registry.get(s_old).state == "failed"


def test_to_json_dict_is_plain_json(registry):
    sid = _add(registry, params={"w": [1, 2.5, None, True]})
    registry.set_state(sid, "complete")
    out = registry.get(sid).to_json_dict()
    assert list(out) == list(StrategyRecord.model_fields)
    assert json.loads(json.dumps(out)) == out
    assert isinstance(out["created_at"], str) and isinstance(out["completed_at"], str)
    ev = registry.lineage(sid)[0].to_json_dict()
    assert ev["event"] == "created" and isinstance(ev["at"], str)


def test_records_are_loaded_in_chunks(registry, monkeypatch):
    from ufarsap_registry import store

    monkeypatch.setattr(store, "CHUNK", 2)
    ids = [_add(registry, plugins=[f"p{i}.x", "q.y"], params={"i": i}) for i in range(5)]
    for i, sid in enumerate(ids):
        registry.record_scores(sid, {"m": float(i)})
    records = registry.list(order="asc")
    assert [r.id for r in records] == ids
    assert [r.scores for r in records] == [{"m": float(i)} for i in range(5)]
    assert [r.plugins for r in records] == [sorted([f"p{i}.x", "q.y"]) for i in range(5)]


def test_one_registry_is_safe_to_share_between_threads(registry):
    import threading

    errors = []

    def work(t):
        try:
            for i in range(15):
                sid = _add(registry, params={"t": t, "i": i})
                registry.record_scores(sid, {"m": float(i)})
                registry.list(metric="m", top_k=3)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted((r.params["t"], r.params["i"]) for r in registry.list()) == [
        (t, i) for t in range(4) for i in range(15)]


def test_pages_counts_metric_names_and_score_history(registry):
    """What the dashboard pages with: ``offset`` pages through the same order ``count`` counts,
    filters included; ``score_history`` keeps every step; an unknown id is not found."""
    ids = [registry.add_strategy(plugins=["safety.toxicity"] if i % 2 else ["safety.privacy"], params={"i": i},
                                 origin="explore") for i in range(7)]
    for n, sid in enumerate(ids):
        registry.record_scores(sid, {"reward": n / 10}, step=1)
    registry.record_scores(ids[0], {"reward": 0.9, "kl": 0.5}, step=2)
    ranked = [r.id for r in registry.list(metric="reward")]
    pages = [registry.list(metric="reward", limit=3, offset=o) for o in (0, 3, 6)]
    assert [r.id for page in pages for r in page] == ranked and [len(p) for p in pages] == [3, 3, 1]
    assert registry.count(metric="reward") == 7 and registry.count(plugin="safety.toxicity") == 3
    assert registry.count(metric="kl") == 1 and registry.count(metric="reward", min_value=0.45) == 3
    assert registry.count(plugin="x' OR '1'='1") == 0
    assert registry.metric_names() == ["kl", "reward"]
    assert registry.score_history(ids[0]) == {"reward": [(1, 0.0), (2, 0.9)], "kl": [(2, 0.5)]}
    with pytest.raises(StrategyNotFound):
        registry.score_history(10**9)
    with pytest.raises(InvalidArgument, match="offset"):
        registry.list(offset=-1)
