"""``annotate``: score a corpus once with the selected plugins and store the results as columns.

Documents are read as the trainer reads them, cut into shards of ``shard_size`` rows, and each
shard is scored in batches by a pool of worker processes (forkserver; each builds its plugin
host once) through the engine's own ``score_batch`` at the short horizon. Work is skipped
wherever the manifest already lists a complete shard for the same document contents and the
same plugin version and parameters, which makes runs incremental (a new plugin computes only its
columns), resumable (a killed run keeps its complete shards), and honest about stale columns
(a plugin whose version or parameters changed is re-annotated, and the run says so).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable

from ufarsap_engine.annotate import worker
from ufarsap_engine.annotate.columns import HORIZON, base_features, plugin_columns, plugin_features, served_scales
from ufarsap_engine.annotate.manifest import (
    MANIFEST, DirLock, Manifest, PluginRecord, Shard, base_dir, content_hash, digest, params_hash, plugin_dir,
    read_manifest, write_manifest,
)
from ufarsap_engine.errors import EngineFailure, UserError
from ufarsap_engine.plugin_host import PluginHost, installed_plugins, resolve_selection

DEFAULT_SHARD_SIZE = 1024
#: What an annotation run interrupted before its first manifest leaves behind (resumable).
OWN_ENTRIES = {".annotate.lock", "base", "plugins", f".{MANIFEST}.tmp"}
Doc = tuple[str, str, "str | None", "list[dict] | None"]


def annotate(out: str | os.PathLike, plugins: str | list[str], *, data: str | None = None, workers: int = 2,
             batch_size: int = 64, shard_size: int | None = None, plugin_params: dict[str, dict] | None = None,
             progress: Callable[[int, int], None] | None = None,
             note: Callable[[str], None] | None = None, need_first: list[str] | None = None,
             stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Annotate ``data`` (a .txt/.jsonl file or saved HF dataset; None: the embedded corpus)
    with ``plugins`` into ``out``; returns a summary. ``workers=0`` scores in this process.

    ``shard_size`` (documents per shard) defaults to the existing annotation's, else 1024.
    ``progress(done, total)`` is called with document counts; ``note(line)`` for what the run
    decided (reused, stale, resumed). ``need_first``: content hashes in the order a trainer will
    need them; shards are then scored in that order (a trainer reading behind waits least).
    ``stop()`` true: finish the batches in flight and return early (complete shards are kept;
    the next run resumes from them).
    Raises ``UserError`` for bad input, leaving ``out`` as it was.
    """
    if workers < 0 or batch_size < 1 or (shard_size is not None and shard_size < 1):
        raise UserError("--workers must be >= 0, --batch-size and shard size >= 1")
    note = note or (lambda line: print(f"annotate: {line}", file=sys.stderr))
    t_start = time.perf_counter()
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} is a file; give a directory for the annotation")
    if root.is_dir() and not (root / MANIFEST).exists() and {p.name for p in root.iterdir()} - OWN_ENTRIES:
        raise UserError(f"--out {root} is not an annotation directory (no {MANIFEST}) and is not empty; "
                        "give an empty or new directory")
    previous = read_manifest(root) if (root / MANIFEST).exists() else None

    installed = installed_plugins()
    names = resolve_selection(plugins, installed)
    if not names:
        raise UserError("--plugins selects no plugin; name at least one (see `ufarsap-engine plugins`)")
    params = {n: dict((plugin_params or {}).get(n, {})) for n in names}
    host = PluginHost(names, strict=True, installed=installed)
    for n in names:  # parameters are checked here, before any worker starts
        host.call("ufarsap_configure", only=[n], params=params[n])
    scales = {n: served_scales(host.info[n]) for n in names}
    idle = [n for n in names if not scales[n]]
    if idle:
        raise UserError(f"{idle[0]} scores nothing at the {HORIZON} horizon, so there is nothing to annotate "
                        "with it; leave it out of --plugins")
    for n in names:
        if not host.info[n].stateless:
            note(f"{n} declares that its scores depend on more than the text (stateless=False); its columns "
                 "are taken once, with an empty alignment state, and may depend on batching")

    from ufarsap_engine.trainer.data import DataSpec, read_documents

    docs: list[Doc] = [(str(d.doc_id), d.text, d.prompt, d.messages) for d in read_documents(DataSpec(path=data))]
    source = str(Path(data).resolve()) if data else "embedded corpus"
    if previous is not None and previous.source != source:
        raise UserError(f"{root} annotates {previous.source}, not {source}; give another --out")
    hashes = [content_hash(t, p, m) for _, t, p, m in docs]
    shard_size = shard_size or (previous.shard_size if previous else DEFAULT_SHARD_SIZE)
    spans = [(a, min(a + shard_size, len(docs))) for a in range(0, len(docs), shard_size)]
    shards = [Shard(key=digest(i, hashes[a:b]), rows=b - a) for i, (a, b) in enumerate(spans)]

    root.mkdir(parents=True, exist_ok=True)
    with DirLock(root):
        previous = read_manifest(root) if (root / MANIFEST).exists() else None
        manifest, status = _reconcile(root, previous, source, len(docs), shard_size, shards, names, scales, params,
                                      installed, note, {n: host.upstream_of(n) for n in names}, host.layers())
        cache = _reusable_rows(root, previous, manifest, names, set(hashes))
        for shard, (a, b) in zip(shards, spans):  # written before the manifest lists them
            if not base_dir(root, shard.key).is_dir():
                _save(_base_rows(docs[a:b], hashes[a:b]), base_features(), base_dir(root, shard.key))
        write_manifest(root, manifest)
        _prune(root, manifest)

        todo = []  # (shard index, plugins that still need it, rows to score: those not reusable)
        for i, (shard, (a, b)) in enumerate(zip(shards, spans)):
            need = tuple(n for n in names if shard.key not in manifest.plugins[n].done)
            if need:
                rows = [r for r in range(a, b) if any(hashes[r] not in cache.get(n, {}) for n in need)]
                todo.append((i, need, rows))
        if need_first:
            todo.sort(key=_first_need(need_first, hashes, spans))
        total = sum(len(rows) for _, _, rows in todo)
        scored = {n: 0 for n in names}
        timing = _run_pool(root, manifest, docs, hashes, spans, todo, cache, workers, batch_size, params, scales,
                           names, total, scored, progress, stop or (lambda: False))
        _prune(root, manifest)

    for n in names:
        if scored[n] and status[n] == "reused":
            status[n] = "resumed"
    return {
        "out": str(root), "source": source, "documents": len(docs), "shards": len(shards),
        "workers": workers, "batch_size": batch_size,
        "plugins": {n: {"status": status[n], "scored_documents": scored[n],
                        "version": manifest.plugins[n].version, "params_hash": manifest.plugins[n].params_hash,
                        "columns": manifest.plugins[n].columns} for n in names},
        "scored_documents": total, "startup_s": round(timing["startup_s"], 3),
        "scoring_s": round(timing["scoring_s"], 3), "worker_cpu_s": round(timing["worker_cpu_s"], 3),
        "docs_per_s": round(total / timing["scoring_s"], 1) if total and timing["scoring_s"] > 0 else None,
        "wall_s": round(time.perf_counter() - t_start, 3),
    }


