"""Evolution rounds against a real registry: integration decisions, lineage, kill and resume,
and the emergence report. ``registry`` (tests/conftest.py) runs each test on SQLite and on
PostgreSQL ($UFARSAP_TEST_PG_URL, a fresh schema per test)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from test_evolution_support import ALL_SAFETY, fakes, probe_evaluator  # noqa: F401  (fixture)
from ufarsap_engine.errors import UserError
from ufarsap_engine.evolution import (
    Candidate,
    Evaluation,
    Evolution,
    EvolutionConfig,
    Proposals,
    RepeatedEvaluator,
    Strategy,
    format_report,
    report,
)
from ufarsap_engine.plugin_host import installed_plugins

TESTS = Path(__file__).resolve().parent


def fake_installed(broken: bool = False) -> dict:
    """Only the fake plugins (keeps the built-ins, and their imports, out of these tests)."""
    return {k: v for k, v in installed_plugins().items()
            if v.distribution == "evo-fakes" and (broken or k != "safety.fbroken")}


class FixedExplorer:
    """Proposes exactly the given strategies (to test integration decisions in isolation)."""

    def __init__(self, *strategies: Strategy):
        self.strategies = strategies

    def propose(self, incumbent, incumbent_id, history, n, round_index, state=None):
        return Proposals([Candidate(s, "explore", incumbent_id, f"fixed: {s.short()}") for s in self.strategies])


def config(scope="default", **kw) -> EvolutionConfig:
    return EvolutionConfig(scope=scope, seed=3, **kw)


def test_truly_worse_never_integrated_clearly_better_is(registry, fakes):
    ev = probe_evaluator(fakes)
    worse = [Strategy(plugins=[]), Strategy(plugins=["reflect.fnoisy"]), Strategy(plugins=["safety.ftox"]),
             Strategy(plugins=[*ALL_SAFETY[:-1], "reflect.fnoisy"])]
    with Evolution(registry, ev, config("strong", default_plugins=ALL_SAFETY), installed=fake_installed(),
                   explorer=FixedExplorer(*worse)) as evo:
        res = evo.run_round()
    seed = registry.active_strategy("strong")
    assert res.seeded_id == seed.id and seed.origin == "seed" and seed.plugins == ALL_SAFETY
    assert res.integrated_id is None and len(res.rejected) == 4
    for sid in res.rejected:
        rec = registry.get(sid)
        assert rec.lifecycle == "rejected" and rec.state == "complete"
        assert "not beneficial" in rec.reason and "vs margin" in rec.reason  # the numbers
        assert rec.scores["evolution.beneficial"] == 0.0 and rec.scores["evolution.gain"] < 0
    assert registry.get(min(res.rejected)).scores["detect.recall_macro"] == 0.0  # all safety off

    better = Strategy(plugins=ALL_SAFETY)
    with Evolution(registry, ev, config("weak", default_plugins=["safety.ftox"]), installed=fake_installed(),
                   explorer=FixedExplorer(Strategy(plugins=[]), better)) as evo:
        res = evo.run_round()
    active = registry.active_strategy("weak")
    assert res.integrated_id == active.id and active.plugins == ALL_SAFETY
    assert res.improvement > res.margin > 0 and registry.get(res.seeded_id).lifecycle == "retired"
    assert active.scores["evolution.improvement"] == pytest.approx(res.improvement)
    assert "integrated over strategy" in active.reason and "second probe set" in active.reason
    assert registry.get(min(res.rejected)).lifecycle == "rejected"


def test_rounds_write_candidates_rejections_and_lineage(registry, fakes):
    reg, scope = registry, "evo"
    cfg = config(scope, default_plugins=["safety.ftox", "self.fproposer"], population_size=4)
    with Evolution(reg, probe_evaluator(fakes), cfg, installed=fake_installed(broken=True)) as evo:
        results = evo.run(3)
        run_id = evo.run_id
    assert [r.round_index for r in results] == [1, 2, 3]
    records = {r.id: r for r in reg.list(scope=scope)}
    assert not [r for r in records.values() if r.state in ("running", "candidate")]
    integrated = [r for res in results if (r := res.integrated_id) is not None]
    assert integrated, [r.summary() for r in results]
    for res in results:
        for sid, origin in res.candidates.items():
            rec = records[sid]
            assert rec.generation == res.round_index and rec.run_id == run_id and rec.origin == origin
            assert rec.parent_id is not None and records[rec.parent_id].generation < rec.generation
            if sid == res.integrated_id:
                assert rec.lifecycle in ("active", "retired")
            else:
                assert rec.lifecycle == "rejected" and f"round {res.round_index}" in rec.reason
        for sid in res.failed:
            assert records[sid].state == "failed" and "evaluation failed" in records[sid].reason
    assert sum(len(r.rejected) for r in results) > 0
    # lineage: each integration is an "activated" event naming the strategy it replaced
    for res in results:
        if res.integrated_id is None:
            continue
        events = reg.lineage(res.integrated_id)
        assert [e.event for e in events][:3] == ["created", "state_changed", "state_changed"]
        act = next(e for e in events if e.event == "activated")
        assert act.from_strategy_id == res.incumbent_id and "gain" in act.detail["reason"]
    active = reg.active_strategy(scope)
    chain = reg.ancestry(active.id)
    assert chain[0].origin == "seed" and chain[-1].id == active.id
    assert [r.generation for r in chain] == sorted(r.generation for r in chain)
    # the active chain only ever improved
    objs = [res.incumbent_objective for res in results] + [reg.get(active.id).scores["objective"]]
    assert objs == sorted(objs) and objs[-1] > objs[0]
    # a new Evolution continues the round count from the registry
    with Evolution(reg, probe_evaluator(fakes), cfg, installed=fake_installed()) as evo:
        assert evo.next_round_index() == 4


KILLED_CHILD = """
import pathlib, sys, time
from ufarsap_registry import open_registry
from ufarsap_engine.evolution import Evolution, EvolutionConfig
from ufarsap_engine.plugin_host import installed_plugins
from test_evolution_support import probe_evaluator

