"""Which installed plugins evolution may explore: those that pass a health check.

Evolution toggles installed plugins into candidate strategies, so an installed but broken
plugin (one that fails to import, hangs, exits, or scores garbage) could change an evolving
run's outcome. Before it is explored, each plugin is imported, asked for its info, configured
with no parameters and given one tiny scoring call, all under the run's time limits and in the
tolerant policy; one that fails is left out, said in one line and recorded (:data:`QUARANTINED`,
which the run's summary and registry record include). Results are kept per process.
"""

from __future__ import annotations

from typing import Iterable

from ufarsap_engine.alignment.scoring import make_sample, score_batch
from ufarsap_engine.plugin_host import CALL_TIMEOUT_S, IMPORT_TIMEOUT_S, PluginEntry, PluginHost, installed_plugins
from ufarsap_engine.schemas import AlignmentState, TextBatch

#: Plugins that failed the health check in this process: name -> {hook, reason, distribution}.
QUARANTINED: dict[str, dict[str, str]] = {}
_CHECKED: dict[tuple[str, str, str, str], dict[str, str] | None] = {}
_PROBE = "A short and friendly sentence. Another calm one follows it."


def check_plugin(entry: PluginEntry, *, call_timeout_s: float | None = CALL_TIMEOUT_S,
                 import_timeout_s: float | None = IMPORT_TIMEOUT_S) -> dict[str, str] | None:
    """``None`` if the plugin is healthy, else ``{hook, reason, distribution}`` of its failure."""
    key = (entry.name, entry.target, entry.distribution, entry.version)
    if key not in _CHECKED:
        host = PluginHost([entry.name], strict=False, trace=False, installed={entry.name: entry},
                          call_timeout_s=call_timeout_s, import_timeout_s=import_timeout_s)
        if host.names:
            host.call("ufarsap_configure", params={})
        info = host.info.get(entry.name)
        if info is not None and info.scales and info.horizons:
            batch = TextBatch(samples=[make_sample("health-check", _PROBE)])
            score_batch(host, batch, info.horizons[0], AlignmentState())
        summary = host.quarantine_summary()
        _CHECKED[key] = summary.get(entry.name)
    failure = _CHECKED[key]
    if failure is not None:
        QUARANTINED[entry.name] = failure
    return failure


def healthy_plugins(keep: Iterable[str] = (), *, installed: dict[str, PluginEntry] | None = None,
                    call_timeout_s: float | None = CALL_TIMEOUT_S,
                    import_timeout_s: float | None = IMPORT_TIMEOUT_S) -> dict[str, PluginEntry]:
    """The installed plugins that pass :func:`check_plugin`, plus ``keep`` (those the run has
    already loaded and is using) unchecked."""
    entries = installed if installed is not None else installed_plugins()
    keep = set(keep)
    return {name: e for name, e in entries.items()
            if name in keep or check_plugin(e, call_timeout_s=call_timeout_s, import_timeout_s=import_timeout_s) is None}
