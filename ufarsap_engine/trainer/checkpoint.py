"""Atomic, verifiable, reshardable checkpoints.

Layout of ``OUT/checkpoints``::

    iter_0000040/            one completed checkpoint
        (dist_checkpointing files)   model + optimizer, sharded; loadable at another TP/PP
        engine_state.json    step, data position, LR scheduler, configs, extra_state (JSON)
        engine_tensors.pt    RNG states, objective extra modules + their optimizers
        tokenizer.json       the tokenizer the model was trained with
        MANIFEST.json        size + sha256 of every file above; written last
    latest                   "iter_0000040", replaced atomically after the rename

Atomicity: everything is written into ``iter_XXXXXXX.tmp``; the directory is renamed only after
the manifest is on disk, and ``latest`` is replaced (write + ``os.replace``) last. A crash leaves
either the previous checkpoint or a ``.tmp`` directory that is never loaded. A directory
without a manifest, with a missing/resized file or a wrong hash is refused with one line.

No code runs from a checkpoint: ``engine_state.json`` is JSON, ``engine_tensors.pt`` is read
with ``torch.load(weights_only=True)``, and the model/optimizer part (torch DCP ``.metadata`` and
``.distcp`` shards, Megatron's ``common.pt``) is scanned by ``safe_load.scan_checkpoint`` in
``verify_checkpoint`` and read under ``safe_load.guarded_loading`` (see ``safe_load.py``). A
checkpoint that would need to run code is refused with one line, exit 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ufarsap_engine.errors import UserError

from .safe_load import guarded_loading, scan_checkpoint

MANIFEST = "MANIFEST.json"
ENGINE_STATE = "engine_state.json"
ENGINE_TENSORS = "engine_tensors.pt"
LATEST = "latest"
TOKENIZER = "tokenizer.json"  # a copy of the run's tokenizer: checkpoints are self-contained
FORMAT_VERSION = 1
#: Hash every file when a checkpoint is smaller than this; above it only sizes are checked.
HASH_LIMIT_BYTES = 2 * 1024**3


def iter_name(step: int) -> str:
    return f"iter_{step:07d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _files_of(ckpt: Path) -> list[Path]:
    return sorted(p for p in ckpt.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(ckpt: Path) -> None:
    files = _files_of(ckpt)
    total = sum(p.stat().st_size for p in files)
    entries = {}
    for p in files:
        rel = str(p.relative_to(ckpt))
        e = {"size": p.stat().st_size}
        if total <= HASH_LIMIT_BYTES:
            e["sha256"] = _sha256(p)
        entries[rel] = e
    _write_atomic(ckpt / MANIFEST, json.dumps({"format": FORMAT_VERSION, "files": entries}, indent=1))


def verify_checkpoint(ckpt: str | os.PathLike) -> Path:
    """Check that ``ckpt`` is a complete, unmodified checkpoint; raise a one-line UserError."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise UserError(f"checkpoint not found: {ckpt}")
    if ckpt.name.endswith(".tmp"):
        raise UserError(f"partial checkpoint (an interrupted save): {ckpt}")
    mf = ckpt / MANIFEST
    if not mf.exists():
        raise UserError(f"partial checkpoint (no {MANIFEST}; the save did not finish): {ckpt}")
    try:
        manifest = json.loads(mf.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"corrupt checkpoint: unreadable {MANIFEST} in {ckpt}") from None
    for rel, e in files.items():
        p = ckpt / rel
        if not p.exists():
            raise UserError(f"corrupt checkpoint: {p} is missing")
        if p.stat().st_size != e["size"]:
            raise UserError(f"corrupt checkpoint: {p} has {p.stat().st_size} bytes, expected {e['size']}")
        if "sha256" in e and _sha256(p) != e["sha256"]:
            raise UserError(f"corrupt checkpoint: {p} does not match its saved sha256")
    for required in (ENGINE_STATE, "metadata.json"):
        if required not in files:
            raise UserError(f"corrupt checkpoint: {ckpt} has no {required}")
    scan_checkpoint(ckpt)
    return ckpt