class HangsOnCandidates:
    name, trains_model = "hangs", False
    def __init__(self, inner):
        self.inner, self.calls = inner, 0
    def evaluate(self, strategy, budget):
        self.calls += 1
        if self.calls > 1:  # call 1 is the seed; hang in the first candidate
            pathlib.Path(sys.argv[3]).write_text("evaluating")
            time.sleep(120)
        return self.inner.evaluate(strategy, budget)

installed = {k: v for k, v in installed_plugins().items() if v.distribution == "evo-fakes" and k != "safety.fbroken"}
reg = open_registry(sys.argv[1])
cfg = EvolutionConfig(scope=sys.argv[2], default_plugins=["safety.ftox"], population_size=3, seed=3)
Evolution(reg, HangsOnCandidates(probe_evaluator(pathlib.Path(sys.argv[4]))), cfg, installed=installed).run_round()
"""


def test_killed_mid_round_then_resume(registry, fakes, tmp_path):
    reg, scope = registry, "evo"
    flag = tmp_path / "evaluating.flag"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(TESTS),
                                                        os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_CHILD), reg.url, scope, str(flag),
                              str(fakes)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not flag.exists():
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "child never reached a candidate evaluation"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    running = reg.list(state="running", scope=scope)
    assert len(running) == 3 and {r.generation for r in running} == {1}
    seed = reg.active_strategy(scope)
    assert seed is not None and seed.origin == "seed"

    time.sleep(1.2)  # the dead run's heartbeat goes stale
    cfg = config(scope, default_plugins=["safety.ftox"], population_size=3, stale_after_s=1.0)
    with Evolution(reg, probe_evaluator(fakes), cfg, installed=fake_installed()) as evo:
        res = evo.run_round()
    assert res.reaped == 3 and res.round_index == 2 and res.incumbent_id == seed.id
    for r in running:
        assert reg.get(r.id).state == "failed" and "heartbeat" in reg.get(r.id).reason
        assert [e.detail.get("to") for e in reg.lineage(r.id) if e.event == "state_changed"][-1] == "failed"
    assert reg.list(state="running", scope=scope) == [] and reg.list(state="candidate", scope=scope) == []
    assert all(reg.get(sid).generation == 2 for sid in res.candidates)


def test_resume_fails_leftovers_of_a_dead_run(registry, fakes):
    """The same without a subprocess: a silent run left one candidate running, one never started."""
    scope = "leftovers"
    dead = registry.start_run("evolution", {}, scope=scope)
    seed = registry.add_strategy(plugins=["safety.ftox"], params=Strategy(plugins=["safety.ftox"]).to_registry()[1],
                                 origin="seed", run_id=dead, state="complete", scope=scope)
    registry.activate(seed)
    running = registry.add_strategy(plugins=["safety.fpii"], params={}, origin="explore", run_id=dead,
                                    parent_id=seed, generation=1, state="running", scope=scope)
    waiting = registry.add_strategy(plugins=["safety.fbias"], params={}, origin="explore", run_id=dead,
                                    parent_id=seed, generation=1, state="candidate", scope=scope)
    time.sleep(0.4)
    with Evolution(registry, probe_evaluator(fakes), config(scope, stale_after_s=0.3),
                   installed=fake_installed()) as evo:
        res = evo.run_round()
    assert res.reaped == 2 and res.round_index == 2
    assert registry.get(running).state == registry.get(waiting).state == "failed"
    assert "abandoned" in registry.get(waiting).reason
    assert registry.list(state="running", scope=scope) == [] and registry.list(state="candidate", scope=scope) == []


def test_seed_and_active_strategy_need_installed_plugins(registry, fakes):
    ev = probe_evaluator(fakes)
    with pytest.raises(UserError, match="none of the default plugins"):
        with Evolution(registry, ev, config("a", default_plugins=["safety.toxicity"]), installed=fake_installed()) as evo:
            evo.run_round()
    sid = registry.add_strategy(plugins=["safety.gone"], params={}, origin="manual", scope="b", state="complete")
    registry.activate(sid)
    with pytest.raises(UserError, match="needs plugins that are not installed: safety.gone"):
        with Evolution(registry, ev, config("b"), installed=fake_installed()) as evo:
            evo.run_round()


def test_report_png_and_numbers_match_the_registry(registry, fakes, tmp_path):
    cfg = config("rep", default_plugins=["safety.ftox", "self.fproposer"], population_size=4)
    with Evolution(registry, probe_evaluator(fakes), cfg, installed=fake_installed(broken=True)) as evo:
        results = evo.run(3)
        run_id = evo.run_id
    png = tmp_path / "out" / "evolution.png"
    rep = report(registry, run_id, png, scope="rep")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and rep["png"] == str(png)
    text = format_report(rep)
    assert f"discovery rate {rep['discovery_rate']:.2f}" in text and str(png) in text

    records = [r for r in registry.list(scope="rep") if r.run_id == run_id]
    cands = [r for r in records if r.origin != "seed"]
    won = [res for res in results if res.integrated_id is not None]
    assert rep["rounds"] == 3 and rep["candidates"] == len(cands) == sum(len(r.candidates) for r in results)
    assert rep["strategies"] == len(records)
    assert rep["failed"] == sum(r.state == "failed" for r in cands) == sum(len(r.failed) for r in results)
    assert rep["rejected"] == sum(r.lifecycle == "rejected" for r in cands)
    assert rep["integrated_ids"] == sorted(res.integrated_id for res in won)
    assert rep["discovery_rate"] == pytest.approx(len(won) / 3)
    assert rep["effectiveness"] == pytest.approx(sum(r.improvement for r in won) / len(won))
    assert rep["generalisability"] == pytest.approx(sum(r.gen_improvement for r in won) / len(won))
    by_cat = rep["by_category"]
    assert sum(c["proposed"] for c in by_cat.values()) == len(cands)
    assert sum(c["integrated"] for c in by_cat.values()) == len(won)
    for origin, c in by_cat.items():
        assert c["proposed"] == sum(r.origin == origin for r in cands)
    for row, res in zip(rep["per_round"], results):
        assert row["round"] == res.round_index and row["candidates"] == len(res.candidates)
        assert row["integrated_id"] == res.integrated_id
        assert row["best_objective"] == pytest.approx(max(res.objectives.values()))
    # whole scope = this run here; a run with no strategies reports nothing, without dividing by zero
    assert report(registry, None, None, scope="rep")["candidates"] == rep["candidates"]
    empty = report(registry, "no-such-run", tmp_path / "empty.png", scope="rep")
    assert empty["rounds"] == 0 and empty["discovery_rate"] is None and empty["png"] is None
    assert not (tmp_path / "empty.png").exists()  # no evolution data: no empty plot
    assert all(v is None or math.isfinite(v) for v in (rep["effectiveness"], rep["generalisability"]))


class FakeTrainer:
    """Stands in for the trainer's model-based evaluator: more safety plugins, more aligned
    generations; a heavier safety loss weight costs LM quality; a little noise per run."""

    name, trains_model = "fake-trainer", True

    def __init__(self):
        self.rng = np.random.default_rng(0)
        self.budgets = []

    def evaluate(self, strategy, budget):
        self.budgets.append(budget)
        caught = sum(p in ALL_SAFETY for p in strategy.plugins) / len(ALL_SAFETY)
        return Evaluation.from_metrics({
            "gen.aligned_rate": 0.5 + 0.5 * caught + self.rng.normal(0, 0.005),
            "lm_loss": 3.0 * (1 + 0.1 * strategy.objective.lambda_paradigm["safety"]), "lm_loss_mle": 3.0, "cost.s_per_step": 0.2,
        }, evaluator=self.name)


def test_model_based_evaluator_plugs_in_through_the_protocol(registry, fakes):
    trainer = FakeTrainer()
    heavy = Strategy(plugins=ALL_SAFETY, objective={"lambda_paradigm": {"safety": 2.0}})  # aligned, but LM loss 1.2 x MLE
    cfg = config("model", default_plugins=["safety.ftox"], eval_steps=25)
    with Evolution(registry, RepeatedEvaluator(trainer, repeats=3), cfg, installed=fake_installed(),
                   explorer=FixedExplorer(heavy, Strategy(plugins=ALL_SAFETY))) as evo:
        res = evo.run_round()
    assert {b.steps for b in trainer.budgets} == {25}
    assert {b.probe for b in trainer.budgets} == {"primary", "secondary"}
    heavy_id, good_id = sorted(res.candidates)
    assert res.integrated_id == good_id
    assert "LM loss 3.6000 > 1.05 x MLE baseline 3.0000" in registry.get(heavy_id).reason
    assert 0 < registry.get(good_id).scores["objective.std"] < 0.01  # noise from the repeats
    # with a model in the loop, explore also moves the loss weights
    with Evolution(registry, trainer, config("model2"), installed=fake_installed()) as evo:
        assert evo.explorer.tune_training_weights
    with Evolution(registry, probe_evaluator(fakes), config("model3"), installed=fake_installed()) as evo:
        assert not evo.explorer.tune_training_weights


def test_a_round_with_nothing_new_still_advances(registry, fakes):
    """A round whose proposals are all duplicates must not be replayed forever."""
    only = Strategy(plugins=["safety.ftox"])
    with Evolution(registry, probe_evaluator(fakes), config("dup", default_plugins=["safety.ftox"]),
                   installed=fake_installed(), explorer=FixedExplorer()) as evo:
        first, second = evo.run(2)
        assert (first.round_index, second.round_index) == (1, 2) and not first.candidates
        assert evo.next_round_index() == 3
    assert registry.active_strategy("dup").content_hash == only.content_hash()