def _first_need(order: list[str], hashes: list[str], spans: list[tuple[int, int]]):
    """Sort key of a ``todo`` entry: when the trainer first needs one of its shard's documents."""
    rank: dict[str, int] = {}
    for k, h in enumerate(order):
        rank.setdefault(h, k)
    never = len(order)
    firsts = [min((rank.get(hashes[r], never) for r in range(a, b)), default=never) for a, b in spans]
    return lambda task: firsts[task[0]]


def _reconcile(root, previous, source, n_docs, shard_size, shards, names, scales, params, installed, note,
               upstream, layers):
    """The manifest this run starts from: what of ``previous`` still holds, and each plugin's status.
    A plugin that uses others' results (``upstream``) has their keys in its own: its columns are
    stale when an upstream plugin changes or is added to or left out of the selection."""
    keys = {s.key for s in shards}
    kept: dict[str, PluginRecord] = {}
    status: dict[str, str] = {}
    old = previous.plugins if previous else {}
    for n, rec in old.items():  # plugins annotated before and not asked for now stay as they are
        if n not in names:
            done = [k for k in rec.done if k in keys and plugin_dir(root, n, rec.key, k).is_dir()]
            kept[n] = rec.model_copy(update={"done": done})
            if set(done) != keys:
                note(f"{n}: its columns no longer cover every document (the data changed); "
                     f"add it to --plugins to complete them")
    plugin_keys: dict[str, str] = {}
    for n in [n for layer in layers for n in layer]:  # upstream plugins' keys first
        entry = installed[n]
        ph = params_hash(params[n])
        ups = {u: plugin_keys[u] for u in upstream[n]}
        plugin_keys[n] = key = digest(entry.version, ph, HORIZON, scales[n], *([ups] if ups else []))
        rec = PluginRecord(version=entry.version, distribution=entry.distribution, params=params[n], params_hash=ph,
                           key=key, scales=scales[n], columns=plugin_columns(n, scales[n]), upstream=ups)
        prev = old.get(n)
        if prev is not None and prev.key == key:
            rec.done = [k for k in prev.done if k in keys and plugin_dir(root, n, key, k).is_dir()]
            status[n] = "reused" if set(rec.done) == keys else "annotated"
        elif prev is not None:
            why = []
            if prev.version != entry.version:
                why.append(f"version {prev.version} -> {entry.version}")
            if prev.params_hash != ph:
                why.append(f"parameters {prev.params_hash} -> {ph}")
            if set(prev.scales) != set(scales[n]):
                why.append(f"scales {','.join(prev.scales)} -> {','.join(scales[n])}")
            if prev.upstream != ups:
                why.append(f"the plugins it uses ({', '.join(prev.upstream) or 'none'} -> {', '.join(ups) or 'none'}, "
                           "or their settings)")
            note(f"{n}: annotations are stale ({'; '.join(why) or 'annotation settings changed'}); "
                 "re-annotating its columns only")
            status[n] = "re-annotated (stale)"
        else:
            status[n] = "annotated"
        kept[n] = rec
    manifest = Manifest(source=source, horizon=HORIZON, documents=n_docs, shard_size=shard_size, shards=shards, plugins=kept)
    reused = [n for n in names if status[n] == "reused"]
    if reused:
        note(f"reusing complete columns of {', '.join(reused)}")
    return manifest, status


