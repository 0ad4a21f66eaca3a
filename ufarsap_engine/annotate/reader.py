"""Reading annotations back: the API the trainer uses to train on scored data.

``load_annotations(DIR)`` returns one ``datasets.Dataset`` (memory-mapped Arrow: the shared
columns and every complete plugin's columns, rows in corpus order). ``check_annotations(DIR,
plugins)`` says, in one line, why an annotation cannot serve a plugin list: a plugin never
annotated, not annotated on every document, or annotated with another version or other
parameters (stale). Both raise ``UserError``; nothing on disk is changed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from ufarsap_engine.annotate.columns import BASE_COLUMNS, HORIZON
from ufarsap_engine.annotate.manifest import Manifest, base_dir, digest, params_hash, plugin_dir, read_manifest
from ufarsap_engine.errors import UserError


def _rerun(root: Path, plugins: Iterable[str]) -> str:
    return f"rerun `ufarsap-engine annotate --plugins {','.join(plugins)} --out {root}`"


def check_annotations(path: str | os.PathLike, plugins: Iterable[str],
                      plugin_params: dict[str, dict[str, Any]] | None = None) -> Manifest:
    """The manifest, if the annotation in ``path`` holds current, complete columns for every
    plugin in ``plugins`` (installed version, parameters ``plugin_params``); else a ``UserError``."""
    from ufarsap_engine.plugin_host import installed_plugins

    root = Path(path)
    manifest = read_manifest(root)
    plugins = sorted(plugins)
    installed = installed_plugins()
    missing = [n for n in plugins if n not in manifest.plugins]
    if missing:
        have = ", ".join(sorted(manifest.plugins)) or "none"
        raise UserError(f"{root} has no columns for {', '.join(missing)} (annotated: {have}); "
                        f"{_rerun(root, missing)}")
    for n in plugins:
        rec = manifest.plugins[n]
        if not manifest.complete(n):
            raise UserError(f"{root}: the columns of {n} do not cover every document (an interrupted "
                            f"or partial annotation); {_rerun(root, [n])}")
        if n in installed:
            ph = params_hash((plugin_params or {}).get(n, rec.params))
            if digest(installed[n].version, ph, HORIZON, rec.scales) != rec.key:
                raise UserError(f"{root}: the columns of {n} are stale (annotated with version {rec.version}, "
                                f"parameters {rec.params_hash}; now version {installed[n].version}, parameters "
                                f"{ph}); {_rerun(root, [n])} to re-annotate only those")
    return manifest


def load_annotations(path: str | os.PathLike, plugins: Iterable[str] | None = None,
                     plugin_params: dict[str, dict[str, Any]] | None = None):
    """The annotation in ``path`` as one ``datasets.Dataset``.

    ``plugins=None``: every plugin whose columns are complete, as stored (for inspection);
    otherwise exactly those plugins' columns, after :func:`check_annotations` (what training
    should use: it refuses missing, partial and stale columns).
    """
    import datasets

    root = Path(path)
    if plugins is None:
        manifest = read_manifest(root)
        plugins = [n for n in sorted(manifest.plugins) if manifest.complete(n)]
    else:
        plugins = sorted(plugins)
        manifest = check_annotations(root, plugins, plugin_params)
    parts = [_concat([_load(base_dir(root, s.key), s.rows, BASE_COLUMNS) for s in manifest.shards])]
    for n in plugins:
        rec = manifest.plugins[n]
        parts.append(_concat([_load(plugin_dir(root, n, rec.key, s.key), s.rows, rec.columns)
                              for s in manifest.shards]))
    return datasets.concatenate_datasets(parts, axis=1) if len(parts) > 1 else parts[0]


def _concat(shards: list):
    import datasets

    return datasets.concatenate_datasets(shards) if len(shards) > 1 else shards[0]


def _load(shard: Path, rows: int, columns: Iterable[str]):
    """One listed shard, checked against what the manifest says it holds."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(shard))
    except FileNotFoundError:
        raise UserError(f"{shard} is listed in the annotation manifest but missing; rerun annotate "
                        "with the same --out to rebuild it") from None
    except Exception as exc:
        raise UserError(f"{shard} is unreadable ({type(exc).__name__}); rerun annotate with the same --out "
                        "after removing it") from None
    absent = [c for c in columns if c not in ds.column_names]
    if absent or len(ds) != rows:
        what = f"lacks column {absent[0]}" if absent else f"has {len(ds)} rows, the manifest says {rows}"
        raise UserError(f"{shard} {what}; remove it and rerun annotate with the same --out")
    return ds
