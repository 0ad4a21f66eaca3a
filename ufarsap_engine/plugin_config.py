"""Handing each plugin its parameters (``ufarsap_configure``).

A ``ValueError`` from ``ufarsap_configure`` is the documented way for a plugin to reject a
parameter (a typo'd key, a value out of range), so it is the user's mistake: one line naming
the plugin, exit 2, in strict and tolerant runs alike. Any other exception is the plugin's
fault and is handled like every other hook failure (strict: stop; tolerant: quarantine).
"""

from __future__ import annotations

from typing import Any

from ufarsap_engine.errors import PluginError, UserError


def configure_plugins(host, plugin_params: dict[str, dict[str, Any]]) -> None:
    """Call ``ufarsap_configure`` on every loaded plugin with its parameters."""
    tolerant = not host.strict
    host.strict = True  # see every failure here; tolerance is applied below
    try:
        for name in host.names:
            try:
                host.call("ufarsap_configure", only=[name], params=plugin_params.get(name, {}))
            except PluginError as exc:
                cause = exc.__cause__ or exc.__context__
                if isinstance(cause, ValueError):
                    first = (str(cause).splitlines() or [type(cause).__name__])[0]
                    raise UserError(f"plugin '{name}' rejected its parameters: {first} "
                                    f"(fix plugin_params for '{name}' in the config or --set)") from None
                if not tolerant:
                    raise
                host.strict = False
                host.fail(name, "ufarsap_configure", exc.problem)
                host.strict = True
    finally:
        host.strict = not tolerant