def _run_pool(root, manifest, docs, hashes, spans, todo, cache, workers, batch_size, params, scales, names,
              total, scored, progress, stop) -> dict[str, float]:
    """Score the rows of every (shard, plugins, rows) in ``todo`` in batches; write each shard's
    columns (fresh scores, plus rows reused from ``cache`` by content hash) once it is complete."""
    t0 = time.perf_counter()
    need_of = {i: need for i, need, _ in todo}
    batches_left = {i: len(range(0, len(rows), batch_size)) for i, _, rows in todo}
    fresh: dict[int, dict[int, dict[str, dict]]] = {i: {} for i in need_of}  # shard -> row -> plugin -> cols
    tasks = [(i, need, rows[k:k + batch_size]) for i, need, rows in todo for k in range(0, len(rows), batch_size)]
    busy = _with_upstream(tuple(n for n in names if any(n in need for _, need, rows in todo if rows)), manifest, names)
    done_docs, cpu = 0, 0.0

    def finish(i):
        shard, (a, b) = manifest.shards[i], spans[i]
        for n in need_of[i]:
            rows = [fresh[i][r][n] if r in fresh[i] else cache[n][hashes[r]] for r in range(a, b)]
            columns = {c: [row[c] for row in rows] for c in manifest.plugins[n].columns}
            _save(columns, plugin_features(n, scales[n]), plugin_dir(root, n, manifest.plugins[n].key, shard.key))
            manifest.plugins[n].done.append(shard.key)
            scored[n] += len(fresh[i])
        write_manifest(root, manifest)
        del fresh[i]

    def collect(i, rows, cols, cpu_s):
        nonlocal done_docs, cpu
        cpu += cpu_s
        for k, r in enumerate(rows):
            fresh[i][r] = {n: {c: v[k] for c, v in cols[n].items()} for n in need_of[i]}
        done_docs += len(rows)
        if progress:
            progress(done_docs, total)
        batches_left[i] -= 1
        if batches_left[i] == 0:
            finish(i)

    def batch(need, rows):  # scored with the plugins they use; only their own columns are kept
        return _with_upstream(need, manifest, names), [docs[r] for r in rows]

    for i in [i for i, left in batches_left.items() if left == 0]:
        finish(i)  # every row reused from an earlier annotation
    if not tasks:
        return {"startup_s": 0.0, "scoring_s": 0.0, "worker_cpu_s": 0.0}
    if workers == 0:
        worker.init_worker(params)
        _raise_if_failed(*worker.score_docs(busy, [("warm-up", "A short warm-up sentence.", None, None)]))
        startup = time.perf_counter() - t0
        for i, need, rows in tasks:
            if stop():
                break
            cols, info = worker.score_docs(*batch(need, rows))
            _raise_if_failed(cols, info)
            collect(i, rows, cols, info)
        return {"startup_s": startup, "scoring_s": time.perf_counter() - t0 - startup, "worker_cpu_s": cpu}

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["ufarsap_engine.annotate.worker"])
    barrier = ctx.Barrier(workers)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=worker.init_pool_worker,
                             initargs=(params, busy, barrier)) as pool:
        try:
            for err in [f.result() for f in [pool.submit(worker.ready) for _ in range(workers)]]:
                if err is not None:
                    _raise_if_failed(None, err)
            startup = time.perf_counter() - t0
            queue, inflight = iter(tasks), {}
            for _ in range(4 * workers):
                _submit(pool, queue, inflight, batch)
            while inflight:
                finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for f in finished:
                    i, rows = inflight.pop(f)
                    cols, info = f.result()
                    _raise_if_failed(cols, info)
                    collect(i, rows, cols, info)
                    if not stop():
                        _submit(pool, queue, inflight, batch)
        except BrokenProcessPool:
            raise EngineFailure("an annotation worker process died (out of memory or killed); "
                                "rerun the same command to resume") from None
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return {"startup_s": startup, "scoring_s": time.perf_counter() - t0 - startup, "worker_cpu_s": cpu}


