"""The registry's active strategy controls which plugins run: a run without --plugins follows
it, and picks up an activation made elsewhere (another shell, another node) at the next round
boundary. Runs on SQLite and PostgreSQL."""

import importlib
import json
import sys

import pytest

from helpers import good_plugin_source, make_plugin_dist, run_cli
from ufarsap_engine.config import RunConfig
from ufarsap_engine.run import execute, prepare

ACTIVATOR = good_plugin_source().replace("class Plugin:", '''
import os
from ufarsap_engine.hookspecs import hookimpl as _impl

class Plugin:
    @_impl
    def ufarsap_round_end(self, report):
        # `ufarsap-engine registry activate ID` typed in another shell (plugins may not write
        # the registry themselves), at a known moment: the end of round 1.
        if report.round == 1:
            import subprocess, sys
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
            subprocess.run([sys.executable, "-m", "ufarsap_engine", "registry", "activate", os.environ["CONTROL_TARGET"],
                            "--registry", os.environ["CONTROL_URL"]], env=env, check=True, capture_output=True)
''', 1)


@pytest.fixture
def plugins_on_path(tmp_path, monkeypatch):
    site = tmp_path / "site"
    make_plugin_dist(site, "first-dist", {"safety.first": "firstplug:Plugin"}, {"firstplug": ACTIVATOR})
    make_plugin_dist(site, "second-dist", {"safety.second": "secondplug:Plugin"}, {"secondplug": good_plugin_source()})
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    for mod in ("firstplug", "secondplug"):
        sys.modules.pop(mod, None)


def test_activation_elsewhere_takes_effect_at_the_next_round(plugins_on_path, registry_url, tmp_path, monkeypatch):
    from ufarsap_registry import open_registry

    with open_registry(registry_url) as reg:
        first = reg.add_strategy(plugins=["safety.first"], params={}, origin="manual")
        second = reg.add_strategy(plugins=["safety.second"], params={}, origin="manual")
        reg.activate(first)
    monkeypatch.setenv("CONTROL_URL", registry_url)
    monkeypatch.setenv("CONTROL_TARGET", str(second))
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(f"paragraph {i} is fine" if i % 2 else f"paragraph {i} is bad" for i in range(40)))
    cfg = RunConfig(data=str(corpus), steps=20, round_steps=10, window_steps=5, batch_samples=4, train_model=False,
                    out=str(tmp_path / "run"), registry=registry_url)
    summary = execute(prepare(cfg))
    assert summary["plugins_source"] == "registry" and summary["plugins"] == ["safety.first"]
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    before, after = metrics[:10], metrics[10:]
    assert all(m.get("plugin.safety.first") == 1.0 and "plugin.safety.second" not in m for m in before)
    assert all(m.get("plugin.safety.second") == 1.0 and "plugin.safety.first" not in m for m in after)
    assert all(m["strategy.id"] == second for m in after)
    with open_registry(registry_url) as reg:
        assert reg.active_strategy().id == second
        assert len(reg.list(lifecycle="active")) == 1


@pytest.mark.slow  # trains a model (tens of seconds on 2 cores)
def test_evolving_run_writes_candidates_and_changes_active_plugins(tmp_path):
    """`run --evolve` on the embedded default: candidates, rejections and an integrated strategy
    with lineage; the integrated strategy's plugins are what the next round runs."""
    reg_url = f"sqlite:///{tmp_path / 'reg.sqlite'}"
    res = run_cli("run", "--no-train", "--evolve", "--plugins", "safety.toxicity", "--steps", "30",
                  "--set", "round_steps=10", "--set", "evolution.population_size=3", "--out", str(tmp_path / "run"),
                  "--registry", reg_url, "--json", cwd=tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    from ufarsap_registry import open_registry

    with open_registry(reg_url) as reg:
        everything = reg.list()
        integrated = [r for r in everything if r.lifecycle in ("active", "retired") and r.origin != "manual"]
        assert any(r.lifecycle == "rejected" for r in everything) or len(integrated) >= 2
        active = reg.active_strategy()
        assert active is not None and active.origin != "manual"
        events = [e.event for e in reg.lineage(active.id)]
        assert "activated" in events
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = {k[len("plugin."):] for k, v in metrics[-1].items() if k.startswith("plugin.")}
    assert last == set(active.plugins)
    listing = run_cli("plugins", "--json", "--registry", reg_url, cwd=tmp_path)
    enabled = {r["name"] for r in json.loads(listing.stdout) if r["enabled"]}
    assert enabled == set(active.plugins)


def test_a_run_of_the_active_strategy_trains_with_its_objective(tmp_path):
    """One objective schema: the active strategy's ``objective`` is what a run of it trains
    with (a data-side family included); settings the run gives itself win over it."""
    from ufarsap_engine.config import ObjectiveConfig
    from ufarsap_engine.evolution.strategy import Strategy
    from ufarsap_registry import open_registry

    url = f"sqlite:///{tmp_path / 'reg.db'}"
    objective = ObjectiveConfig(families={"safety": "mask"}, beta=0.7, lambda_paradigm=0.4)
    plugins, params = Strategy(plugins=["safety.toxicity"], objective=objective).to_registry()
    with open_registry(url) as reg:
        reg.activate(reg.add_strategy(plugins=plugins, params=params, origin="manual"))
    cfg = RunConfig(registry=url, out=str(tmp_path / "run"), steps=1, train_model=False)
    prepared = prepare(cfg)
    try:
        got = prepared.cfg.objective
        assert got.families["safety"] == "mask" and got.beta == 0.7 and got.lam("self") == 0.4
        assert prepared.settings["objective"] == got.model_dump(mode="json")  # what resume compares
    finally:
        prepared.registry.close()
    own = RunConfig.model_validate({"registry": url, "out": str(tmp_path / "run2"), "steps": 1, "train_model": False,
                                    "objective": {"beta": 0.2}})
    prepared = prepare(own)
    try:
        assert prepared.cfg.objective.beta == 0.2 and prepared.cfg.objective.families["safety"] == "mask"
    finally:
        prepared.registry.close()
    # --plugins chooses the plugins itself: the strategy's objective does not apply
    flagged = prepare(RunConfig(registry=url, out=str(tmp_path / "run3"), steps=1, train_model=False,
                                plugins=["safety.toxicity"]))
    try:
        assert flagged.cfg.objective == RunConfig().objective
    finally:
        flagged.registry.close()
