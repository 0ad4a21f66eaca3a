"""The 11 built-in plugins load from their declared entry points, describe themselves validly,
reject unknown parameters, register against the hook specs, and import lazily."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pluggy
import pytest

from ufarsap_engine import hookspecs
from ufarsap_engine.schemas import PLUGIN_NAME_RE, PluginInfo

REPO = Path(__file__).resolve().parents[1]
BUILTINS = ["safety.toxicity", "safety.privacy", "safety.bias", "safety.misinformation", "safety.adversarial",
            "self.reward", "self.eval", "reflect.selfrefine", "reflect.crossparadigm", "multi.consensus",
            "multi.debate"]


def entry_points() -> dict[str, str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data["project"]["entry-points"]["ufarsap_engine"]


def load(name: str):
    module, cls = entry_points()[name].split(":")
    return getattr(importlib.import_module(module), cls)


def test_all_builtins_declared():
    assert set(BUILTINS) <= set(entry_points())


@pytest.mark.parametrize("name", BUILTINS)
def test_metadata_valid(name):
    plugin = load(name)()
    info = plugin.ufarsap_plugin_info()
    assert isinstance(info, PluginInfo)
    assert PLUGIN_NAME_RE.match(name)
    assert info.paradigm.value == name.split(".")[0]
    assert info.description and info.scales and info.horizons
    assert info.contract.split(".")[0] == "1"
    for req in info.requires:
        assert isinstance(req, str) and req


@pytest.mark.parametrize("name", BUILTINS)
def test_configure_rejects_unknown_keys(name):
    plugin = load(name)()
    plugin.ufarsap_configure(params={})
    with pytest.raises(ValueError, match="unknown"):
        plugin.ufarsap_configure(params={"no_such_parameter": 1})


@pytest.mark.parametrize("name", BUILTINS)
def test_registers_against_hookspecs(name):
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(load(name)(), name=name)  # pluggy checks hook names and argument names
    pm.check_pending()
    infos = pm.hook.ufarsap_plugin_info()
    assert len(infos) == 1 and isinstance(infos[0], PluginInfo)


def test_bad_parameter_values_rejected():
    tox = load("safety.toxicity")()
    with pytest.raises(ValueError):
        tox.ufarsap_configure(params={"threshold": 1.5})
    with pytest.raises(ValueError):
        tox.ufarsap_configure(params={"threshold": "high"})
    with pytest.raises(ValueError):
        load("multi.consensus")().ufarsap_configure(params={"agents": [{"name": "solo"}]})


def test_import_is_lazy():
    """Listing plugins must not pull in scikit-learn, presidio, VADER, torch or transformers."""
    mods = ", ".join(f"'{entry_points()[n].split(':')[0]}'" for n in BUILTINS)
    code = (f"import importlib, sys\nfor m in [{mods}]: importlib.import_module(m)\n"
            "heavy = [m for m in ('sklearn', 'presidio_analyzer', 'vaderSentiment', 'torch', 'transformers', "
            "'profanity_check') if m in sys.modules]\nprint(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
