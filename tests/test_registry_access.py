"""Which registry a command uses, and that reading one never writes: queries create nothing,
change nothing (not even the journal mode) and can read a read-only file; only writers create."""

import hashlib
import json
import os
import sqlite3
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from ufarsap_registry import InvalidTransition, NoRegistry, open_registry


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "UFARSAP_REGISTRY_URL"}
    return {**env, **extra}


def _run(args, cwd, env=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ufarsap_engine", *args], cwd=cwd, env=env or _clean_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def filled(tmp_path):
    """A registry file with one complete strategy (id 1) and one child (id 2) scored."""
    path = tmp_path / "reg.sqlite"
    with open_registry(f"sqlite:///{path}") as reg:
        a = reg.add_strategy(plugins=["safety.toxicity"], params={}, origin="seed", state="complete")
        b = reg.add_strategy(plugins=["safety.privacy"], params={}, origin="explore", parent_id=a)
        reg.record_scores(a, {"probe.safety": 0.5})
        reg.record_scores(b, {"probe.safety": 0.7})
    return path


def test_a_query_in_another_directory_creates_nothing_and_says_where_it_looked(tmp_path):
    res = _run(["registry", "list"], cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert f"no registry at {tmp_path}/strategies_db/registry.sqlite" in res.stderr
    assert "ufarsap-engine registry upgrade" in res.stderr
    assert list(tmp_path.iterdir()) == []  # no empty strategies_db/ left behind
    res = _run(["plugins", "--json"], cwd=tmp_path)  # the default set is enabled; still nothing created
    assert res.returncode == 0 and any(r["enabled"] for r in json.loads(res.stdout)), res.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_registry_command_names_its_registry(filled, tmp_path):
    url = f"sqlite:///{filled}"
    for args in (["list"], ["show", "1"], ["best", "--metric", "probe.safety"], ["lineage", "1"]):
        res = _run(["registry", *args, "--registry", url], cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert f"registry: {filled}" in res.stderr.splitlines()
        res = _run(["registry", *args, "--registry", url, "--json"], cwd=tmp_path)
        assert json.loads(res.stdout)["registry"] == str(filled), args
    assert [r["id"] for r in json.loads(_run(["registry", "list", "--registry", url, "--json"],
                                             cwd=tmp_path).stdout)["strategies"]] == [2, 1]


def test_queries_leave_an_unrelated_sqlite_file_as_it_was(tmp_path):
    other = tmp_path / "app.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE notes (body TEXT)")
    con.execute("INSERT INTO notes VALUES ('keep me')")
    con.commit()
    con.close()
    before = _digest(other)
    for args in (["list"], ["show", "1"], ["best", "--metric", "m"], ["lineage", "1"]):
        res = _run(["registry", *args, "--registry", f"sqlite:///{other}"], cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        assert f"{other} holds no ufarsap-engine registry" in res.stderr and "Traceback" not in res.stderr
    assert _digest(other) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no -wal / -shm: not switched to WAL
    con = sqlite3.connect(other)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == [("notes",)]
    con.close()


def test_a_typo_in_the_path_is_an_error_not_a_new_registry(filled, tmp_path):
    typo = filled.with_name("reg.sqlte")
    for args in (["list"], ["activate", "1"], ["retire", "1"]):
        res = _run(["registry", *args, "--registry", f"sqlite:///{typo}"], cwd=tmp_path)
        assert res.returncode == 2 and f"no registry at {typo}" in res.stderr, res.stderr
    assert not typo.exists()
    with pytest.raises(NoRegistry):
        open_registry(f"sqlite:///{typo}", read_only=True)


def test_a_read_only_registry_file_can_be_queried(filled, tmp_path):
    filled.chmod(0o444)
    try:
        before = _digest(filled)
        res = _run(["registry", "list", "--registry", f"sqlite:///{filled}", "--json"], cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert len(json.loads(res.stdout)["strategies"]) == 2
        assert _digest(filled) == before
        # Even where file modes do not stop the process (root), the connection itself is read-only.
        with open_registry(f"sqlite:///{filled}", read_only=True) as reg:
            with reg._engine.connect() as conn, pytest.raises(sa.exc.OperationalError, match="readonly"):
                conn.exec_driver_sql("CREATE TABLE x (y INTEGER)")
    finally:
        filled.chmod(0o644)


@pytest.mark.postgres
def test_read_only_sessions_on_postgresql(pg_registry_url):
    open_registry(pg_registry_url).close()
    with open_registry(pg_registry_url, read_only=True) as reg:
        assert reg.list() == []
        with reg._engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="read-only"):
            conn.exec_driver_sql("CREATE TABLE x (y INTEGER)")


def test_a_run_creates_the_default_registry_and_says_where(tmp_path):
    res = _run(["run", "--plugins", "none", "--no-train", "--steps", "1", "--out", "out"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    path = tmp_path / "strategies_db" / "registry.sqlite"
    assert path.exists()
    assert f"registry: {path}" in res.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["registry"] == str(path)
    res = _run(["registry", "list", "--json"], cwd=tmp_path)
    assert res.returncode == 0 and len(json.loads(res.stdout)["strategies"]) == 1


# --- which strategies may be active ---------------------------------------------------------

def test_show_of_an_id_no_database_can_hold_is_not_found(filled, tmp_path):
    res = _run(["registry", "show", "99999999999999999999", "--registry", f"sqlite:///{filled}"], cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (f"ufarsap-engine: error: no strategy with id 99999999999999999999 in registry"
                                  f" sqlite:///{filled}")


def test_activate_refuses_strategies_of_live_or_dead_runs_that_did_not_complete(registry):
    live = registry.start_run("live", {})
    running = registry.add_strategy(plugins=["a.b"], params={"i": 1}, origin="manual", run_id=live, state="running")
    with pytest.raises(InvalidTransition, match=f"strategy {running} is still running"):
        registry.activate(running)
    dead = registry.start_run("dead", {})
    orphan = registry.add_strategy(plugins=["a.b"], params={"i": 2}, origin="manual", run_id=dead, state="running")
    with registry._engine.connect() as conn, conn.begin():  # the run stopped heartbeating long ago
        conn.execute(sa.text("UPDATE runs SET heartbeat_at = :t WHERE id = :r"),
                     {"t": datetime(2000, 1, 1, tzinfo=UTC), "r": dead})
    with pytest.raises(InvalidTransition, match=f"strategy {orphan} failed .run stopped sending heartbeats"):
        registry.activate(orphan)
    assert registry.active_strategy() is None


def test_a_strategy_that_fails_while_active_is_retired(registry):
    run = registry.start_run("evo", {})
    sid = registry.add_strategy(plugins=["a.b"], params={}, origin="explore", run_id=run, state="complete")
    registry.activate(sid)
    registry.set_state(sid, "failed", "its run diverged")
    rec = registry.get(sid)
    assert (rec.state, rec.lifecycle) == ("failed", "retired")
    assert registry.active_strategy() is None
    assert registry.lineage(sid)[-1].event == "retired"
    assert "failed while active: its run diverged" in registry.lineage(sid)[-1].detail["reason"]
    # The same when a run dies while its (older-style, still running) strategy is active.
    other = registry.add_strategy(plugins=["a.c"], params={}, origin="manual", run_id=run, state="running")
    with registry._engine.connect() as conn, conn.begin():
        conn.execute(sa.text("UPDATE strategies SET lifecycle = 'active' WHERE id = :i"), {"i": other})
    registry.end_run(run, "failed")
    assert registry.get(other).lifecycle == "retired" and registry.active_strategy() is None


def test_cli_activate_of_a_dead_runs_strategy_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    with open_registry(url) as reg:
        run = reg.start_run("dead", {})
        sid = reg.add_strategy(plugins=["safety.toxicity"], params={}, origin="manual", run_id=run, state="running")
        with reg._engine.connect() as conn, conn.begin():
            conn.execute(sa.text("UPDATE runs SET heartbeat_at = :t"), {"t": datetime(2000, 1, 1, tzinfo=UTC)})
    res = _run(["registry", "activate", str(sid), "--registry", url], cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"ufarsap-engine: error: strategy {sid} failed (run stopped sending heartbeats); it cannot be activated"]


# --- a busy SQLite registry -------------------------------------------------------------------

HOLDER = """
import sqlite3, sys, time
from ufarsap_registry import open_registry
url, path = sys.argv[1], sys.argv[2]
with open_registry(url) as reg:
    reg.start_run("trainer-7", {})
con = sqlite3.connect(path, isolation_level=None)
con.execute("BEGIN IMMEDIATE")  # hold the write lock, as a long write would
print("locked", flush=True)
time.sleep(120)
"""


def test_a_busy_registry_says_so_and_by_whom_then_gives_up(filled, tmp_path):
    import subprocess
    import sys
    import time

    url = f"sqlite:///{filled}"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(filled)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        res = _run(["registry", "retire", "1", "--registry", url], cwd=tmp_path,
                   env=_clean_env(UFARSAP_REGISTRY_BUSY_TIMEOUT="3"))
        took = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    notice, error = res.stderr.strip().splitlines()
    assert f"registry {filled} is busy: pid {holder.pid} (run 'trainer-7'" in notice
    assert "waiting up to 3 s" in notice
    assert error.startswith(f"ufarsap-engine: error: registry {filled} is busy") and "nothing was changed" in error
    assert took < 30
    with open_registry(url, read_only=True) as reg:  # the lock died with its holder; nothing changed
        assert reg.get(1).lifecycle == "proposed"


def test_record_run_end_accepts_every_run_status(tmp_path):
    """What a run's end writes, for each way it can end (``interrupted``: SIGINT/SIGTERM)."""
    from ufarsap_registry import open_registry

    from ufarsap_engine.run import record_run_end

    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    for status, state in (("complete", "complete"), ("failed", "failed"), ("interrupted", "failed")):
        with open_registry(url) as reg:
            run = reg.start_run(status, {})
            sid = reg.add_strategy(plugins=[], params={"s": status}, origin="manual", run_id=run, state="running")
        assert record_run_end(url, run, sid, status, {"loss": 1.5}, 7, wait_s=30) == []
        with open_registry(url, read_only=True) as reg:
            rec = reg.get(sid)
            assert (rec.state, rec.scores) == (state, {"loss": 1.5})
            with reg._engine.connect() as conn:
                assert conn.exec_driver_sql(f"SELECT status FROM runs WHERE id = '{run}'").scalar() == status


def test_tables_show_the_metric_asked_for_and_show_prints_a_score_table(tmp_path):
    """``list/best --metric M`` give M its own column (even where a strategy has many scores that
    sort before it); ``show`` prints scores one per row; JSON keeps every score."""
    path = tmp_path / "reg.sqlite"
    with open_registry(f"sqlite:///{path}") as reg:
        a = reg.add_strategy(plugins=["safety.toxicity"], params={}, origin="seed", state="complete")
        b = reg.add_strategy(plugins=["safety.privacy"], params={}, origin="explore", parent_id=a, state="complete")
        many = {f"a.metric{i}": float(i) for i in range(6)}
        reg.record_scores(a, {**many, "z.chosen": 0.25})
        reg.record_scores(b, {**many, "z.chosen": 0.75})
    url = f"sqlite:///{path}"
    for args in (["list", "--metric", "z.chosen", "--top", "2"], ["best", "--metric", "z.chosen"]):
        res = _run(["registry", *args, "--registry", url], cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        header = next(line for line in res.stdout.splitlines() if "lifecycle" in line)
        assert "z.chosen" in header, res.stdout
        rows = [line for line in res.stdout.splitlines() if "safety.privacy" in line]
        assert rows and "0.75" in rows[0].split("│")[8], res.stdout  # the metric's own column
    listed = _run(["registry", "list", "--metric", "z.chosen", "--top", "2", "--ascending", "--registry", url],
                  cwd=tmp_path).stdout
    assert listed.index("safety.toxicity") < listed.index("safety.privacy")  # 0.25 first
    res = _run(["registry", "show", str(b), "--registry", url], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    score_rows = [line for line in res.stdout.splitlines() if "a.metric" in line or "z.chosen" in line]
    assert len(score_rows) == 7 and all(line.count("│") >= 2 for line in score_rows), res.stdout
    assert "{" not in res.stdout.split("scores:")[1].split("lineage:")[0]  # not a JSON blob
    data = json.loads(_run(["registry", "show", str(b), "--registry", url, "--json"], cwd=tmp_path).stdout)
    assert data["scores"]["z.chosen"] == 0.75 and len(data["scores"]) == 7
