"""One test per hook: the engine calls it, with the documented arguments, and uses the result."""

import importlib
import json
import sys

import pytest

from helpers import make_plugin_dist
from ufarsap_engine.alignment.scoring import make_sample, score_batch
from ufarsap_engine.config import RunConfig
from ufarsap_engine.plugin_host import PluginHost
from ufarsap_engine.run import execute, prepare
from ufarsap_engine.schemas import (AgentVote, AlignmentState, ConsensusResult, Feedback, Horizon, Refinement,
                                    Span, StrategyProposal, TextBatch)

ALL_HOOKS = '''
import json, os
from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import *

LOG = os.environ.get("HOOKLOG")

def log(hook, **kw):
    if LOG:
        with open(LOG, "a") as f:
            f.write(json.dumps({"hook": hook, **kw}) + "\\n")

class Plugin:
    def __init__(self):
        self.params = {}

    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm="reflect", description="exercises every hook", scales=list(Scale),
                          horizons=list(Horizon))

    @hookimpl
    def ufarsap_configure(self, params):
        self.params = params
        log("configure", params=params)

    def _scores(self, batch, scale, horizon):
        log("score_" + scale, horizon=horizon.value, n=len(batch.samples), step=batch.step,
            ids=[s.sample_id for s in batch.samples])
        return [0.0 if "bad" in s.text else 1.0 for s in batch.samples]

    @hookimpl
    def ufarsap_score_token(self, batch, horizon, state):
        scores = self._scores(batch, "token", horizon)
        spans = [[Span(start=s.text.index("bad"), end=s.text.index("bad") + 3, severity=1.0)] if "bad" in s.text else []
                 for s in batch.samples]
        return ScaleScores(sample_scores=scores, spans=spans)

    @hookimpl
    def ufarsap_score_sentence(self, batch, horizon, state):
        scores = self._scores(batch, "sentence", horizon)
        units = [[0.0 if "bad" in s.text[a:b] else 1.0 for a, b in (s.sentences or [(0, len(s.text))])]
                 for s in batch.samples]
        return ScaleScores(sample_scores=scores, unit_scores=units)

    @hookimpl
    def ufarsap_score_document(self, batch, horizon, state):
        return ScaleScores(sample_scores=self._scores(batch, "document", horizon))

    @hookimpl
    def ufarsap_score_conversation(self, batch, horizon, state):
        self._scores(batch, "conversation", horizon)
        return ScaleScores(sample_scores=[None if s.messages is None else 1.0 for s in batch.samples])

    @hookimpl
    def ufarsap_run_start(self, run, state):
        log("run_start", run_id=run.run_id, plugins=run.plugins)

    @hookimpl
    def ufarsap_run_end(self, run, summary):
        log("run_end", status=summary["status"])

    @hookimpl
    def ufarsap_step_end(self, report, state):
        log("step_end", step=report.step, short=state.short)

    @hookimpl
    def ufarsap_window_end(self, report, state):
        log("window_end", first=report.first_step, last=report.last_step, medium=state.medium)

    @hookimpl
    def ufarsap_round_end(self, report, state):
        log("round_end", round=report.round, long=state.long)

    @hookimpl
    def ufarsap_refine(self, sample, feedback, state):
        text = sample.text
        for sp in sorted(feedback.spans, key=lambda s: -s.start):
            text = text[:sp.start] + "good" + text[sp.end:]
        return Refinement(text=text, rationale="replaced flagged spans")

    @hookimpl
    def ufarsap_consensus(self, sample, votes, state):
        mean = sum(v.score * v.confidence for v in votes) / sum(v.confidence for v in votes)
        spread = max(v.score for v in votes) - min(v.score for v in votes)
        return ConsensusResult(score=mean, agreement=1.0 - spread)

    @hookimpl
    def ufarsap_propose_strategies(self, active_plugins, params, state):
        return [StrategyProposal(plugins=active_plugins + ["safety.toxicity"], params={"from": "test"})]
'''


