"""The annotation manifest (``DIR/annotation.json``): the only record of what is complete.

A shard directory is written under a temporary name and renamed into place once complete; only
then is it listed here, and the manifest itself is replaced atomically. So whatever a reader or
a resumed run finds listed is whole, and anything on disk that is not listed is debris from an
interrupted run (removed by the next ``annotate``).

Layout::

    DIR/annotation.json                      this manifest
    DIR/base/SHARD/                          id, text, prompt, messages, content_hash, sentences
    DIR/plugins/PLUGIN/KEY/SHARD/            that plugin's columns for the same rows

``SHARD`` is a hash of the shard's documents' content hashes; ``KEY`` a hash of the plugin's
version, parameters and the horizon, and of the keys of the selected plugins it uses
(``PluginInfo.uses``), so a changed document, plugin or upstream selection never reuses old columns.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ufarsap_engine.errors import UserError

MANIFEST = "annotation.json"
FORMAT = "ufarsap-annotation"
FORMAT_VERSION = 1


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def content_hash(text: str, prompt: str | None, messages: list[dict] | None) -> str:
    """What a scoring hook sees of a document (text, prompt, conversation turns)."""
    return digest(text, prompt, messages)


def params_hash(params: dict[str, Any]) -> str:
    return digest(params)


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Shard(_M):
    key: str
    rows: int


class PluginRecord(_M):
    """Provenance of one plugin's columns and which shards hold them."""

    version: str
    distribution: str
    params: dict[str, Any] = Field(default_factory=dict)
    params_hash: str
    key: str
    scales: list[str]
    columns: list[str]
    done: list[str] = Field(default_factory=list, description="shard keys whose columns are complete")
    upstream: dict[str, str] = Field(default_factory=dict,
                                     description="the selected plugins whose results it used, and their keys")


class Manifest(_M):
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    source: str
    horizon: str
    documents: int
    shard_size: int = Field(gt=0)
    shards: list[Shard]
    plugins: dict[str, PluginRecord] = Field(default_factory=dict)

    def complete(self, plugin: str) -> bool:
        rec = self.plugins.get(plugin)
        return rec is not None and {s.key for s in self.shards} <= set(rec.done)


def base_dir(root: Path, shard: str) -> Path:
    return root / "base" / shard


def plugin_dir(root: Path, plugin: str, key: str, shard: str) -> Path:
    return root / "plugins" / plugin / key / shard


def read_manifest(root: Path) -> Manifest:
    """The manifest of an annotation directory; a one-line ``UserError`` for anything else."""
    path = root / MANIFEST
    if not root.is_dir():
        raise UserError(f"{root} does not exist or is not a directory; annotate first: "
                        f"ufarsap-engine annotate --plugins LIST --out {root}")
    if not path.is_file():
        raise UserError(f"{root} is not an annotation directory (no {MANIFEST}); "
                        "give a directory written by `ufarsap-engine annotate`")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is unreadable ({type(exc).__name__}); remove {root} and annotate again") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UserError(f"{path} is not an annotation manifest (format is not '{FORMAT}')")
    if raw.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} has annotation format version {raw.get('format_version')}; "
                        f"this engine reads version {FORMAT_VERSION}: annotate into a new --out")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise UserError(f"{path} is not a valid annotation manifest: "
                        f"{'.'.join(map(str, e['loc']))}: {e['msg']}") from None


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically (write, fsync, rename)."""
    tmp = root / f".{MANIFEST}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(manifest.model_dump_json(indent=1))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / MANIFEST)


class DirLock:
    """An exclusive lock on an annotation directory, so two annotate runs never interleave."""

    def __init__(self, root: Path):
        self.root = root
        self._f = None

    def __enter__(self) -> "DirLock":
        self._f = open(self.root / ".annotate.lock", "w")
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._f.close()
            raise UserError(f"another `ufarsap-engine annotate` is writing {self.root}; wait for it to finish") from None
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()
