"""Tampered checkpoints: real pickle payloads planted the way an attacker would (the manifest is
regenerated afterwards, so hashes match). Every payload writes ``marker`` when it runs; the
"stealthy" ones then return the genuine object so that an unguarded load carries on and exits 0.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch

from ufarsap_engine.trainer.checkpoint import write_manifest

KINDS = ("metadata", "metadata-stealthy", "common.pt", "engine_tensors.pt", "distcp-bytes")


class Payload:
    """Unpickling this runs ``os.system``-free code that writes the marker, then returns
    ``genuine`` (unpickled from its bytes) or the string "pwned"."""

    def __init__(self, marker: Path, genuine: bytes | None = None):
        self.marker, self.genuine = str(marker), genuine

    def __reduce__(self):
        code = f"(__import__('pathlib').Path({self.marker!r}).write_text('ran'), "
        if self.genuine is None:
            code += "'pwned')[1]"
        else:
            code += f"__import__('pickle').loads({self.genuine!r}))[1]"
        return (eval, (code,))


def _torch_save_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def tamper(ckpt: Path, kind: str, marker: Path) -> Path:
    """Plant a payload of ``kind`` in ``ckpt``; returns the file that was changed."""
    ckpt = Path(ckpt)
    if kind == "metadata":
        target = ckpt / ".metadata"
        target.write_bytes(pickle.dumps(Payload(marker)))
    elif kind == "metadata-stealthy":
        target = ckpt / ".metadata"
        target.write_bytes(pickle.dumps(Payload(marker, target.read_bytes())))
    elif kind in ("common.pt", "engine_tensors.pt"):
        target = ckpt / kind
        genuine = torch.load(target, weights_only=True)
        genuine["extra"] = Payload(marker)
        torch.save(genuine, target)
    elif kind == "distcp-bytes":
        from torch.distributed.checkpoint.metadata import BytesStorageMetadata

        md_path = ckpt / ".metadata"
        md = pickle.loads(md_path.read_bytes())
        idx, info = next((i, s) for i, s in md.storage_data.items()
                         if isinstance(md.state_dict_metadata[i.fqn], BytesStorageMetadata))
        target = ckpt / info.relative_path
        with open(target, "rb") as f:
            f.seek(info.offset)
            genuine = f.read(info.length)
        evil = _torch_save_bytes(Payload(marker, pickle.dumps(torch.load(io.BytesIO(genuine), weights_only=True))))
        info.offset = target.stat().st_size
        info.length = len(evil)
        with open(target, "ab") as f:
            f.write(evil)
        md_path.write_bytes(pickle.dumps(md))  # plain metadata types: only the offsets changed
    else:
        raise ValueError(kind)
    write_manifest(ckpt)
    return target