@pytest.fixture
def all_hooks(tmp_path, monkeypatch):
    root = make_plugin_dist(tmp_path / "site", "allhooks-dist", {"reflect.allhooks": "allhooks:Plugin"},
                            {"allhooks": ALL_HOOKS})
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    log = tmp_path / "hooks.jsonl"
    monkeypatch.setenv("HOOKLOG", str(log))
    yield log
    sys.modules.pop("allhooks", None)


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def ran(all_hooks, tmp_path):
    corpus = tmp_path / "c.jsonl"
    lines = [{"id": f"t{i}", "text": f"Sentence one. This is {'bad' if i % 3 == 0 else 'fine'} text number {i}."}
             for i in range(30)]
    lines.append({"id": "conv", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    corpus.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    cfg = RunConfig(plugins=["reflect.allhooks"], data=str(corpus), steps=6, window_steps=3, round_steps=3,
                    batch_samples=4, train_model=False, out=str(tmp_path / "run"),
                    registry=f"sqlite:///{tmp_path / 'reg.sqlite'}",
                    plugin_params={"reflect.allhooks": {"depth": 2}})
    summary = execute(prepare(cfg))
    return summary, read_log(all_hooks), tmp_path


def test_hook_ufarsap_plugin_info(all_hooks):
    host = PluginHost(["reflect.allhooks"])
    info = host.info["reflect.allhooks"]
    assert info.paradigm.value == "reflect" and info.serves("conversation", "immediate")


def test_hook_ufarsap_configure(ran):
    _, log, _ = ran
    assert {"hook": "configure", "params": {"depth": 2}} in log


@pytest.mark.parametrize("scale", ["token", "sentence", "document", "conversation"])
def test_scoring_hooks_called_per_scale_and_horizon(ran, scale):
    _, log, _ = ran
    horizons = {e["horizon"] for e in log if e["hook"] == f"score_{scale}"}
    # every step, every window's end (re-scoring its documents), every round on the probe set
    assert horizons == {"short", "medium", "long"}


def test_hook_ufarsap_score_token(all_hooks):
    host = PluginHost(["reflect.allhooks"])
    cells = score_batch(host, TextBatch(samples=[make_sample("a", "a bad word"), make_sample("b", "fine")]),
                        Horizon.IMMEDIATE, AlignmentState())
    spans = cells.flagged_spans()
    assert [(s.start, s.end) for _, s in spans[0]] == [(2, 5)] and spans[1] == []


def test_hook_ufarsap_score_sentence(all_hooks):
    host = PluginHost(["reflect.allhooks"])
    cells = score_batch(host, TextBatch(samples=[make_sample("a", "All fine. Then bad. Fine again.")]),
                        Horizon.SHORT, AlignmentState())
    assert cells.results[("reflect.allhooks", "sentence")].unit_scores == [[1.0, 0.0, 1.0]]


def test_hook_ufarsap_score_document(all_hooks):
    host = PluginHost(["reflect.allhooks"])
    cells = score_batch(host, TextBatch(samples=[make_sample("a", "bad"), make_sample("b", "ok")]),
                        Horizon.MEDIUM, AlignmentState())
    assert cells.results[("reflect.allhooks", "document")].sample_scores == [0.0, 1.0]
    assert cells.paradigm_sample_scores({"reflect.allhooks": "reflect"})["reflect"] == [0.0, 1.0]


def test_hook_ufarsap_score_conversation(all_hooks):
    from ufarsap_engine.schemas import Message
    host = PluginHost(["reflect.allhooks"])
    conv = make_sample("c", "User: hi", messages=[Message(role="user", content="hi")])
    cells = score_batch(host, TextBatch(samples=[conv, make_sample("d", "plain")]), Horizon.LONG, AlignmentState())
    assert cells.results[("reflect.allhooks", "conversation")].sample_scores == [1.0, None]


def test_hook_ufarsap_run_start(ran):
    summary, log, _ = ran
    starts = [e for e in log if e["hook"] == "run_start"]
    assert len(starts) == 1 and starts[0]["run_id"] == summary["run_id"]
    assert log.index(starts[0]) < min(i for i, e in enumerate(log) if e["hook"].startswith("score_"))


def test_hook_ufarsap_run_end(ran):
    _, log, _ = ran
    assert log[-1] == {"hook": "run_end", "status": "complete"}


def test_hook_ufarsap_step_end(ran):
    _, log, tmp = ran
    steps = [e["step"] for e in log if e["hook"] == "step_end"]
    assert steps == [1, 2, 3, 4, 5, 6]
    metrics = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == steps and all("loss" in m for m in metrics)
    assert all("align.reflect" in m for m in metrics)
    assert all("state.short.reflect" in m for m in metrics[1:])  # a(t) as of the previous step


def test_hook_ufarsap_window_end(ran):
    _, log, _ = ran
    assert [(e["first"], e["last"]) for e in log if e["hook"] == "window_end"] == [(1, 3), (4, 6)]


def test_medium_horizon_rescores_the_windows_documents_and_sets_a_t(ran):
    """At each window's end the medium hooks score the window's documents one by one, and
    a(t).medium is the mean of those per-sample scores (not an average of step means)."""
    _, log, _ = ran
    short = [e for e in log if e["hook"] == "score_document" and e["horizon"] == "short"]
    medium = [e for e in log if e["hook"] == "score_document" and e["horizon"] == "medium"]
    windows = [e for e in log if e["hook"] == "window_end"]
    assert [e["step"] for e in medium] == [3, 6]
    for m, w in zip(medium, windows):
        seen = {i for e in short if w["first"] <= e["step"] <= w["last"] for i in e["ids"]}
        assert set(m["ids"]) == seen  # 3 steps x 4 samples, fewer than window_samples: all of them
        bad = [i != "conv" and int(i[1:]) % 3 == 0 for i in m["ids"]]  # t<i> is bad when i % 3 == 0
        assert w["medium"]["reflect"] == pytest.approx(1.0 - sum(bad) / len(bad))


def test_hook_ufarsap_round_end(ran):
    _, log, _ = ran
    rounds = [e for e in log if e["hook"] == "round_end"]
    assert [e["round"] for e in rounds] == [1, 2] and "reflect" in rounds[0]["long"]


def test_hook_ufarsap_refine(all_hooks):
    host = PluginHost(["reflect.allhooks"])
    sample = make_sample("a", "a bad word")
    out = host.call("ufarsap_refine", expect=Refinement, sample=sample,
                    feedback=Feedback(spans=[Span(start=2, end=5, severity=1.0)]), state=AlignmentState())
    assert out["reflect.allhooks"].text == "a good word"


def test_hook_ufarsap_consensus(all_hooks):
    host = PluginHost(["reflect.allhooks"])
    votes = [AgentVote(agent="a", paradigm="safety", score=0.2), AgentVote(agent="b", paradigm="safety", score=0.6)]
    out = host.call("ufarsap_consensus", expect=ConsensusResult, sample=make_sample("x", "t"), votes=votes,
                    state=AlignmentState())
    assert out["reflect.allhooks"].score == pytest.approx(0.4) and out["reflect.allhooks"].agreement == pytest.approx(0.6)


def test_hook_ufarsap_propose_strategies(all_hooks):
    host = PluginHost(["reflect.allhooks"])
    out = host.call("ufarsap_propose_strategies", active_plugins=["reflect.allhooks"], params={}, state=AlignmentState())
    proposals = [StrategyProposal.model_validate(p) for p in out["reflect.allhooks"]]
    assert proposals[0].plugins == ["reflect.allhooks", "safety.toxicity"]
