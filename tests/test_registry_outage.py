"""A registry outage during a run: training never stops or blocks, what was held back is written
when the registry is back, and a run that ends during the outage waits a bounded time and says
in one line what was not recorded. PostgreSQL is "paused" with a loopback TCP proxy that stops
forwarding (as a SIGSTOPped server: connections are accepted, nothing is answered)."""

import json
import sys
import time

import pytest
import sqlalchemy as sa

from helpers import REPO
from ufarsap_engine.config import RunConfig
from ufarsap_engine.run import execute, prepare

sys.path.insert(0, str(REPO / "scripts"))
from pausable_proxy import PausableProxy  # noqa: E402

pytestmark = pytest.mark.postgres


@pytest.fixture
def proxied(pg_registry_url):
    real = sa.make_url(pg_registry_url)
    proxy = PausableProxy(real.host, real.port or 5432)
    url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    yield proxy, url, pg_registry_url
    proxy.close()


def _cfg(tmp_path, url, **kw):
    return RunConfig(plugins=[], train_model=False, out=str(tmp_path / "out"), registry=url,
                     registry_heartbeat_s=0.2, batch_samples=2, **kw)


def _run_row(url, run_id):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT status, heartbeat_at, ended_at FROM runs WHERE id = :r"),
                                {"r": run_id}).one()
    finally:
        engine.dispose()


def test_a_paused_registry_neither_stops_nor_blocks_the_run_and_catches_up(proxied, tmp_path):
    proxy, url, direct = proxied
    prepared = prepare(_cfg(tmp_path, url, steps=60, registry_wait_s=30))
    stamps: dict[int, float] = {}

    def progress(step, metrics=None):
        stamps[step] = time.monotonic()
        if step == 5:
            proxy.pause()
        if step == 45:  # ~2 s later: ten heartbeat periods without a registry
            proxy.resume()
        time.sleep(0.05)

    summary = execute(prepared, progress=progress)
    assert summary["status"] == "complete" and "registry_unrecorded" not in summary
    gaps = [stamps[s + 1] - stamps[s] for s in range(5, 45)]
    assert max(gaps) < 1.0, f"a step waited {max(gaps):.1f} s for the registry"
    assert stamps[45] - stamps[5] > 1.5  # the outage was longer than several heartbeats
    status, beat, ended = _run_row(direct, summary["run_id"])
    assert status == "complete" and ended is not None
    from ufarsap_registry import open_registry
    with open_registry(direct, read_only=True) as reg:
        rec = reg.get(summary["strategy_id"])
    assert rec.state == "complete" and "emergence.score" in rec.scores


def test_a_run_ending_during_the_outage_waits_a_bounded_time_and_says_what_is_missing(proxied, tmp_path, capfd):
    proxy, url, direct = proxied
    prepared = prepare(_cfg(tmp_path, url, steps=4, registry_wait_s=2))
    started: list[float] = []

    def progress(step, metrics=None):
        if step == 1:  # the run is registered; the registry goes away for the rest of it
            proxy.pause()
            started.append(time.monotonic())

    summary = execute(prepared, progress=progress)
    took = time.monotonic() - started[0]
    assert took < 10, f"the end of the run waited {took:.1f} s"
    sid, rid = summary["strategy_id"], summary["run_id"][:8]
    assert summary["registry_unrecorded"] == [
        f"final scores of strategy {sid}", f"state of strategy {sid} (complete)", f"end of run {rid} (complete)"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["registry_unrecorded"]
    warning = [line for line in capfd.readouterr().err.splitlines() if "not recorded" in line]
    assert len(warning) == 1 and "did not answer within 2 s" in warning[0]
    assert ":ufarsap@" not in warning[0]
    proxy.resume()

