"""Finding, loading and calling plugins (on pluggy).

Plugins are found through the entry-point group ``ufarsap_engine``; the entry-point name is the
plugin name (``paradigm.name``). Listing reads entry-point metadata only; a plugin's code is
imported only when it is asked for, so a broken or slow unrelated plugin cannot affect a run.

Every hook call goes through :meth:`PluginHost.call`, which calls each plugin's implementation
in turn, so a failure is always attributed to one plugin and one hook. Each implementation gets
its own deep copy of the arguments (a plugin cannot change the engine's batch, a(t) or config),
runs under a time limit (``plugin_guard``), and what it returns is validated afresh. With
``UFARSAP_TRACE_PLUGINS=1`` (or ``--trace-plugins``) each call and its result is logged.
"""

from __future__ import annotations

import copy
import difflib
import importlib.metadata as md
import inspect
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy
from pydantic import BaseModel, ValidationError

from ufarsap_engine import HOOK_CONTRACT_VERSION, hookspecs
from ufarsap_engine.errors import PluginError, UserError
from ufarsap_engine.plugin_guard import PluginRaised, PluginRunner, PluginTimeout
from ufarsap_engine.schemas import PLUGIN_NAME_RE, PluginInfo

ENTRY_POINT_GROUP = "ufarsap_engine"
TRACE_ENV = "UFARSAP_TRACE_PLUGINS"
#: Default time limits (seconds) for one hook call and for importing one plugin (0: none).
CALL_TIMEOUT_S = 120.0
IMPORT_TIMEOUT_S = 60.0
log = logging.getLogger("ufarsap_engine.plugins")


@dataclass(frozen=True)
class PluginEntry:
    """An installed plugin as its entry point describes it (nothing imported yet)."""

    name: str
    target: str
    distribution: str
    version: str
    _ep: md.EntryPoint = field(repr=False, compare=False)

    def load(self) -> Any:
        return self._ep.load()


def installed_plugins() -> dict[str, PluginEntry]:
    """Every plugin registered under the entry-point group, by name, without importing any."""
    found: dict[str, PluginEntry] = {}
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        found[ep.name] = PluginEntry(
            name=ep.name,
            target=ep.value,
            distribution=dist.metadata["Name"] if dist else "?",
            version=dist.version if dist else "?",
            _ep=ep,
        )
    return dict(sorted(found.items()))


def validate_name(name: str) -> None:
    if not PLUGIN_NAME_RE.match(name):
        raise UserError(
            f"'{name}' is not a valid plugin name: use paradigm.name with paradigm one of "
            "self, reflect, multi, safety (e.g. safety.toxicity)"
        )


