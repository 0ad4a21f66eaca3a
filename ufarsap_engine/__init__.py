"""ufarsap-engine: a plugin-based alignment engine on Megatron-Core.

Where to look first:
- the training loop: ``ufarsap_engine/trainer/loop.py`` (and ``run.py`` for the whole run)
- the hook specs plugins implement: ``ufarsap_engine/hookspecs.py``
- the SQL strategy registry: ``registry/`` (import name ``ufarsap_registry``)
"""

__version__ = "0.1.0"

#: Version of the hook contract (hook names, arguments, return types). Plugins declare the
#: contract they were written for in ``PluginInfo.contract``; a different major is refused.
HOOK_CONTRACT_VERSION = "1.0"
