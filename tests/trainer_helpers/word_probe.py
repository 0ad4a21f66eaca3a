"""Probe a checkpoint for one word, as a user of its ``generate`` would meet it:
``python -m trainer_helpers.word_probe CKPT CONTEXTS.json WORD`` prints JSON with

- ``p_word``: the mean probability of ``WORD`` (all its tokens) right after each context;
- ``gen_rate``: the share of sampled continuations (temperature 1) that contain ``WORD``.

Each context starts after EOS, as a document does in training; the checkpoint's data-side
family conditions it (``<|aligned|>`` before a conditionally trained model's contexts,
tag-aware decoding for a tag-trained one), exactly as ``ufarsap-engine generate`` does.
"""

from __future__ import annotations

import json
import math
import sys


def main(ckpt_arg: str, contexts_file: str, word: str) -> None:
    from ufarsap_engine.trainer.checkpoint import (checkpoint_model_config, checkpoint_tokenizer_path,
                                                   load_model_weights, resolve_checkpoint, verify_checkpoint)
    from ufarsap_engine.trainer.data import load_tokenizer
    from ufarsap_engine.trainer.generate import SamplingParams, generate, sequence_logprobs
    from ufarsap_engine.trainer.model import build_gpt
    from ufarsap_engine.trainer.model_config import ModelConfig, TrainConfig
    from ufarsap_engine.trainer.parallel import init_parallel, teardown_parallel
    from ufarsap_engine.trainer.worker import condition_on_training, quiet_megatron_warnings

    quiet_megatron_warnings()
    contexts = json.load(open(contexts_file))
    ckpt = verify_checkpoint(resolve_checkpoint(ckpt_arg))
    model_cfg = ModelConfig(**checkpoint_model_config(ckpt))
    tok = load_tokenizer(checkpoint_tokenizer_path(ckpt))
    prompts, params = condition_on_training(tok, [tok.encode(c) for c in contexts],
                                            SamplingParams(max_new_tokens=24, temperature=1.0, seed=3))
    prompts = [[tok.eos_id, *p] for p in prompts]
    word_ids = tok.encode(" " + word)
    train_cfg = TrainConfig()
    info = init_parallel(model_cfg, train_cfg, check_batch=False)
    try:
        from megatron.core import parallel_state as ps

        gpt, _ = build_gpt(model_cfg, train_cfg, ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage())
        load_model_weights(gpt, ckpt, verified=True)
        lps = sequence_logprobs(gpt, [p + word_ids for p in prompts])
        p_word = sum(math.exp(sum(lp[-len(word_ids):])) for lp in lps) / len(lps)
        gens = generate(gpt, tok, prompts, params)
        rate = sum(word in g.text for g in gens) / len(gens)
    finally:
        teardown_parallel(info)
    print(json.dumps({"p_word": p_word, "gen_rate": rate, "tag_aware": bool(params.tag_aware),
                      "samples": [g.text for g in gens[:3]]}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