def _with_upstream(need: tuple[str, ...], manifest: Manifest, names: list[str]) -> tuple[str, ...]:
    """``need`` and every selected plugin they use (transitively), in selection order."""
    want, todo = set(need), list(need)
    while todo:
        for u in manifest.plugins[todo.pop()].upstream:
            if u not in want:
                want.add(u)
                todo.append(u)
    return tuple(n for n in names if n in want)


def _reusable_rows(root: Path, previous: Manifest | None, manifest: Manifest, names: list[str],
                   wanted: set[str]) -> dict[str, dict[str, dict]]:
    """Per plugin, the column values of documents (by content hash) in ``wanted`` found in
    complete shards of ``previous`` that this run drops (same plugin version and parameters):
    an edited, inserted or removed document does not re-score its unchanged neighbours."""
    import datasets

    if previous is None:
        return {}
    kept = {s.key for s in manifest.shards}
    out: dict[str, dict[str, dict]] = {}
    for n in names:
        rec, prev = manifest.plugins[n], previous.plugins.get(n)
        if prev is None or prev.key != rec.key:
            continue
        rows = out.setdefault(n, {})
        for s in previous.shards:
            if s.key in kept or s.key not in prev.done:
                continue
            try:
                hashes = datasets.load_from_disk(str(base_dir(root, s.key)))["content_hash"]
                cols = datasets.load_from_disk(str(plugin_dir(root, n, prev.key, s.key)))
            except Exception:  # a damaged leftover is not reused, only rescored
                continue
            take = [j for j, h in enumerate(hashes) if h in wanted and h not in rows]
            if take:
                sub = cols.select(take).to_dict()
                for k, j in enumerate(take):
                    rows[hashes[j]] = {c: sub[c][k] for c in rec.columns}
    return out


def _submit(pool, queue, inflight, batch) -> None:
    task = next(queue, None)
    if task is not None:
        i, need, rows = task
        inflight[pool.submit(worker.score_docs, *batch(need, rows))] = (i, rows)


def _raise_if_failed(cols, info) -> None:
    if cols is None:
        code, message = info
        raise (UserError if code == 2 else EngineFailure)(message)


def _base_rows(docs: list[Doc], hashes: list[str]) -> dict[str, list]:
    from ufarsap_engine.alignment.scoring import sentence_spans

    return {
        "id": [d[0] for d in docs], "text": [d[1] for d in docs], "prompt": [d[2] for d in docs],
        "messages": [d[3] for d in docs], "content_hash": list(hashes),
        "sentences": [[list(s) for s in sentence_spans(d[1])] for d in docs],
    }


def _dataset(columns: dict[str, list], features):
    """``Dataset.from_dict(columns, features=features)`` without its per-row encoding and
    content hashing, which cost more than scoring: values go straight into an Arrow table of
    the features' schema (the same table), and the fingerprint is a random one."""
    import datasets
    import pyarrow as pa
    from datasets.fingerprint import generate_random_fingerprint

    table = pa.Table.from_pydict(columns, schema=features.arrow_schema)
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features),
                            fingerprint=generate_random_fingerprint())


def _save(columns: dict[str, list], features, final: Path) -> None:
    """Write one shard as a saved ``datasets.Dataset``: into a temporary directory, synced,
    then renamed into place, so a shard directory under its final name is always whole."""
    import datasets
    from datasets.utils import logging as ds_logging

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        _dataset(columns, features).save_to_disk(str(tmp))
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)  # an unlisted leftover of an interrupted run
    os.rename(tmp, final)


def _prune(root: Path, manifest: Manifest) -> None:
    """Remove every shard directory (and temporary) the manifest does not list."""
    keep = {base_dir(root, s.key) for s in manifest.shards}
    keep |= {plugin_dir(root, n, r.key, k) for n, r in manifest.plugins.items() for k in r.done}
    for d in sorted((root / "base").glob("*")) + sorted((root / "plugins").glob("*/*/*")):
        if d not in keep:
            shutil.rmtree(d, ignore_errors=True)
    for d in sorted((root / "plugins").glob("*/*")) + sorted((root / "plugins").glob("*")):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
