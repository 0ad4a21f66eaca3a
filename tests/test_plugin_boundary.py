"""The boundary around plugin code: copies, fresh validation, time limits, caught exits, no
registry writes. Each plugin here does one bad thing; the engine names it and carries on or stops."""

import importlib
import json
import os
import sys
import time

import pytest

from helpers import good_plugin_source, make_plugin_dist, run_cli
from ufarsap_engine.alignment.scoring import score_batch
from ufarsap_engine.errors import PluginError
from ufarsap_engine.plugin_host import PluginHost
from ufarsap_engine.schemas import AlignmentState, Horizon, Sample, TextBatch

HEADER = '''
import sys, time
from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import PluginInfo, ScaleScores

class Plugin:
    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm="safety", description="test", scales=["document"], horizons=["short", "long"])

    @hookimpl
    def ufarsap_score_document(self, batch, state):
'''

BODIES = {
    "mutator": """        state.short["safety"] = float("nan")
        del batch.samples[1:]
        return ScaleScores(sample_scores=[1.0 for _ in batch.samples])""",
    "construct": """        return ScaleScores.model_construct(sample_scores=[float("nan") for _ in batch.samples], spans=None,
                                           unit_scores=None, details={})""",
    "sleeper": """        time.sleep(600)""",
    "exiter": """        sys.exit(3)""",
    "interrupter": """        raise KeyboardInterrupt""",
    "registrar": """        import os
        from ufarsap_registry import open_registry
        with open_registry(os.environ["UFARSAP_REGISTRY_URL"]) as reg:
            n = len(reg.list())
            try:
                reg.add_strategy(plugins=["safety.registrar"], params={}, origin="manual", reason="mine")
            except Exception:
                pass  # swallowing the refusal does not hide it
        return ScaleScores(sample_scores=[1.0 for _ in batch.samples], details={"seen": n})""",
}


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    for name, body in BODIES.items():
        make_plugin_dist(root, f"{name}-dist", {f"safety.{name}": f"{name}plug:Plugin"}, {f"{name}plug": HEADER + body + "\n"})
    make_plugin_dist(root, "good-dist", {"safety.good": "goodplug:Plugin"}, {"goodplug": good_plugin_source()})
    make_plugin_dist(root, "hangimport-dist", {"safety.hangimport": "hangimportplug:Plugin"},
                     {"hangimportplug": "import time\ntime.sleep(600)\n"})
    make_plugin_dist(root, "exitimport-dist", {"safety.exitimport": "exitimportplug:Plugin"},
                     {"exitimportplug": "import sys\nsys.exit(4)\n"})
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    yield root
    for mod in [f"{n}plug" for n in (*BODIES, "good", "exitimport")]:
        sys.modules.pop(mod, None)


def batch(*texts):
    return TextBatch(samples=[Sample(sample_id=str(i), text=t) for i, t in enumerate(texts)])


def test_plugins_get_copies_and_cannot_change_engine_state(site):
    host = PluginHost(["safety.mutator", "safety.good"], strict=False)
    b, state = batch("one", "two", "three"), AlignmentState(short={"safety": 0.5})
    cells = score_batch(host, b, Horizon.SHORT, state)
    assert len(b) == 3 and state.short == {"safety": 0.5}, "the engine's batch and a(t) are untouched"
    assert len(cells.results[("safety.good", "document")].sample_scores) == 3, "the next plugin sees the whole batch"
    # what it returned (for its shortened copy) is checked against the engine's batch, naming it
    assert host.quarantine_summary()["safety.mutator"] == {
        "hook": "ufarsap_score_document", "reason": "returned 1 sample_scores for a batch of 3",
        "distribution": "mutator-dist"}


def test_results_are_validated_afresh(site):
    with pytest.raises(PluginError, match=r"safety.construct.*ufarsap_score_document.*not a finite number"):
        score_batch(PluginHost(["safety.construct"]), batch("a", "b"), Horizon.SHORT, AlignmentState())


@pytest.mark.parametrize("name, problem", [
    ("safety.exiter", "called sys.exit(3)"),
    ("safety.interrupter", "raised KeyboardInterrupt"),
])
def test_exits_and_interrupts_from_a_hook_are_the_plugins_failure(site, name, problem):
    with pytest.raises(PluginError) as err:
        score_batch(PluginHost([name]), batch("a"), Horizon.SHORT, AlignmentState())
    assert name in str(err.value) and "ufarsap_score_document" in str(err.value) and problem in str(err.value)


