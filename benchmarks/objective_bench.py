"""Side by side, in one process: the engine's plain MLE step vs its unified-objective step,
with the plugins' scores read from an annotation (``annotated``, what a run does) and, with
``--live``, scored inside the step as before annotations existed (``live``).

Same model preset, same initial weights (same seed), same batches (same data order), same
optimizer; the only difference is the objective: ``MLEObjective`` vs the ``UnifiedObjective``
with the benchmark's plugin set (the alignment runtime's per-step callback included, as in a
run). The annotation is made once, before timing (its time is printed apart). Prints
steady-state tokens/s of each and the ratios to MLE, plus the share of each step spent in
``objective.prepare`` (reading or scoring the batch's documents, building the weights).

    python benchmarks/objective_bench.py                         # tiny preset
    python benchmarks/objective_bench.py --preset small --rounds 3 --json
    python benchmarks/objective_bench.py --plugins safety.toxicity,safety.privacy --live

CPU timings on a shared machine are noisy: the two objectives alternate in blocks of
``--block`` steps (``--rounds`` times), so that background load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH_PLUGINS = "safety.toxicity,safety.privacy,safety.misinformation,safety.bias,self.reward,reflect.crossparadigm,multi.consensus"


class _Timed:
    """Wraps an objective; accumulates seconds spent in ``prepare``."""

    def __init__(self, inner):
        self.inner = inner
        self.prepare_s = 0.0

    def prepare(self, mb):
        t0 = time.perf_counter()
        try:
            return self.inner.prepare(mb)
        finally:
            self.prepare_s += time.perf_counter() - t0

    def __getattr__(self, name):
        return getattr(self.inner, name)


def build(kind: str, args, out: Path):
    from ufarsap_engine.config import RunConfig
    from ufarsap_engine.trainer.data import DataSpec
    from ufarsap_engine.trainer.model_config import TrainConfig, model_preset
    from ufarsap_engine.trainer.parallel import init_parallel
    from ufarsap_engine.trainer.worker import build_state, quiet_megatron_warnings

    quiet_megatron_warnings()
    model_cfg = model_preset(args.preset)
    train_cfg = TrainConfig(steps=10**6, seed=args.seed, device=args.device, out_dir=str(out / kind), resume=False,
                            progress=False, global_batch_size=args.global_batch, micro_batch_size=args.micro_batch)
    tok = str(out / "tokenizer.json") if (out / "tokenizer.json").exists() else None
    data_spec = DataSpec(path=str(out / "corpus.jsonl"), tokenizer=tok)
    runtime = None
    if kind == "mle":
        from ufarsap_engine.trainer.objective import MLEObjective

        objective = MLEObjective()
    else:
        from ufarsap_engine.alignment.runtime import AlignmentRuntime

        plugins = [p for p in args.plugins.split(",") if p]
        rc = RunConfig(plugins=plugins, steps=10**6, seed=args.seed, out=str(out / kind), round_steps=10**6,
                       window_steps=10)
        annotations = {"dir": str(out / "annotation"), "plugins": plugins, "annotate": False} \
            if kind == "annotated" else None
        runtime = AlignmentRuntime(run_config=rc.model_dump(mode="json"), plugins=plugins, plugin_params={}, probe=[],
                                   annotations=annotations)
        objective = runtime.objective
    timed = _Timed(objective)
    info = init_parallel(model_cfg, train_cfg)
    state = build_state(model_cfg, train_cfg, data_spec, timed, [runtime] if runtime else [], info)
    if not (out / "tokenizer.json").exists():
        state.data.ds.tokenizer.save(out / "tokenizer.json")
    return state, timed, runtime, info, model_cfg


def measure(args) -> dict:
    from ufarsap_engine.trainer.loop import train_step
    from ufarsap_engine.trainer.parallel import teardown_parallel

    from ufarsap_engine.annotate import annotate
    from ufarsap_engine.trainer.data import default_corpus_path

    out = Path(tempfile.mkdtemp(prefix="objective_bench_"))
    lines = default_corpus_path().read_text(encoding="utf-8").splitlines()
    (out / "corpus.jsonl").write_text("\n".join(lines[: args.documents or None]) + "\n", encoding="utf-8")
    plugins = [p for p in args.plugins.split(",") if p]
    t0 = time.perf_counter()
    ann = annotate(out / "annotation", plugins, data=str(out / "corpus.jsonl"), workers=args.workers,
                   note=lambda line: None)
    annotate_s = time.perf_counter() - t0
    kinds = ("mle", "annotated", "live") if args.live else ("mle", "annotated")
    res = {}
    # build each once (weights, optimizer, data stream), then alternate blocks of steps
    for kind in kinds:
        state, timed, runtime, info, model_cfg = build(kind, args, out)
        if runtime is not None:
            runtime.on_train_start(state)  # hands the objective its annotation (annotated)
        teardown_parallel(info)
        res[kind] = {"state": state, "timed": timed, "runtime": runtime, "times": [], "prepare": [],
                     "model_cfg": model_cfg}
    tokens = args.global_batch * res["mle"]["model_cfg"].seq_length
    for r in range(args.rounds + 1):  # round 0 = warm-up
        for kind in kinds:
            d = res[kind]
            from ufarsap_engine.trainer.parallel import init_parallel

            info = init_parallel(d["model_cfg"], d["state"].train_cfg)
            try:
                for _ in range(args.block if r else args.warmup):
                    d["timed"].prepare_s = 0.0
                    t0 = time.perf_counter()
                    m = train_step(d["state"])
                    if d["runtime"] is not None:
                        d["runtime"].on_step_end(d["state"].step, dict(m))
                    dt = time.perf_counter() - t0
                    if r:
                        d["times"].append(dt)
                        d["prepare"].append(d["timed"].prepare_s)
            finally:
                teardown_parallel(info)
    out_res = {"preset": args.preset, "device": args.device, "plugins": plugins, "documents": ann["documents"],
               "annotate_s": round(annotate_s, 2), "annotate_docs_per_s": ann["docs_per_s"],
               "global_batch": args.global_batch, "tokens_per_step": tokens, "timed_steps": args.rounds * args.block,
               "load_average": os.getloadavg()}
    for kind in kinds:
        t = res[kind]["times"]
        med = statistics.median(t)
        out_res[kind] = {"median_step_s": med, "mean_step_s": statistics.mean(t), "tokens_per_s": tokens / med,
                         "prepare_share": statistics.mean(res[kind]["prepare"]) / statistics.mean(t)}
    for kind in kinds[1:]:
        out_res[f"step_time_ratio_{kind}_over_mle"] = out_res[kind]["median_step_s"] / out_res["mle"]["median_step_s"]
    return out_res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--plugins", default=BENCH_PLUGINS)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--documents", type=int, default=0, help="first N corpus documents (0: all)")
    ap.add_argument("--workers", type=int, default=2, help="annotation worker processes")
    ap.add_argument("--live", action="store_true", help="also time scoring inside the step (slow)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = measure(args)
    if args.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"model preset {r['preset']} on {r['device']}, {r['tokens_per_step']} tokens/step, "
          f"{r['timed_steps']} timed steps each (alternating blocks), load average {r['load_average'][0]:.1f}")
    print(f"plugins (unified): {', '.join(r['plugins'])}; annotation of {r['documents']} documents "
          f"took {r['annotate_s']:.1f} s ({r['annotate_docs_per_s']} docs/s), before timing")
    for kind in [k for k in ("mle", "annotated", "live") if k in r]:
        d = r[kind]
        ratio = f"  {r[f'step_time_ratio_{kind}_over_mle']:.2f}x MLE step" if kind != "mle" else ""
        print(f"  {kind:<9} median step {d['median_step_s'] * 1000:8.1f} ms  {d['tokens_per_s']:9.0f} tokens/s{ratio}"
              + (f"  ({d['prepare_share'] * 100:.0f}% in objective.prepare)" if kind != "mle" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
