"""Plugins that build on other plugins' results get them through the host (PluginInfo.uses,
TextBatch.upstream): dependency order, only the selected plugins, no detector run by the
self/reflect/multi hooks, ``no:X`` removing X's signal everywhere, and annotation keys."""

from __future__ import annotations

import pytest

from helpers import write_corpus
from ufarsap_engine.alignment.scoring import score_texts
from ufarsap_engine.annotate import annotate
from ufarsap_engine.annotate.manifest import read_manifest
from ufarsap_engine.config import DEFAULT_PLUGINS
from ufarsap_engine.errors import UserError
from ufarsap_engine.plugin_host import PluginHost, dependency_layers, installed_plugins, resolve_selection
from ufarsap_engine.schemas import AlignmentState, Horizon, PluginInfo, Sample

PII = "Please write to linda.smith@example.com or call (331) 770-6690 about the harbour market."
TOXIC = "You are such a stupid idiot. Nobody asked for your worthless opinion."
CLEAN = "The harbour town grew slowly along the river, and its covered market drew traders from the hills."
PEERS = ["multi.consensus", "multi.debate", "reflect.crossparadigm", "reflect.selfrefine", "self.eval", "self.reward"]
SAFETY = ["safety.adversarial", "safety.bias", "safety.misinformation", "safety.privacy", "safety.toxicity"]


def info(paradigm: str, uses=()) -> PluginInfo:
    return PluginInfo(paradigm=paradigm, description="x", uses=list(uses))


def test_uses_is_validated_and_matches_names_or_paradigms():
    assert PluginInfo(paradigm="self", description="x").uses == []  # backward compatible default
    i = info("reflect", ["safety", "multi.consensus"])
    assert i.uses_plugin("safety.privacy") and i.uses_plugin("multi.consensus") and not i.uses_plugin("multi.debate")
    with pytest.raises(ValueError, match="neither a paradigm"):
        info("reflect", ["Safety!"])


def test_dependency_layers_and_cycle_error():
    layers = dependency_layers({"safety.a": info("safety"), "reflect.x": info("reflect", ["self"]),
                                "self.y": info("self", ["safety"])})
    assert layers == [["safety.a"], ["self.y"], ["reflect.x"]]
    with pytest.raises(UserError) as exc:
        dependency_layers({"self.y": info("self", ["reflect"]), "reflect.x": info("reflect", ["self.y"])})
    msg = str(exc.value)
    assert "\n" not in msg and "reflect.x -> self.y -> reflect.x" in msg and "leave one of them out" in msg


def test_upstream_holds_only_the_selected_plugins_it_uses():
    host = PluginHost(["multi.consensus", "safety.toxicity", "safety.bias"])
    assert host.layers() == [["safety.bias", "safety.toxicity"], ["multi.consensus"]]
    assert host.upstream_of("multi.consensus") == ["safety.bias", "safety.toxicity"]
    seen = {}
    real = host.call

    def spy(hook, **kw):
        for n in kw.get("only") or []:
            seen.setdefault(n, kw["batch"].upstream)
        return real(hook, **kw)

    host.call = spy
    cells = score_texts(host, [TOXIC, CLEAN])
    assert set(seen["multi.consensus"]) == {"safety.bias", "safety.toxicity"}
    assert set(seen["multi.consensus"]["safety.toxicity"]) == {"token", "sentence", "document", "conversation"}
    assert seen["safety.toxicity"] == {} and cells.batch.upstream == {}  # the caller's batch is untouched


def test_hooks_run_no_detector_themselves(monkeypatch):
    """Every self/reflect/multi hook works from what the host handed over: the explicit detector
    entry points are broken here, and scoring and refining still work."""
    import ufarsap_plugins._suite as suite
    from ufarsap_plugins.safety.misinformation import MisinformationPlugin

    cells = score_texts(SAFETY, [PII + " " + TOXIC])  # before breaking anything: the feedback
    feedback = cells.feedback(0)

    def boom(*a, **k):
        raise AssertionError("a hook ran a detector itself")

    import ufarsap_plugins.multi.debate as debate
    import ufarsap_plugins.reflect.crossparadigm as cross
    import ufarsap_plugins.reflect.selfrefine as refine
    import ufarsap_plugins.self_alignment.evaluation as ev
    import ufarsap_plugins.self_alignment.reward as rw
    for mod in (suite, debate, cross, refine, ev, rw):
        for name in ("safety_profiles", "safety_analyses"):
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, boom)
    monkeypatch.setattr(MisinformationPlugin, "corrections", boom)
    host = PluginHost([*PEERS, *SAFETY])
    cells = score_texts(host, [PII + " " + TOXIC, CLEAN], Horizon.LONG)
    for n in PEERS:
        doc = cells.results[(n, "document")].sample_scores
        assert doc[0] < doc[1], n  # harmful below clean: the handed-over signal got through
    sample = Sample(sample_id="a", text=PII + " " + TOXIC)
    out = host.call("ufarsap_refine", sample=sample, feedback=feedback, state=AlignmentState())
    assert "[email]" in out["reflect.selfrefine"].text and "[email]" in out["reflect.crossparadigm"].text