def test_a_hanging_hook_times_out(site, capsys):
    host = PluginHost(["safety.sleeper", "safety.good"], strict=False, call_timeout_s=0.5)
    t0 = time.monotonic()
    cells = score_batch(host, batch("a"), Horizon.SHORT, AlignmentState())
    assert time.monotonic() - t0 < 5
    assert {k[0] for k in cells.results} == {"safety.good"}
    assert host.quarantine_summary()["safety.sleeper"]["reason"] == "did not return within 0.5 s"
    assert "safety.sleeper" in capsys.readouterr().err
    with pytest.raises(PluginError, match=r"safety.sleeper.*ufarsap_score_document: did not return within 0.2 s"):
        score_batch(PluginHost(["safety.sleeper"], call_timeout_s=0.2), batch("a"), Horizon.SHORT, AlignmentState())


@pytest.mark.parametrize("name, problem", [
    ("safety.hangimport", "did not return within 0.5 s"),
    ("safety.exitimport", "called sys.exit(4)"),
])
def test_imports_that_hang_or_exit_are_the_plugins_failure(site, name, problem):
    t0 = time.monotonic()
    with pytest.raises(PluginError) as err:
        PluginHost([name], import_timeout_s=0.5)
    assert time.monotonic() - t0 < 5
    assert f"plugin '{name}'" in str(err.value) and "import" in str(err.value) and problem in str(err.value)


def test_plugins_cannot_write_the_registry(site, tmp_path, monkeypatch):
    from ufarsap_registry import open_registry

    url = f"sqlite:///{tmp_path / 'reg.sqlite'}"
    monkeypatch.setenv("UFARSAP_REGISTRY_URL", url)
    with open_registry(url, create=True) as reg:
        reg.add_strategy(plugins=["safety.good"], params={}, origin="manual", reason="the user's")
        before = [(r.id, r.plugins) for r in reg.list()]
    with pytest.raises(PluginError, match=r"safety.registrar.*ufarsap_score_document.*may only read"):
        score_batch(PluginHost(["safety.registrar"]), batch("a"), Horizon.SHORT, AlignmentState())
    with open_registry(url) as reg:
        assert [(r.id, r.plugins) for r in reg.list()] == before
        reg.add_strategy(plugins=["safety.good"], params={}, origin="manual", reason="the engine still writes")


# --- through the command line --------------------------------------------------------------------------

