"""Plugin discovery, selection and hook calling (in-process, with fake distributions)."""

import importlib
import sys

import pytest

from helpers import good_plugin_source, make_plugin_dist
from ufarsap_engine.errors import PluginError, UserError
from ufarsap_engine.plugin_host import PluginHost, installed_plugins, resolve_selection
from ufarsap_engine.schemas import AlignmentState, Horizon, Sample, TextBatch
from ufarsap_engine.alignment.scoring import score_batch


@pytest.fixture
def fake_dists(tmp_path, monkeypatch):
    """Install (on sys.path) a good plugin, a plugin that fails to import, one whose import
    would be slow/side-effecting, and plugins whose hooks misbehave."""
    root = tmp_path / "site"
    make_plugin_dist(root, "good-dist", {"safety.good": "goodplug:Plugin"}, {"goodplug": good_plugin_source()})
    make_plugin_dist(root, "broken-dist", {"safety.broken": "brokenplug:Plugin"},
                     {"brokenplug": "import module_that_does_not_exist\n"})
    make_plugin_dist(root, "sideeffect-dist", {"self.sideeffect": "sideplug:Plugin"},
                     {"sideplug": f"open({str(tmp_path / 'imported.flag')!r}, 'w').write('x')\nraise SystemExit('never import me')\n"})
    make_plugin_dist(root, "nan-dist", {"safety.nan": "nanplug:Plugin"},
                     {"nanplug": good_plugin_source(doc_scores="[float('nan') for _ in batch.samples]")})
    make_plugin_dist(root, "short-dist", {"safety.short": "shortplug:Plugin"},
                     {"shortplug": good_plugin_source(doc_scores="[1.0]")})
    make_plugin_dist(root, "raise-dist", {"multi.raiser": "raiseplug:Plugin"},
                     {"raiseplug": good_plugin_source(paradigm="multi").replace(
                         'Plugin.calls.append("document")', 'raise RuntimeError("evaluator exploded")')})
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    yield tmp_path
    for mod in ("goodplug", "brokenplug", "sideplug", "nanplug", "shortplug", "raiseplug"):
        sys.modules.pop(mod, None)


def batch(*texts):
    return TextBatch(samples=[Sample(sample_id=str(i), text=t) for i, t in enumerate(texts)])


def test_builtins_and_third_party_found_the_same_way(fake_dists):
    found = installed_plugins()
    assert "safety.good" in found and found["safety.good"].distribution == "good-dist"
    assert "safety.toxicity" in found and found["safety.toxicity"].distribution == "ufarsap-engine"


def test_only_requested_plugins_are_imported(fake_dists):
    host = PluginHost(["safety.good"])
    assert host.names == ["safety.good"]
    assert not (fake_dists / "imported.flag").exists(), "an unrelated plugin was imported"


def test_selection_rules(fake_dists):
    names = installed_plugins()
    assert resolve_selection("safety.good,multi.raiser", names) == ["multi.raiser", "safety.good"]
    assert resolve_selection("none", names) == []
    assert resolve_selection("no:safety.good", names, base=["safety.good", "safety.nan"]) == ["safety.nan"]
    with pytest.raises(UserError, match=r"unknown plugin 'safety.goood'; did you mean safety.good"):
        resolve_selection("safety.goood", names)
    with pytest.raises(UserError, match="not a valid plugin name"):
        resolve_selection("Safety..x", names)


def test_import_error_names_plugin_and_distribution(fake_dists):
    with pytest.raises(PluginError) as err:
        PluginHost(["safety.broken"])
    assert "safety.broken" in str(err.value) and "broken-dist" in str(err.value)
    assert "module_that_does_not_exist" in str(err.value)


def test_tolerant_policy_quarantines(fake_dists, capsys, recwarn):
    host = PluginHost(["safety.broken", "safety.good"], strict=False)
    assert host.names == ["safety.good"] and "safety.broken" in host.quarantined
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("ufarsap-engine: warning: plugin 'safety.broken'")
    assert "import" in err[0] and "quarantined" in err[0] and ".py" not in err[0]
    assert not recwarn.list, "no raw Python warning"
    assert host.quarantine_records == [{"plugin": "safety.broken", "hook": "import", "distribution": "broken-dist",
                                        "reason": "ModuleNotFoundError: No module named 'module_that_does_not_exist'"}]


@pytest.mark.parametrize("name, problem", [
    ("safety.nan", "not a finite number"),
    ("safety.short", "returned 1 sample_scores for a batch of 2"),
    ("multi.raiser", "evaluator exploded"),
])
def test_misbehaving_hooks_are_named(fake_dists, name, problem):
    host = PluginHost([name])
    with pytest.raises(PluginError) as err:
        score_batch(host, batch("fine", "bad text"), Horizon.SHORT, AlignmentState())
    msg = str(err.value)
    assert name in msg and "ufarsap_score_document" in msg and problem in msg


def test_misbehaving_plugin_quarantined_under_tolerant_policy(fake_dists):
    host = PluginHost(["safety.nan", "safety.good"], strict=False)
    cells = score_batch(host, batch("fine", "bad text"), Horizon.SHORT, AlignmentState())
    assert "safety.nan" in host.quarantined
    assert {k[0] for k in cells.results} == {"safety.good"}


def test_cells_not_served_are_not_called(fake_dists):
    host = PluginHost(["safety.good"])
    cls = type(host.pm.get_plugin("safety.good"))
    cls.calls.clear()
    score_batch(host, batch("a"), Horizon.MEDIUM, AlignmentState())  # plugin serves short/long only
    assert cls.calls == []
    cells = score_batch(host, batch("bad", "good"), Horizon.SHORT, AlignmentState())
    assert sorted(cls.calls) == ["document", "token"]
    assert [len(s) for s in cells.flagged_spans()] == [1, 0]


def test_trace_logs_each_call(fake_dists, capsys):
    host = PluginHost(["safety.good"], trace=True)
    score_batch(host, batch("bad"), Horizon.SHORT, AlignmentState())
    err = capsys.readouterr().err
    assert "[trace] safety.good.ufarsap_score_token(" in err and "sample_scores" in err
