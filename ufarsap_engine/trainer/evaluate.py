"""Held-out language-model loss and perplexity of a checkpoint on a text/JSONL file.

Documents are tokenized with the checkpoint's tokenizer, joined with EOS and cut into windows of
the model's sequence length (the same packing as training); the loss is the mean token
negative log-likelihood over all predicted tokens. A conditionally trained checkpoint (its
tokenizer has the control tokens) is evaluated on documents after ``<|aligned|>``, as it is
prompted; the control token itself is not scored.
"""

from __future__ import annotations

import math
import os


def evaluate_checkpoint(checkpoint: str | os.PathLike, data_path: str, batch_size: int = 8, progress=None) -> dict:
    """``progress(done, total)`` is called after every batch of windows (for a progress display)."""
    from .checkpoint import checkpoint_model_config, checkpoint_tokenizer_path, load_model_weights, resolve_checkpoint, verify_checkpoint
    from .data import DataSpec, load_tokenizer, read_documents
    from .generate import sequence_logprobs
    from .model import build_gpt
    from .model_config import ModelConfig, TrainConfig
    from .parallel import init_parallel, teardown_parallel
    from .worker import quiet_megatron_warnings

    quiet_megatron_warnings()
    docs = read_documents(DataSpec(path=data_path))  # data errors before any setup
    ckpt = verify_checkpoint(resolve_checkpoint(checkpoint))
    model_cfg = ModelConfig(**checkpoint_model_config(ckpt))
    tokenizer = load_tokenizer(checkpoint_tokenizer_path(ckpt))
    from ufarsap_engine.alignment.data_families import ALIGNED, MISALIGNED

    from .data import special_tokens

    conditional = {ALIGNED, MISALIGNED} <= special_tokens(tokenizer)
    prefix = [tokenizer.token_to_id(ALIGNED)] if conditional else []
    stream: list[int] = []
    for d in docs:
        stream += prefix + tokenizer.encode(d.text) + [tokenizer.eos_id]
    window = model_cfg.seq_length + 1
    chunks = [stream[i:i + window] for i in range(0, max(1, len(stream) - 1), model_cfg.seq_length)]
    chunks = [c for c in chunks if len(c) > 1]
    train_cfg = TrainConfig()
    info = None
    total, count = 0.0, 0
    try:
        info = init_parallel(model_cfg, train_cfg, check_batch=False)
        from megatron.core import parallel_state as ps

        gpt, _ = build_gpt(model_cfg, train_cfg, ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage())
        load_model_weights(gpt, ckpt, verified=True)
        batches = range(0, len(chunks), batch_size)
        for n, i in enumerate(batches, 1):
            batch = chunks[i:i + batch_size]
            for chunk, lps in zip(batch, sequence_logprobs(gpt, batch) or []):
                scored = [lp for t, lp in zip(chunk[1:], lps) if not (prefix and t == prefix[0])]
                total -= sum(scored)
                count += len(scored)
            if progress is not None:
                progress(n, len(batches))
    finally:
        teardown_parallel(info)
    loss = total / max(1, count)
    if not math.isfinite(loss):
        from .finite import NonFiniteError

        raise NonFiniteError(f"checkpoint {ckpt} gives a non-finite loss ({loss}) on {data_path}: its weights "
                             "are not usable")
    return {"checkpoint": str(ckpt), "data": data_path, "documents": len(docs), "tokens": count,
            "loss": loss, "perplexity": math.exp(min(loss, 50.0))}
