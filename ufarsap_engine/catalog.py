"""What ``ufarsap-engine plugins`` shows: every installed plugin and whether it is enabled.

Listing imports each plugin to read its metadata, one at a time and guarded (a time limit per
import, exits and interrupts caught), so a broken or hanging plugin shows up as a row with its
error instead of breaking the command.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from ufarsap_engine.config import DEFAULT_PLUGINS
from ufarsap_engine.errors import PluginError
from ufarsap_engine.plugin_host import IMPORT_TIMEOUT_S, PluginHost, installed_plugins


def plugin_catalog(registry_url: str | None = None, scope: str = "default",
                   import_timeout_s: float = IMPORT_TIMEOUT_S) -> list[dict[str, Any]]:
    from ufarsap_registry import NoRegistry, open_registry

    try:  # read-only: listing plugins never creates a registry
        with open_registry(registry_url, read_only=True) as reg:
            active = reg.active_strategy(scope)
    except NoRegistry:
        active = None
    enabled = set(active.plugins) if active else set(DEFAULT_PLUGINS)
    rows = []
    entries = installed_plugins()
    for name, entry in entries.items():
        row: dict[str, Any] = {
            "name": name, "paradigm": name.split(".")[0], "scales": [], "horizons": [], "description": "",
            "distribution": entry.distribution, "version": entry.version, "target": entry.target,
            "enabled": name in enabled, "enabled_by": (f"strategy {active.id}" if active else "default set")
            if name in enabled else None, "error": None,
        }
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # a chatty import must not spoil --json
                host = PluginHost([name], strict=True, trace=False, installed=entries,
                                  import_timeout_s=import_timeout_s, call_timeout_s=import_timeout_s)
            info = host.info[name]
            row.update(paradigm=info.paradigm.value, scales=[s.value for s in info.scales],
                       horizons=[h.value for h in info.horizons], description=info.description)
        except PluginError as exc:
            row["error"] = exc.problem
        except Exception as exc:  # listing must survive anything a plugin does
            row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        rows.append(row)
    return rows