def resolve_selection(spec: str | Iterable[str] | None, installed: Iterable[str], base: Iterable[str] = ()) -> list[str]:
    """Turn ``--plugins`` into a sorted list of names.

    ``spec`` is a comma list; ``none`` means no plugins; ``no:NAME`` removes NAME from ``base``
    (the registry's active strategy or the default set) or from the names listed before it.
    Unknown names fail with close matches; malformed names fail with the naming rule.
    """
    installed = set(installed)
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else (spec or [])) if s.strip()]
    if items == ["none"]:
        return []
    chosen: set[str] = set(base) if (not items or all(i.startswith("no:") for i in items)) else set()
    for item in items:
        exclude = item.startswith("no:")
        name = item[3:] if exclude else item
        validate_name(name)
        if name not in installed:
            close = difflib.get_close_matches(name, sorted(installed), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see `ufarsap-engine plugins`"
            raise UserError(f"unknown plugin '{name}'{hint}")
        (chosen.discard if exclude else chosen.add)(name)
    return sorted(chosen)


def upstream_of(name: str, info: dict[str, PluginInfo]) -> list[str]:
    """The loaded plugins whose results ``name`` reads (its ``PluginInfo.uses``), sorted."""
    return sorted(n for n in info if n != name and info[name].uses_plugin(n))


def dependency_layers(info: dict[str, PluginInfo]) -> list[list[str]]:
    """The loaded plugins in scoring order: first those that use nobody, then those that use only
    earlier layers, and so on. A cycle is the user's selection problem: one-line ``UserError``."""
    left = {n: set(upstream_of(n, info)) for n in info}
    layers: list[list[str]] = []
    while left:
        ready = sorted(n for n, ups in left.items() if not ups & set(left))
        if not ready:
            cycle = _a_cycle(left)
            raise UserError(f"plugins {' and '.join(sorted(set(cycle)))} use each other's results "
                            f"({' -> '.join(cycle)}); leave one of them out of --plugins")
        layers.append(ready)
        for n in ready:
            del left[n]
    return layers


def _a_cycle(left: dict[str, set[str]]) -> list[str]:
    """One dependency cycle among ``left`` (every node there is on or leads to one)."""
    path, node = [], min(left)
    while node not in path:
        path.append(node)
        node = min(u for u in left[node] if u in left)
    return path[path.index(node):] + [node]


def _hook_names() -> list[str]:
    return [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("ufarsap_")]


class PluginHost:
    """Loads the selected plugins into a pluggy manager and calls their hooks one by one.

    ``strict=True`` (default): a plugin that fails to import or whose hook misbehaves stops the
    run with a ``PluginError``. ``strict=False``: such a plugin is quarantined (unregistered)
    for the rest of the run, one line goes to stderr, and :attr:`quarantined` holds the message
    and :attr:`quarantine_records` the plugin, hook and reason.
    """

    def __init__(self, names: Iterable[str], *, strict: bool = True, trace: bool | None = None,
                 installed: dict[str, PluginEntry] | None = None,
                 call_timeout_s: float | None = CALL_TIMEOUT_S, import_timeout_s: float | None = IMPORT_TIMEOUT_S,
                 announce: bool = True):
        self.strict, self.announce = strict, announce  # announce=False: the caller reports quarantines
        self.call_timeout_s, self.import_timeout_s = call_timeout_s, import_timeout_s
        self.runner = PluginRunner()
        self.trace = bool(int(os.environ.get(TRACE_ENV, "0") or 0)) if trace is None else trace
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.entries = installed if installed is not None else installed_plugins()
        self.info: dict[str, PluginInfo] = {}
        self.quarantined: dict[str, str] = {}
        self.quarantine_records: list[dict[str, str]] = []
        for name in names:
            self._load(name)
        dependency_layers(self.info)  # a dependency cycle fails here, before any call

    # -- loading ---------------------------------------------------------------------------
    def _load(self, name: str) -> None:
        validate_name(name)
        entry = self.entries.get(name)
        if entry is None:
            resolve_selection([name], self.entries)  # raises the unknown-name error
        try:
            plugin = self.runner.run(_instantiate, (entry,), self.import_timeout_s)
        except (PluginRaised, PluginTimeout) as exc:  # import errors of any kind are the plugin's
            self._fail(PluginError(name, "import", _problem(exc), entry.distribution))
            return
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
            info = self._info(name, plugin)
        except PluginError as exc:
            self._fail(exc)
            return
        except Exception as exc:
            self._fail(PluginError(name, "register", _one_line(exc), entry.distribution))
            return
        self.info[name] = info

    def _info(self, name: str, plugin: Any) -> PluginInfo:
        impl = getattr(plugin, "ufarsap_plugin_info", None)
        if impl is None:
            raise PluginError(name, "ufarsap_plugin_info", "plugin does not implement it (required)")
        try:
            info = self.runner.run(impl, (), self.call_timeout_s)
            info = PluginInfo.model_validate(info.model_dump() if isinstance(info, PluginInfo) else info)
        except (PluginRaised, PluginTimeout, ValidationError) as exc:
            raise PluginError(name, "ufarsap_plugin_info", _problem(exc), self.entries[name].distribution) from None
        if name.split(".")[0] != info.paradigm.value:
            raise PluginError(name, "ufarsap_plugin_info",
                              f"declares paradigm '{info.paradigm.value}' but its name says '{name.split('.')[0]}'")
        if info.contract.split(".")[0] != HOOK_CONTRACT_VERSION.split(".")[0]:
            raise PluginError(name, "ufarsap_plugin_info",
                              f"written for hook contract {info.contract}, this engine speaks {HOOK_CONTRACT_VERSION}")
        return info

    def _fail(self, exc: PluginError) -> None:
        if self.strict:
            raise exc
        if self.announce:
            print(f"ufarsap-engine: warning: {exc}; quarantined for the rest of this run", file=sys.stderr, flush=True)
        log.info("quarantined %s in %s: %s", exc.plugin, exc.hook, exc.problem)
        self.quarantined[exc.plugin] = str(exc)
        self.quarantine_records.append({"plugin": exc.plugin, "hook": exc.hook, "reason": exc.problem,
                                        "distribution": exc.distribution or ""})
        plugin = self.pm.get_plugin(exc.plugin)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.info.pop(exc.plugin, None)

    def quarantine_summary(self) -> dict[str, dict[str, str]]:
        """``{plugin: {hook, reason, distribution}}`` for summary.json (first failure per plugin)."""
        out: dict[str, dict[str, str]] = {}
        for rec in self.quarantine_records:
            out.setdefault(rec["plugin"], {k: v for k, v in rec.items() if k != "plugin"})
        return out

    @property
    def names(self) -> list[str]:
        return sorted(self.info)

    def layers(self) -> list[list[str]]:
        """The loaded plugins in dependency order (see :func:`dependency_layers`)."""
        return dependency_layers(self.info)

    def upstream_of(self, name: str) -> list[str]:
        """The loaded plugins whose results ``name`` reads."""
        return upstream_of(name, self.info)

    # -- calling ---------------------------------------------------------------------------
    def implementers(self, hook: str) -> list[str]:
        return [impl.plugin_name for impl in getattr(self.pm.hook, hook).get_hookimpls()
                if impl.plugin_name in self.info]

    def call(self, hook: str, *, only: Iterable[str] | None = None, expect: type | None = None,
             **kwargs: Any) -> dict[str, Any]:
        """Call ``hook`` on each implementing plugin (or those in ``only``); return
        ``{plugin: result}`` for non-``None`` results, validated as ``expect`` when given."""
        wanted = set(only) if only is not None else None
        results: dict[str, Any] = {}
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            name = impl.plugin_name
            if name not in self.info or (wanted is not None and name not in wanted):
                continue
            t0 = time.perf_counter()
            try:
                args = tuple(private_copy(kwargs[a]) for a in impl.argnames)
                result = self.runner.run(impl.function, args, self.call_timeout_s)
                if result is not None and expect is not None:  # validated afresh: no later edits, no model_construct
                    result = expect.model_validate(result.model_dump() if isinstance(result, expect) else result)
            except (PluginRaised, PluginTimeout, ValidationError) as exc:
                failure = PluginError(name, hook, _problem(exc), self.entries[name].distribution)
                failure.__cause__ = exc.error if isinstance(exc, PluginRaised) else exc  # what the plugin raised
                self._fail(failure)
                continue
            if self.trace:
                _trace(name, hook, kwargs, result, time.perf_counter() - t0)
            if result is not None:
                results[name] = result
        return results

    def fail(self, plugin: str, hook: str, problem: str) -> None:
        """Report a problem the engine found in a plugin's result (wrong shape, NaN ...)."""
        self._fail(PluginError(plugin, hook, problem, self.entries[plugin].distribution))


def private_copy(value: Any) -> Any:
    """A plugin's own copy of a hook argument, so that nothing it changes reaches the engine.
    Models are rebuilt from their dump (several times faster than ``deepcopy``)."""
    if isinstance(value, BaseModel):
        return type(value).model_validate(value.model_dump())
    if isinstance(value, list):
        return [private_copy(v) for v in value]
    return copy.deepcopy(value)


def _instantiate(entry: PluginEntry) -> Any:
    obj = entry.load()
    return obj() if inspect.isclass(obj) else obj


def _problem(exc: BaseException) -> str:
    """One line saying what went wrong in plugin code (what it raised, or that it hung)."""
    if isinstance(exc, PluginRaised):
        err = exc.error
        if isinstance(err, PluginError):
            return err.problem
        if isinstance(err, SystemExit):
            return f"called sys.exit({err.code!r})"
        if isinstance(err, KeyboardInterrupt):
            return "raised KeyboardInterrupt"
        return _one_line(err)
    return _one_line(exc) if isinstance(exc, ValidationError) else str(exc)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"invalid {exc.title} returned: {loc}: {e['msg']}{more}"
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _trace(plugin: str, hook: str, kwargs: dict, result: Any, seconds: float) -> None:
    def short(v: Any) -> str:
        s = v.model_dump_json() if hasattr(v, "model_dump_json") else repr(v)
        return s if len(s) < 300 else s[:297] + "..."
    args = ", ".join(f"{k}={short(v)}" for k, v in kwargs.items())
    print(f"[trace] {plugin}.{hook}({args}) -> {short(result)} [{seconds * 1e3:.1f} ms]", file=sys.stderr)