def test_without_safety_plugins_they_fall_back():
    cells = score_texts(PEERS, [TOXIC, CLEAN], Horizon.LONG)
    res = {n: cells.results[(n, "document")].sample_scores for n in PEERS}
    # consensus, debate, selfrefine judge by safety signals only: no opinion without them
    assert res["multi.consensus"] == res["multi.debate"] == res["reflect.selfrefine"] == [None, None]
    # crossparadigm is the reflect (quality) term alone; self.* count missing dimensions as safe
    assert res["reflect.crossparadigm"] == cells.results[("reflect.crossparadigm", "document")].details["reflect"]
    assert all(v is not None for n in ("self.eval", "self.reward") for v in res[n])


def test_no_privacy_removes_its_signal_everywhere(capsys):
    """``--plugins no:safety.privacy`` from the default set: the trace shows no privacy call and
    reflect.crossparadigm's scores differ from the run with privacy."""
    installed = installed_plugins()
    with_privacy = resolve_selection(None, installed, base=DEFAULT_PLUGINS)
    without = resolve_selection("no:safety.privacy", installed, base=DEFAULT_PLUGINS)
    assert without == ["reflect.crossparadigm", "safety.toxicity"]
    texts = [PII, TOXIC, CLEAN]
    capsys.readouterr()
    off = score_texts(PluginHost(without, trace=True), texts)
    trace = capsys.readouterr().err
    assert "[trace] reflect.crossparadigm.ufarsap_score_document" in trace
    assert "[trace] safety.toxicity.ufarsap_score_document" in trace
    assert "safety.privacy" not in trace and "EMAIL_ADDRESS" not in trace
    on = score_texts(PluginHost(with_privacy, trace=True), texts)
    assert "[trace] safety.privacy.ufarsap_score_token" in capsys.readouterr().err
    s_off = off.results[("reflect.crossparadigm", "document")].sample_scores
    s_on = on.results[("reflect.crossparadigm", "document")].sample_scores
    assert s_on[0] < s_off[0] - 0.2  # the e-mail address and phone number count only with privacy
    assert s_on[2] == pytest.approx(s_off[2], abs=0.02)


def test_annotation_key_of_a_dependent_includes_its_upstream(tmp_path):
    data = write_corpus(tmp_path / "c.jsonl", [PII, TOXIC, CLEAN])
    notes = []
    annotate(tmp_path / "ann", "reflect.crossparadigm,safety.toxicity", data=str(data), workers=0, note=notes.append)
    first = read_manifest(tmp_path / "ann").plugins
    summary = annotate(tmp_path / "ann", "reflect.crossparadigm,safety.toxicity,safety.privacy", data=str(data),
                       workers=0, note=notes.append)
    second = read_manifest(tmp_path / "ann").plugins
    assert first["safety.toxicity"].key == second["safety.toxicity"].key  # untouched
    assert first["reflect.crossparadigm"].key != second["reflect.crossparadigm"].key
    assert set(second["reflect.crossparadigm"].upstream) == {"safety.privacy", "safety.toxicity"}
    assert summary["plugins"]["reflect.crossparadigm"]["status"] == "re-annotated (stale)"
    assert summary["plugins"]["safety.toxicity"]["status"] == "reused"
    assert any("reflect.crossparadigm" in n and "the plugins it uses" in n for n in notes)
    # the dependent alone, its upstream already complete: scored with them, its key unchanged
    again = annotate(tmp_path / "ann", "reflect.crossparadigm,safety.toxicity,safety.privacy", data=str(data),
                     workers=0, note=notes.append)
    assert all(p["status"] == "reused" for p in again["plugins"].values())
