"""Reading checkpoints without running code from them.

A checkpoint is data, but two of its formats are pickles: torch DCP's ``.metadata`` (read by
``FileSystemReader.read_metadata`` with plain ``pickle.load``) and every ``torch.save`` file
(``common.pt``, ``engine_tensors.pt``, the byte items inside ``*.distcp``, which torch DCP loads
with ``weights_only=False``). A pickle can call any importable function while it loads, and the
``MANIFEST.json`` hashes do not help against whoever can rewrite the manifest too.

So nothing is unpickled freely:

- :func:`scan_checkpoint` (called by ``verify_checkpoint``) reads ``.metadata`` with
  :class:`MetadataUnpickler`, which only resolves an explicit allowlist of torch DCP metadata
  classes, and every ``torch.save`` payload with ``torch.load(weights_only=True)``. A refused
  file gives one line: ``checkpoint X is not safe to load: ...`` (a :class:`UnsafeCheckpoint`,
  a user error: exit 2), before any model is built.
- :func:`guarded_loading` wraps the actual load: the DCP reader's ``pickle`` is the restricted
  one and ``torch.load`` is forced to ``weights_only`` (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``), so a
  file swapped between the scan and the load is refused the same way.
"""

from __future__ import annotations

import io
import os
import pickle
import threading
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from ufarsap_engine.errors import UserError

DCP_METADATA = ".metadata"

#: Every global a torch DCP ``.metadata`` written by this engine refers to. Constructors of
#: plain dataclasses/enums and torch value types: none of them runs anything when called.
ALLOWED_GLOBALS: dict[str, frozenset[str]] = {
    "torch.distributed.checkpoint.metadata": frozenset({
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
        "TensorProperties", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING",
    }),
    "torch.distributed.checkpoint.filesystem": frozenset({"_StorageInfo"}),
    "torch.distributed.checkpoint.planner": frozenset({
        "SavePlan", "WriteItem", "WriteItemType", "TensorWriteData", "LoadPlan", "ReadItem", "LoadItemType",
    }),
    "torch": frozenset({"Size", "strided", "sparse_coo", "contiguous_format", "channels_last",
                        "channels_last_3d", "preserve_format"}),
    "torch.serialization": frozenset({"_get_layout"}),
    "collections": frozenset({"OrderedDict"}),
}


class UnsafeCheckpoint(UserError):
    """A checkpoint file would need to run code (or is not the format it claims) to load."""

    def __init__(self, ckpt, problem: str):
        super().__init__(f"checkpoint {ckpt} is not safe to load: {problem}")


class _Refused(pickle.UnpicklingError):
    pass


def _is_dtype(module: str, name: str) -> bool:
    import torch

    return module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)


class MetadataUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS` (and torch dtypes)."""

    def find_class(self, module: str, name: str):
        if name in ALLOWED_GLOBALS.get(module, ()) or _is_dtype(module, name):
            return super().find_class(module, name)
        raise _Refused(f"it refers to {module}.{name}, which is not a checkpoint metadata type")


def restricted_load(file):
    """``pickle.load`` for DCP metadata: allowlisted globals only, result must be a Metadata."""
    from torch.distributed.checkpoint.metadata import Metadata

    obj = MetadataUnpickler(file).load()
    if not isinstance(obj, Metadata):
        raise _Refused(f"it holds a {type(obj).__name__}, not torch DCP Metadata")
    return obj


def _problem(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:300]


def _torch_load(data, what: str, ckpt) -> object:
    import torch

    try:
        return torch.load(data, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(ckpt, f"{what} needs more than tensors and plain values ({_problem(e)})") from None
    except Exception as e:  # not a torch.save file at all
        raise UnsafeCheckpoint(ckpt, f"{what} is not a readable torch file ({type(e).__name__}: {_problem(e)})") from None


def read_dcp_metadata(ckpt: Path):
    """The torch DCP metadata of ``ckpt``, read with the restricted unpickler."""
    path = Path(ckpt) / DCP_METADATA
    try:
        with open(path, "rb") as f:
            return restricted_load(f)
    except _Refused as e:
        raise UnsafeCheckpoint(ckpt, f"{DCP_METADATA}: {e}") from None
    except FileNotFoundError:
        raise UserError(f"corrupt checkpoint: {path} is missing") from None
    except Exception as e:
        raise UnsafeCheckpoint(ckpt, f"{DCP_METADATA} is not torch DCP metadata ({type(e).__name__}: {_problem(e)})") from None


def scan_checkpoint(ckpt: str | os.PathLike) -> None:
    """Parse every pickled part of ``ckpt`` without running code; raise UnsafeCheckpoint."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    ckpt = Path(ckpt)
    md = read_dcp_metadata(ckpt)
    for idx, info in md.storage_data.items():
        if not isinstance(md.state_dict_metadata.get(idx.fqn), BytesStorageMetadata):
            continue  # tensors: torch DCP itself reads them with weights_only=True
        shard = (ckpt / info.relative_path).resolve()
        if shard.parent != ckpt.resolve():
            raise UnsafeCheckpoint(ckpt, f"{DCP_METADATA} points outside the checkpoint ({info.relative_path})")
        with open(shard, "rb") as f:
            f.seek(info.offset)
            payload = io.BytesIO(f.read(info.length))
        _torch_load(payload, f"item {idx.fqn} of {info.relative_path}", ckpt)
    for pt in sorted(ckpt.glob("*.pt")):
        _torch_load(pt, pt.name, ckpt)


def _refusal_in(e: BaseException) -> BaseException | None:
    """The unpickling refusal behind ``e``, if any (torch DCP and Megatron wrap errors)."""
    seen = set()
    todo = [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, pickle.UnpicklingError) or "Weights only load failed" in str(x):
            return x
        todo += [x.__cause__, x.__context__]
        todo += [v for v in getattr(x, "failures", {}).values() if isinstance(v, BaseException)]
    return None


_GUARD_LOCK = threading.Lock()
_SAFE_PICKLE = SimpleNamespace(load=restricted_load, dump=pickle.dump, dumps=pickle.dumps,
                               UnpicklingError=pickle.UnpicklingError)


@contextmanager
def guarded_loading(ckpt):
    """Inside: torch DCP unpickles metadata with the allowlist and every ``torch.load`` is
    ``weights_only``. A refusal becomes ``UnsafeCheckpoint`` naming ``ckpt``."""
    import torch.distributed.checkpoint.filesystem as fs

    with _GUARD_LOCK:
        saved_pickle = fs.pickle
        saved_env = {k: os.environ.pop(k, None) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
        fs.pickle = _SAFE_PICKLE
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
        try:
            yield
        except Exception as e:
            refusal = _refusal_in(e)
            if refusal is None:
                raise
            raise UnsafeCheckpoint(ckpt, _problem(refusal)) from None
        finally:
            fs.pickle = saved_pickle
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
            os.environ.update({k: v for k, v in saved_env.items() if v is not None})
