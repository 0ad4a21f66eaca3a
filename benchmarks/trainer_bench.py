"""Trainer throughput: the engine's Megatron MLE step next to a plain PyTorch + transformers loop.

The engine is timed with each core-attention backend (``sdpa``, the default, and Megatron's
``local``); all train the same Llama-shaped model (random init, fp32 on CPU / bf16 on CUDA) on the same
token blocks (the engine's data pipeline over the embedded corpus, or a synthetic corpus), with
AdamW and grad clipping, and report steady-state tokens/s (after warm-up steps). On CPU the
plain loop is also timed with the engine's CPU shim active, to show what the shim costs.
On CUDA it also reports MFU (model FLOPs utilisation, 6*N + attention FLOPs per token).

    python benchmarks/trainer_bench.py                      # tiny and small presets
    python benchmarks/trainer_bench.py --preset small --steps 20 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "V100": 125.0}


def flops_per_token(cfg) -> float:
    """Training FLOPs per token: 6 * params (matmuls) + 12 * layers * hidden * seq (attention)."""
    return 6.0 * cfg.num_parameters() + 12.0 * cfg.num_layers * cfg.hidden_size * cfg.seq_length


def peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, tf in PEAK_TFLOPS.items():
        if key in name:
            return tf * 1e12
    return None


def corpus_path(tmp: Path) -> str:
    from ufarsap_engine.trainer.data import default_corpus_path

    if default_corpus_path().exists():
        return str(default_corpus_path())
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from trainer_helpers.corpus import write_jsonl

    return str(write_jsonl(tmp / "corpus.jsonl", 2000))


def make_batches(model_cfg, data_path, gbs, mbs, n_steps, seed, tmp):
    from ufarsap_engine.trainer.data import DataSpec, StepBatches, prepare_data

    ds = prepare_data(DataSpec(path=data_path), model_cfg.vocab_size, model_cfg.seq_length, tmp / "tok")
    sb = StepBatches(ds, seed, gbs, mbs, 1, 0)
    return ds, [sb.next_step() for _ in range(n_steps)]


class HFLoop:
    """Plain loop: LlamaForCausalLM, AdamW, clip 1.0, microbatch grad accumulation."""

    def __init__(self, model_cfg, device, bf16, lr):
        import transformers

        from ufarsap_engine.trainer.hf_interop import hf_config_from_model

        torch.manual_seed(0)
        self.device = device
        self.model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_config_from_model(model_cfg))).to(device)
        if bf16:
            self.model = self.model.to(torch.bfloat16)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)

    def step(self, mbs) -> tuple[float, float]:
        dev = self.device
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        total = sum(float(mb.loss_mask.sum()) for mb in mbs)
        loss_sum = 0.0
        for mb in mbs:
            logits = self.model(input_ids=mb.tokens.to(dev)).logits.float()
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), mb.labels.to(dev).reshape(-1), reduction="none"
            )
            loss = (ce * mb.loss_mask.to(dev).reshape(-1)).sum() / total
            loss.backward()
            loss_sum += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, loss_sum


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def run_preset(preset: str, steps: int, warmup: int, gbs: int, mbs: int, device: str, tmp: Path,
               stat: str = "median") -> dict:
    """Engine step and plain-loop step interleaved on the same batches (so machine load hits
    both alike); the median (or, on a shared machine, the fastest) step time after warm-up is
    reported."""
    from ufarsap_engine.trainer.cpu_compat import suspended
    from ufarsap_engine.trainer.data import DataSpec
    from ufarsap_engine.trainer.loop import train_step
    from ufarsap_engine.trainer.model_config import TrainConfig, model_preset
    from ufarsap_engine.trainer.parallel import init_parallel, seed_everything, teardown_parallel
    from ufarsap_engine.trainer.worker import build_state, quiet_megatron_warnings

    quiet_megatron_warnings()
    model_cfg = model_preset(preset)
    bf16 = device == "cuda"
    data_path = corpus_path(tmp)
    _, batches = make_batches(model_cfg, data_path, gbs, mbs, steps, 1234, tmp)
    lr = 1e-3
    tcfg = TrainConfig(steps=steps, micro_batch_size=mbs, global_batch_size=gbs, lr=lr, min_lr=lr, lr_schedule="constant",
                       device=device, bf16=bf16, out_dir=str(tmp / "engine"), save_final=False, progress=False, resume=False)
    info = init_parallel(model_cfg, tcfg)
    t = {"engine": [], "engine_local": [], "hf": [], "hf_shim": []}
    loss = {"engine": [], "engine_local": [], "hf": []}
    try:
        states = {}
        for key, backend in (("engine", "sdpa"), ("engine_local", "local")):
            seed_everything(tcfg.seed, device)  # same initial weights for both backends
            cfg = model_cfg.model_copy(update={"attention_backend": backend})
            st = build_state(cfg, tcfg.model_copy(update={"out_dir": str(tmp / key)}),
                             DataSpec(path=data_path, tokenizer=str(tmp / "tok" / "tokenizer.json")), info=info)
            it = iter(batches)
            st.data.next_step = lambda it=it: next(it)  # the very same blocks as the plain loop
            states[key] = st
        with suspended():
            hf = HFLoop(model_cfg, device, bf16, lr)
        for mb in batches:
            for key, st in states.items():
                m = train_step(st)
                t[key].append(m["step_time_s"])
                loss[key].append(m["loss"])
            with suspended():
                dt, lo = hf.step(mb)
            t["hf"].append(dt)
            loss["hf"].append(lo)
            if device == "cpu":  # the plain loop again, with the engine's CPU shim active
                t["hf_shim"].append(hf.step(mb)[0])
    finally:
        teardown_parallel(info)
    tokens = gbs * model_cfg.seq_length
    pick = min if stat == "min" else _median
    tps = {k: tokens / pick(v[warmup:] or v) for k, v in t.items() if v}
    res = {"preset": preset, "params": model_cfg.num_parameters(), "seq_length": model_cfg.seq_length,
           "global_batch": gbs, "micro_batch": mbs, "device": device, "threads": torch.get_num_threads(),
           "tokens_per_s": tps, "ratio_engine_over_hf": tps["engine"] / tps["hf"],
           "ratio_engine_local_over_hf": tps["engine_local"] / tps["hf"],
           "first_loss": {k: v[0] for k, v in loss.items()}, "last_loss": {k: v[-1] for k, v in loss.items()}}
    peak = peak_flops()
    if peak:
        fpt = flops_per_token(model_cfg)
        res["mfu"] = {k: v * fpt / peak for k, v in tps.items()}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", action="append", help="tiny, small, 125m, 1b (repeatable; default tiny+small on CPU)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="step time reported: median, or min (fastest step; steadier when other jobs share the CPU)")
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    presets = args.preset or (["tiny", "small"] if args.device == "cpu" else ["125m", "1b"])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = []
    with tempfile.TemporaryDirectory() as td:
        for p in presets:
            results.append(run_preset(p, args.steps, args.warmup, args.global_batch, args.micro_batch, args.device, Path(td) / p,
                                      args.stat))
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"{'preset':<7} {'params':>10} {'sdpa tok/s':>11} {'local tok/s':>12} {'HF tok/s':>9} "
          f"{'sdpa/HF':>8} {'local/HF':>9}  notes")
    for r in results:
        tps, notes = r["tokens_per_s"], []
        if "hf_shim" in tps:
            notes.append(f"HF loop under the engine's CPU shim: {tps['hf_shim']:.0f} tok/s")
        if "mfu" in r:
            notes.append(f"MFU sdpa {r['mfu']['engine']:.1%} / local {r['mfu']['engine_local']:.1%} / HF {r['mfu']['hf']:.1%}")
        notes.append(f"loss {r['first_loss']['engine']:.2f}->{r['last_loss']['engine']:.2f} "
                     f"(local {r['first_loss']['engine_local']:.2f}->{r['last_loss']['engine_local']:.2f}, HF {r['first_loss']['hf']:.2f}->{r['last_loss']['hf']:.2f})")
        print(f"{r['preset']:<7} {r['params']:>10,} {tps['engine']:>11.0f} {tps['engine_local']:>12.0f} {tps['hf']:>9.0f} "
              f"{r['ratio_engine_over_hf']:>8.2f} {r['ratio_engine_local_over_hf']:>9.2f}  {'; '.join(notes)}")
    print(f"(device {results[0]['device']}, {results[0]['threads']} threads, global batch {args.global_batch}, "
          f"{args.stat} step after {args.warmup} warm-up steps of {args.steps}; steps interleaved)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
