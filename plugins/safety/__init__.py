"""Built-in safety plugins (paradigm ``safety``, Eq. 18-19 of the paper).

Importing this package is cheap: each plugin imports its heavy library (scikit-learn, presidio,
VADER) on first use.
"""

from __future__ import annotations

import importlib

#: plugin name -> (module, class), mirroring the entry points in pyproject.toml.
SAFETY_PLUGINS = {
    "safety.toxicity": ("ufarsap_plugins.safety.toxicity", "ToxicityPlugin"),
    "safety.privacy": ("ufarsap_plugins.safety.privacy", "PrivacyPlugin"),
    "safety.bias": ("ufarsap_plugins.safety.bias", "BiasPlugin"),
    "safety.misinformation": ("ufarsap_plugins.safety.misinformation", "MisinformationPlugin"),
    "safety.adversarial": ("ufarsap_plugins.safety.adversarial", "AdversarialPlugin"),
}
_CACHE: dict[str, object] = {}


def load_safety_plugin(name: str, fresh: bool = False):
    """An instance of a built-in safety plugin (shared unless ``fresh``), for plugins that
    use other plugins' detectors (self-reward, reflection, consensus, robustness probes)."""
    if name not in SAFETY_PLUGINS:
        raise ValueError(f"unknown safety plugin '{name}'; known: {sorted(SAFETY_PLUGINS)}")
    if fresh or name not in _CACHE:
        mod, cls = SAFETY_PLUGINS[name]
        inst = getattr(importlib.import_module(mod), cls)()
        if fresh:
            return inst
        _CACHE[name] = inst
    return _CACHE[name]
