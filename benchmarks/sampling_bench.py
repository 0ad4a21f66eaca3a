"""Sampling throughput: the engine's KV-cached ``generate`` next to its full-recompute path and
to ``transformers``' ``generate`` on the same architecture, size and weights.

One process, world size 1, random-init weights copied into ``LlamaForCausalLM`` (so the HF
model computes the same function). Every method samples the same prompts (batch B, prompt
length P, N new tokens, no early stop) and is timed over ``--repeat`` runs after a warm-up;
the figure is new tokens per second, ``min`` (default) or ``median`` over repeats. Before the
timing it checks that greedy decoding gives the same tokens on all three paths, so the speed
is for the same output.

    python benchmarks/sampling_bench.py                       # tiny and small, B=32, N=64
    python benchmarks/sampling_bench.py --preset small --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


class _Ids:
    """Prompts are token ids already: the tokenizer is only asked to decode."""

    eos_id = None

    def encode(self, text):  # pragma: no cover - prompts are ids
        raise TypeError("token-id prompts only")

    def decode(self, ids):
        return " ".join(map(str, ids))


def _prompts(vocab: int, batch: int, length: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (batch, length), generator=g).tolist()


def _timed(fn, repeat: int, stat: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) if stat == "min" else statistics.median(times)


def run_preset(preset: str, batch: int, prompt_len: int, new_tokens: int, repeat: int, stat: str, tmp: Path) -> dict:
    import transformers

    from ufarsap_engine.trainer.generate import SamplingParams, generate
    from ufarsap_engine.trainer.hf_interop import _world1, hf_config_from_model, megatron_to_hf_state
    from ufarsap_engine.trainer.model import build_gpt
    from ufarsap_engine.trainer.model_config import PRESETS, ModelConfig, TrainConfig
    from ufarsap_engine.trainer.parallel import teardown_parallel

    cfg = ModelConfig(**PRESETS[preset])
    if prompt_len + new_tokens > cfg.seq_length:
        raise SystemExit(f"prompt length + new tokens ({prompt_len + new_tokens}) exceed {preset}'s seq_length {cfg.seq_length}")
    torch.manual_seed(0)
    info = _world1(cfg, tmp / preset)
    try:
        gpt, _ = build_gpt(cfg, TrainConfig(), True, True)
        gpt.eval()
        sd = {k: v.detach() for k, v in gpt.state_dict().items() if not k.endswith("_extra_state")}
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_config_from_model(cfg)))
        hf.load_state_dict(megatron_to_hf_state(sd, cfg))
        hf.eval()
        tok = _Ids()
        prompts = _prompts(cfg.vocab_size, batch, prompt_len, seed=1)
        ids = torch.tensor(prompts)

        def engine(kv: bool, greedy: bool = False):
            p = SamplingParams(max_new_tokens=new_tokens, temperature=0.0 if greedy else 1.0, stop_at_eos=False, kv_cache=kv)
            return generate(gpt, tok, prompts, p, max_context=cfg.seq_length)

        def hf_gen(greedy: bool = False):
            with torch.no_grad():
                return hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                   do_sample=not greedy, top_k=0, pad_token_id=0, use_cache=True)

        # Same output first: greedy tokens on the three paths.
        cached = [g.token_ids for g in engine(True, greedy=True)]
        full = [g.token_ids for g in engine(False, greedy=True)]
        hf_tokens = hf_gen(greedy=True)[:, prompt_len:].tolist()
        agree = {"cached_vs_full": _share_equal(cached, full), "cached_vs_hf": _share_equal(cached, hf_tokens)}

        t = {
            "kv_cache": _timed(lambda: engine(True), repeat, stat),
            "full_recompute": _timed(lambda: engine(False), repeat, stat),
            "transformers": _timed(hf_gen, repeat, stat),
        }
    finally:
        teardown_parallel(info)
    tps = {k: batch * new_tokens / v for k, v in t.items()}
    return {
        "preset": preset, "params": cfg.num_parameters(), "batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
        "threads": torch.get_num_threads(), "stat": stat, "tokens_per_s": tps,
        "ratio_kv_over_full": tps["kv_cache"] / tps["full_recompute"],
        "ratio_kv_over_transformers": tps["kv_cache"] / tps["transformers"],
        "greedy_sequences_equal": agree,
    }


def _share_equal(a: list[list[int]], b: list[list[int]]) -> float:
    """Share of sequences whose greedy tokens are identical (float ties can flip a rare one)."""
    return sum(x == y for x, y in zip(a, b)) / max(len(a), 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", choices=["tiny", "small", "125m"], help="model size (repeatable; default tiny and small)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stat", choices=["min", "median"], default="min")
    ap.add_argument("--json", action="store_true", help="one JSON object per preset instead of the table")
    a = ap.parse_args(argv)
    from ufarsap_engine.trainer.worker import quiet_megatron_warnings

    quiet_megatron_warnings()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in a.preset or ["tiny", "small"]:
            rows.append(run_preset(preset, a.batch, a.prompt_len, a.new_tokens, a.repeat, a.stat, Path(tmp)))
    if a.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(f"new tokens/s, batch {a.batch}, prompt {a.prompt_len}, {a.new_tokens} new tokens, {torch.get_num_threads()} threads, {a.stat} of {a.repeat}")
    print(f"{'preset':<7} {'params':>10} {'kv_cache':>9} {'full':>8} {'HF':>8} {'kv/full':>8} {'kv/HF':>6}  greedy equal (kv=full, kv=HF)")
    for r in rows:
        tps, eq = r["tokens_per_s"], r["greedy_sequences_equal"]
        print(f"{r['preset']:<7} {r['params']:>10,} {tps['kv_cache']:>9.0f} {tps['full_recompute']:>8.0f} {tps['transformers']:>8.0f} "
              f"{r['ratio_kv_over_full']:>8.2f} {r['ratio_kv_over_transformers']:>6.2f}  {eq['cached_vs_full']:.0%}, {eq['cached_vs_hf']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