def find_latest(ckpt_root: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``latest``; if that marker is missing (crash between the rename
    and the marker), the newest ``iter_*`` directory that has a manifest. None if there is none."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return None
    marker = root / LATEST
    if marker.exists():
        name = marker.read_text().strip()
        if re.fullmatch(r"iter_\d{7,}", name):  # never a path out of the checkpoints folder
            return root / name
    done = completed_checkpoints(root)
    return done[-1] if done else None


def completed_checkpoints(ckpt_root: str | os.PathLike) -> list[Path]:
    """Every ``iter_*`` directory with a manifest, oldest first."""
    root = Path(ckpt_root)
    return sorted(p for p in root.glob("iter_*") if p.is_dir() and not p.name.endswith(".tmp") and (p / MANIFEST).exists())


def find_resumable(ckpt_root: str | os.PathLike, say=None) -> Path | None:
    """The newest checkpoint that verifies, for a resume: ``latest`` first, then the older ones
    kept by ``keep_last``, newest first. Each one skipped is reported through ``say`` (one
    line). A checkpoint that is not safe to load is never skipped over (someone rewrote the run
    directory): its error is raised. None when there is no checkpoint; when none verifies, the
    newest one's error is raised."""
    from .safe_load import UnsafeCheckpoint

    newest = find_latest(ckpt_root)
    if newest is None:
        return None
    candidates = [newest] + [p for p in reversed(completed_checkpoints(ckpt_root)) if p != newest]
    first_error = None
    for ckpt in candidates:
        try:
            verify_checkpoint(ckpt)
        except UnsafeCheckpoint:
            raise
        except UserError as e:
            first_error = first_error or e
            if say is not None:
                say(f"{e}; trying the previous checkpoint")
            continue
        if ckpt != newest and say is not None:
            say(f"resuming from the previous checkpoint {ckpt} (the newest one failed verification)")
        return ckpt
    raise first_error


def _note(line: str) -> None:
    print(f"note: {line}", file=sys.stderr, flush=True)


def agree_resumable(ckpt_root: str | os.PathLike) -> Path | None:
    """Collective :func:`find_resumable`: rank 0 verifies (and says which it falls back to),
    every rank gets the same answer or the same one-line error."""
    box: list = [None, None]
    if dist.get_rank() == 0:
        try:
            found = find_resumable(ckpt_root, say=_note)
            box = [str(found) if found else None, None]
        except UserError as e:
            box = [None, str(e)]
    dist.broadcast_object_list(box, src=0)
    if box[1] is not None:
        raise UserError(box[1])
    return Path(box[0]) if box[0] else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Accept a checkpoint dir, a ``checkpoints`` dir (uses ``latest``) or a run dir."""
    p = Path(path)
    if p.name.startswith("iter_") or (p / MANIFEST).exists() or (p / ENGINE_STATE).exists():
        return p
    for root in (p, p / "checkpoints"):
        found = find_latest(root)
        if found is not None:
            return found
    return p


# --------------------------------------------------------------------------------------------
# RNG


def _rng_state() -> dict:
    st = {
        "torch": torch.get_rng_state(),
        "python": json.dumps(random.getstate()),
        "numpy": json.dumps(_np_state_to_json(np.random.get_state())),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def _np_state_to_json(state):
    name, keys, pos, has_gauss, cached = state
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    py = json.loads(st["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = json.loads(st["numpy"])
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


# --------------------------------------------------------------------------------------------
# Save / load


def _sharded_state_dict(state, is_loading: bool) -> dict:
    model_sd = state.built.gpt.sharded_state_dict()
    return {
        "model": model_sd,
        "optimizer": state.optimizer.sharded_state_dict(model_sd, is_loading=is_loading),
    }


def _check_json(extra_state: dict) -> str:
    try:
        return json.dumps(extra_state)
    except (TypeError, ValueError) as e:
        raise TypeError(f"extra_state must be JSON-serialisable: {e}") from None


def _in_process_results_queue() -> None:
    """dist_checkpointing's file writer collects write results through a queue that it creates,
    by default, with a ``multiprocessing`` Manager: a server process that outlives a SIGKILLed
    trainer (and keeps its stdout/stderr open). Our saves are synchronous (the queue is filled
    and drained in this process), so a plain in-process queue does the same job."""
    import queue

    from megatron.core.dist_checkpointing.strategies import filesystem_async as fa

    if getattr(fa, "_results_queue", None) is None:
        fa._results_queue = queue.Queue()


def save_checkpoint(state, extra_state: dict | None = None) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory."""
    from megatron.core import dist_checkpointing

    _in_process_results_queue()

    extra_json = _check_json(extra_state or {})
    root = state.train_cfg.out_path / "checkpoints"
    final = root / iter_name(state.step)
    tmp = root / (final.name + ".tmp")
    rank = dist.get_rank()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    dist.barrier()

    dist_checkpointing.save(_sharded_state_dict(state, is_loading=False), str(tmp))

    rngs = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(_rng_state(), rngs, dst=0)
    if rank == 0:
        engine = {
            "format": FORMAT_VERSION,
            "step": state.step,
            "data": state.data.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "model_config": state.model_cfg.model_dump(),
            "train_config": state.train_cfg.model_dump(),
            "layout": {"tp": state.info.tp, "pp": state.info.pp, "dp": state.info.dp,
                       "world_size": state.info.world_size},
            "tokenizer_vocab_size": state.data.ds.tokenizer.vocab_size,
            "extra_state": json.loads(extra_json),
        }
        (tmp / ENGINE_STATE).write_text(json.dumps(engine, indent=1))
        tensors = {
            "rng": rngs,
            "extra_modules": [m.state_dict() for m, _ in state.extra_modules],
            "extra_optimizers": [o.state_dict() for o in state.extra_optimizers],
        }
        torch.save(tensors, tmp / ENGINE_TENSORS)
        state.data.ds.tokenizer.save(tmp / TOKENIZER)
        write_manifest(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        _write_atomic(root / LATEST, final.name)
        _prune(root, state.train_cfg.keep_last)
    dist.barrier()
    return final


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("iter_*") if p.is_dir() and not p.name.endswith(".tmp"))
    for p in done[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def _agree(fn):
    """Run ``fn`` on rank 0 and raise the same UserError on every rank if it fails."""
    err = None
    if dist.get_rank() == 0:
        try:
            fn()
        except UserError as e:
            err = str(e)
    box = [err]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise UserError(box[0])


def read_engine_state(ckpt: Path) -> dict:
    return json.loads((ckpt / ENGINE_STATE).read_text())


def _check_model_config(ckpt: Path, model_cfg) -> None:
    """Refuse a checkpoint of another model; execution fields (e.g. the attention backend) may
    differ, since they do not change the weights."""
    from .model_config import EXECUTION_FIELDS

    saved = read_engine_state(ckpt).get("model_config", {})
    mine = model_cfg.model_dump()
    diff = [k for k in mine if k in saved and k not in EXECUTION_FIELDS and saved[k] != mine[k]]
    if diff:
        k = diff[0]
        raise UserError(
            f"checkpoint {ckpt} was saved for a different model ({k}={saved[k]!r}, "
            f"this run has {mine[k]!r})"
        )


def checkpoint_tokenizer_path(ckpt: str | os.PathLike) -> Path:
    """The tokenizer saved with a checkpoint (falls back to the run directory's)."""
    ckpt = Path(ckpt)
    for p in (ckpt / TOKENIZER, ckpt.parent.parent / TOKENIZER):
        if p.exists():
            return p
    raise UserError(f"checkpoint {ckpt} has no {TOKENIZER} (nor has its run directory)")


def checkpoint_model_config(ckpt: str | os.PathLike) -> dict:
    """The model configuration a checkpoint was saved with (as a dict for ``ModelConfig``)."""
    return read_engine_state(Path(ckpt))["model_config"]


def load_model_weights(gpt, ckpt: str | os.PathLike, verified: bool = False) -> None:
    """Load only the model weights of ``ckpt`` into this rank's ``GPTModel`` (collective;
    any TP/PP). Used by ``init_from``, generation and export."""
    from megatron.core import dist_checkpointing

    ckpt = Path(ckpt)
    if not verified:
        _agree(lambda: verify_checkpoint(ckpt))
    with guarded_loading(ckpt):
        loaded = dist_checkpointing.load({"model": gpt.sharded_state_dict()}, str(ckpt))
    gpt.load_state_dict(loaded["model"], strict=True)


def load_checkpoint(state, ckpt: str | os.PathLike, full: bool = True, verified: bool = False) -> dict:
    """Load a checkpoint into ``state`` (collective). Returns the saved ``extra_state``.

    ``full=True`` restores everything (model, optimizer, scheduler, data position, step, RNG,
    extra modules) for a resume; ``full=False`` takes only the model weights (``init_from``).
    Works at any TP/PP: ``dist_checkpointing`` reshards the model and optimizer tensors."""
    from megatron.core import dist_checkpointing

    ckpt = Path(ckpt)
    if not verified:
        _agree(lambda: verify_checkpoint(ckpt))
    engine = read_engine_state(ckpt)
    _check_model_config(ckpt, state.model_cfg)
    if not full:
        load_model_weights(state.built.gpt, ckpt, verified=True)
        return engine.get("extra_state", {})
    with guarded_loading(ckpt):
        loaded = dist_checkpointing.load(_sharded_state_dict(state, is_loading=True), str(ckpt))
    state.built.gpt.load_state_dict(loaded["model"], strict=True)

    state.optimizer.load_state_dict(loaded["optimizer"])
    state.scheduler.load_state_dict(engine["scheduler"])
    # The scheduler set the lr for the *completed* steps; the loop increments before stepping.
    state.data.load_state_dict(engine["data"])
    state.step = int(engine["step"])
    tensors = torch.load(ckpt / ENGINE_TENSORS, weights_only=True, map_location="cpu")
    for (m, _), sd in zip(state.extra_modules, tensors.get("extra_modules", [])):
        m.load_state_dict(sd)
    for o, sd in zip(state.extra_optimizers, tensors.get("extra_optimizers", [])):
        o.load_state_dict(sd)
    rngs = tensors.get("rng") or []
    layout = engine.get("layout", {})
    if layout.get("world_size") == state.info.world_size and len(rngs) == state.info.world_size:
        _set_rng_state(rngs[state.info.rank])
    elif rngs:
        _set_rng_state(rngs[0])
    return engine.get("extra_state", {})