@pytest.fixture
def cli_env(site, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("A calm paragraph.\n\nA bad paragraph.\n\nAnother calm one.\n")
    reg = tmp_path / "reg.sqlite"
    env = {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "UFARSAP_REGISTRY_URL": f"sqlite:///{reg}"}
    return tmp_path, env, corpus, reg


def _runs(reg):
    import sqlite3
    con = sqlite3.connect(reg)
    try:
        return con.execute("SELECT status FROM runs").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("plugin, extra, needle", [
    ("safety.exiter", [], "called sys.exit(3)"),
    ("safety.interrupter", [], "raised KeyboardInterrupt"),
    ("safety.sleeper", ["--set", "plugin_timeouts.call_s=1"], "did not return within 1 s"),
])
def test_run_stops_with_one_line_naming_the_plugin(cli_env, plugin, extra, needle):
    tmp, env, corpus, reg = cli_env
    res = run_cli("run", "--plugins", plugin, "--no-train", "--steps", "2", "--data", str(corpus),
                  "--out", str(tmp / "out"), *extra, cwd=tmp, env=env, timeout=120)
    assert res.returncode == 1, (res.stdout, res.stderr)
    lines = [x for x in res.stderr.splitlines() if x.strip() and not x.startswith("run ")]  # not the progress bar
    assert "Traceback" not in res.stderr
    assert len(lines) == 1 and plugin in lines[0] and "ufarsap_score_document" in lines[0] and needle in lines[0], lines
    assert _runs(reg) == [("failed",)]
    assert json.loads((tmp / "out" / "summary.json").read_text())["status"] == "failed"


def test_tolerant_quarantine_is_one_line_and_recorded(cli_env):
    tmp, env, corpus, reg = cli_env
    res = run_cli("run", "--plugins", "safety.exiter,safety.good", "--tolerant", "--no-train", "--steps", "2",
                  "--data", str(corpus), "--out", str(tmp / "out"), "--json", cwd=tmp, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Warning:" not in res.stderr and ".py:" not in res.stderr
    lines = [x for x in res.stderr.splitlines() if "quarantined" in x]
    assert lines == ["ufarsap-engine: warning: plugin 'safety.exiter' (distribution exiter-dist) failed in "
                     "ufarsap_score_document: called sys.exit(3); quarantined for the rest of this run"]
    summary = json.loads(res.stdout)
    assert summary["quarantined"] == {"safety.exiter": {"hook": "ufarsap_score_document", "reason": "called sys.exit(3)",
                                                        "distribution": "exiter-dist"}}
    from ufarsap_registry import open_registry
    with open_registry(env["UFARSAP_REGISTRY_URL"]) as r:
        rec = r.get(summary["strategy_id"])
    assert rec.scores.get("quarantined.safety.exiter") == 1.0
    assert "quarantined safety.exiter in ufarsap_score_document: called sys.exit(3)" in rec.reason


def test_plugins_listing_survives_hanging_and_exiting_imports(cli_env):
    tmp, env, _, _ = cli_env
    t0 = time.monotonic()
    res = run_cli("plugins", "--json", "--import-timeout", "1", cwd=tmp, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["safety.hangimport"]["error"] == "did not return within 1 s"
    assert rows["safety.exitimport"]["error"] == "called sys.exit(4)"
    assert rows["safety.good"]["error"] is None
    assert time.monotonic() - t0 < 60


def test_evolution_explores_only_healthy_plugins(cli_env):
    """Broken plugins installed through real entry points, not selected: evolution leaves them out,
    says so once each, and records them; no candidate strategy ever names them."""
    tmp, env, _, reg = cli_env
    corpus = tmp / "many.txt"
    corpus.write_text("\n\n".join(f"A calm paragraph number {i}. It is fine." if i % 3 else f"A bad paragraph {i}."
                                  for i in range(40)))
    res = run_cli("run", "--evolve", "--no-train", "--plugins", "safety.good", "--steps", "4", "--set", "round_steps=2",
                  "--set", "evolution.population_size=3", "--set", "plugin_timeouts.call_s=3",
                  "--set", "plugin_timeouts.import_s=3", "--data", str(corpus),
                  "--out", str(tmp / "evo"), "--json", cwd=tmp, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    broken = {"safety.exitimport": ("import", "called sys.exit(4)"),
              "safety.hangimport": ("import", "did not return within 3 s"),
              "safety.interrupter": ("ufarsap_score_document", "raised KeyboardInterrupt"),
              "safety.registrar": ("ufarsap_score_document", "plugins may only read it"),
              "safety.exiter": ("ufarsap_score_document", "called sys.exit(3)"),
              "safety.sleeper": ("ufarsap_score_document", "did not return within 3 s"),
              "safety.construct": ("ufarsap_score_document", "not a finite number")}
    for name, (hook, reason) in broken.items():
        assert summary["quarantined"][name]["hook"] == hook and reason in summary["quarantined"][name]["reason"]
        assert summary["final_metrics"][f"evolution.quarantined.{name}"] == 1.0
        assert sum(f"plugin '{name}'" in line for line in res.stderr.splitlines()) == 1
    import sqlite3
    con = sqlite3.connect(reg)
    try:
        used = {r[0] for r in con.execute("SELECT plugin_name FROM strategy_plugins")}
        recorded = {r[0] for r in con.execute("SELECT metric FROM scores WHERE metric LIKE 'evolution.quarantined.%'")}
    finally:
        con.close()
    assert not used & set(broken), used
    assert {f"evolution.quarantined.{n}" for n in broken} <= recorded


def test_a_real_ctrl_c_during_a_hook_is_the_users_interrupt(site):
    """A SIGINT delivered while a hook runs interrupts the run (it is not the plugin's failure)."""
    import signal
    import threading

    host = PluginHost(["safety.sleeper"], call_timeout_s=30)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        score_batch(host, batch("a"), Horizon.SHORT, AlignmentState())
    assert time.monotonic() - t0 < 5 and not host.quarantined
