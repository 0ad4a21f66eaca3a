"""Sampling from the Megatron model under any TP/PP layout, with a KV cache.

The cached path (default) keeps keys and values in Megatron-Core's own
``StaticInferenceContext``: the model's attention layers write and read the cache, so the same
code runs under tensor and pipeline parallelism (Megatron's forward-only schedule passes the
one-token hidden states between stages). Prompts of different lengths share a batch the way
Megatron's static text generation does: the first ``min(prompt lengths)`` positions are encoded
in one prefill pass, then every sequence advances one position per step, taking its own prompt
token while it still has one and a sampled token after that. A step thus costs one token's
forward pass instead of the whole sequence's.

The full-recompute path (``kv_cache=False``) runs the whole sequence each step, as training
does, with right padding (attention is causal, so padding after a sequence's last token cannot
change that token's logits). It is used for tag-aware decoding (its look-ahead pass scores
candidates with whole sequences) and when prompt plus new tokens exceed ``max_context``
(a sliding window, which a cache of absolute positions cannot give).

Sampling draws one uniform number per (sequence, new-token index) up front and inverts the
filtered distribution's CDF with it, so a sequence's tokens do not depend on which path ran or on
which other sequences share its batch.

Every rank must call :func:`generate` with the same arguments (it is collective). Logits are
gathered over TP (``runtime_gather_output``) on the last pipeline stage; the next tokens are
drawn there from a generator seeded identically on every rank and broadcast over the pipeline
group, so all ranks agree on every token. ``logprobs`` are log-probabilities under the model's
raw distribution (before temperature / top-k / top-p).

Tag-aware decoding (``SamplingParams.tag_aware``, for a checkpoint trained with harmfulness tags,
Maini et al. 2025): the tag token is never emitted; each step looks one token ahead for the
``tag_top_k`` most likely candidates (one extra batched forward pass), scales each candidate's
probability by ``1 - p(tag | context + candidate)`` and drops candidates whose tag probability is
above ``tag_threshold`` (keeping the least tag-prone one if all are), so decoding steers away from
continuations after which the model expects flagged content. Sampling is then among those candidates.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from . import cpu_compat


@dataclass
class SamplingParams:
    max_new_tokens: int = 32
    temperature: float = 1.0  # 0 -> greedy
    top_k: int = 0  # 0 -> off
    top_p: float = 1.0  # 1 -> off
    stop_token_ids: list[int] = field(default_factory=list)
    stop_at_eos: bool = True
    seed: int = 0
    tag_aware: bool | None = None  # None: on when the checkpoint was trained with harmfulness tags
    tag_token_id: int | None = None  # the tag token (set from the checkpoint's tokenizer)
    tag_top_k: int = 8
    tag_threshold: float = 0.5
    kv_cache: bool = True  # False: recompute the whole sequence every step (training's forward)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_k == 1


@dataclass
class Generation:
    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str  # "stop" or "length"


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then nucleus (top-p) filtering of ``[b, V]`` logits (masked entries = -inf)."""
    if top_k and top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        cum = probs.cumsum(dim=-1)
        drop = cum - probs > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return logits


def _pick(logits: torch.Tensor, params: SamplingParams, u: torch.Tensor) -> torch.Tensor:
    """Next tokens for ``[b, V]`` logits: argmax when greedy, else the filtered distribution's
    inverse CDF at the uniforms ``u`` (``[b]`` in [0, 1))."""
    if params.greedy:
        return logits.argmax(dim=-1)
    scaled = filter_logits(logits / params.temperature, params.top_k, params.top_p)
    cdf = torch.softmax(scaled.double(), dim=-1).cumsum(dim=-1)
    x = (u.to(cdf.device, torch.float64) * cdf[:, -1]).unsqueeze(-1)
    # right=True: the first token whose cumulative mass exceeds x, so a zero-probability token
    # (filtered out) is never picked.
    idx = torch.searchsorted(cdf, x, right=True).squeeze(-1)
    return idx.clamp_(max=logits.shape[-1] - 1)


def _forward_only(model, tokens: torch.Tensor, forward):
    """One forward-only microbatch through Megatron's schedule, which passes activations between
    pipeline stages: ``forward(model, tokens)``'s output on the last stage, None elsewhere."""
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel.schedules import get_forward_backward_func

    b, s = tokens.shape

    def step(data_iterator, m):
        return forward(m, next(data_iterator)), lambda o, non_loss_data=True: o

    store = get_forward_backward_func()(
        forward_step_func=step,
        data_iterator=iter([tokens]),
        model=[model],
        num_microbatches=1,
        seq_length=s,
        micro_batch_size=b,
        forward_only=True,
        collect_non_loss_data=True,
    )
    return store[0] if ps.is_pipeline_last_stage() else None


@torch.no_grad()
def forward_logits(model, tokens: torch.Tensor) -> torch.Tensor | None:
    """Full-vocabulary logits ``[b, s, V]`` on the last pipeline stage (None elsewhere)."""
    b, s = tokens.shape
    pos = torch.arange(s, device=tokens.device).unsqueeze(0).expand(b, s)
    out = _forward_only(model, tokens, lambda m, t: m(t, pos, None, runtime_gather_output=True))
    return None if out is None else out.float()


def _broadcast_from_last_stage(t: torch.Tensor) -> torch.Tensor:
    from megatron.core import parallel_state as ps

    if ps.get_pipeline_model_parallel_world_size() > 1:
        dist.broadcast(t, src=ps.get_pipeline_model_parallel_last_rank(), group=ps.get_pipeline_model_parallel_group())
    return t


def _lookahead_tokens(ctx: list[list[int]], cand: torch.Tensor, max_context: int, dev) -> tuple[torch.Tensor, list[int]]:
    """``[n * k, width]`` right-padded sequences context + candidate, and each one's last position."""
    seqs = [c[-(max_context - 1):] + [int(t)] if max_context > 1 else [int(t)] for c, row in zip(ctx, cand) for t in row]
    width = max(len(x) for x in seqs)
    tokens = torch.zeros(len(seqs), width, dtype=torch.long, device=dev)
    for j, x in enumerate(seqs):
        tokens[j, : len(x)] = torch.tensor(x, dtype=torch.long)
    return tokens, [len(x) - 1 for x in seqs]


def steer_from_tag(last: torch.Tensor, cand: torch.Tensor, p_tag: torch.Tensor, threshold: float) -> torch.Tensor:
    """Logits ``[n, V]`` restricted to the candidates ``[n, k]``: each scaled by ``1 - p_tag``
    (``[n, k]``, the tag's probability after it), those above ``threshold`` dropped unless all are
    (then the least tag-prone one stays)."""
    chosen = last.gather(-1, cand) + torch.log1p(-p_tag.clamp(max=1.0 - 1e-6))
    over = p_tag > threshold
    keep_min = over.all(-1, keepdim=True) & (p_tag == p_tag.min(-1, keepdim=True).values)
    chosen = chosen.masked_fill(over & ~keep_min, float("-inf"))
    return torch.full_like(last, float("-inf")).scatter(-1, cand, chosen)


@dataclass
class _Decoding:
    """What both decoding paths share: the prompts, stop set, uniforms and the outputs so far."""

    prompt_ids: list[list[int]]
    params: SamplingParams
    stops: set[int]
    uniforms: torch.Tensor  # [n, max_new_tokens]
    out_ids: list[list[int]]
    out_lp: list[list[float]]
    done: list[bool]
    reason: list[str]

    def emit(self, i: int, tok: int, lp: float) -> None:
        self.out_ids[i].append(tok)
        self.out_lp[i].append(lp)
        if tok in self.stops:
            self.done[i], self.reason[i] = True, "stop"
        elif len(self.out_ids[i]) >= self.params.max_new_tokens:
            self.done[i] = True


def _sample_rows(last: torch.Tensor | None, steered: torch.Tensor | None, u: torch.Tensor, params: SamplingParams, n: int, dev):
    """Pick on the last stage, broadcast to every stage: (tokens [n], raw log-probs [n])."""
    picked = torch.zeros(n, dtype=torch.long, device=dev)
    lps = torch.zeros(n, dtype=torch.float32, device=dev)
    if last is not None:
        picked = _pick(steered, params, u)
        lps = torch.log_softmax(last, dim=-1).gather(-1, picked.unsqueeze(-1)).squeeze(-1)
    return _broadcast_from_last_stage(picked), _broadcast_from_last_stage(lps)


def _decode_full(model, d: _Decoding, max_context: int, tag: int | None, dev) -> None:
    """Every step runs the whole (windowed) sequence: training's forward, no cache."""
    params = d.params
    seqs = [list(p) for p in d.prompt_ids]
    for step in range(params.max_new_tokens):
        active = [i for i in range(len(seqs)) if not d.done[i]]
        if not active:
            break
        ctx = [seqs[i][-max_context:] for i in active]
        width = max(len(c) for c in ctx)
        tokens = torch.zeros(len(ctx), width, dtype=torch.long, device=dev)
        for j, c in enumerate(ctx):
            tokens[j, : len(c)] = torch.tensor(c, dtype=torch.long)
        logits = forward_logits(model, tokens)
        last = None
        if logits is not None:
            last = torch.stack([logits[j, len(c) - 1] for j, c in enumerate(ctx)])
        steered = last
        if tag is not None:  # collective: every rank runs the look-ahead pass
            cand = torch.zeros(len(ctx), params.tag_top_k, dtype=torch.long, device=dev)
            if last is not None:
                cand = last.index_fill(-1, torch.tensor([tag], device=dev), float("-inf")).topk(params.tag_top_k).indices
            cand = _broadcast_from_last_stage(cand)
            look, pos = _lookahead_tokens(ctx, cand, max_context, dev)
            ahead = forward_logits(model, look)
            if last is not None:
                rows = torch.arange(look.shape[0], device=dev)
                p_tag = torch.softmax(ahead[rows, torch.tensor(pos, device=dev)], dim=-1)[:, tag].view_as(cand)
                steered = steer_from_tag(last, cand, p_tag, params.tag_threshold)
        picked, lps = _sample_rows(last, steered, d.uniforms[active, step], params, len(active), dev)
        for i, tok, lp in zip(active, picked.tolist(), lps.tolist()):
            seqs[i].append(tok)
            d.emit(i, tok, lp)


@torch.no_grad()
def _cached_last_logits(model, tokens: torch.Tensor, ctx, start: int) -> torch.Tensor | None:
    """Last-position logits ``[b, V]`` of ``tokens`` (positions ``start..``), through the KV cache
    in ``ctx``; None off the last pipeline stage. Collective."""
    from megatron.core import parallel_state as ps

    b, s = tokens.shape
    pos = torch.arange(start, start + s, device=tokens.device).unsqueeze(0).expand(b, s)
    if ps.get_pipeline_model_parallel_world_size() == 1:
        # One stage: nothing to pass between stages, so the schedule (a few ms per call at small
        # sizes) is skipped; `_decode_cached` has suspended the CPU shim for the whole decode.
        out = model(tokens, pos, None, inference_context=ctx, runtime_gather_output=True)
        ctx.sequence_len_offset += s
        return out[:, -1].float()

    def cached_forward(m, t):
        # The model's cached forward makes no CUDA device request (the cache is allocated through
        # the patched current_device), so the CPU layer's per-op function-mode shim, about half
        # of a decode step at small sizes, is left out of it (the schedule around keeps it).
        with cpu_compat.suspended():
            return m(t, pos, None, inference_context=ctx, runtime_gather_output=True)

    out = _forward_only(model, tokens, cached_forward)
    ctx.sequence_len_offset += s
    return None if out is None else out[:, -1].float()


def _decode_cached(model, d: _Decoding, dev) -> None:
    """Prefill the shortest prompt's length, then one position per step through the cache."""
    from megatron.core import parallel_state as ps

    # Without pipeline stages the decode never enters Megatron's schedule, the one part that asks
    # for CUDA devices: the CPU layer's per-op shim can stay out of the whole decode.
    with cpu_compat.suspended() if ps.get_pipeline_model_parallel_world_size() == 1 else contextlib.nullcontext():
        _decode_cached_steps(model, d, dev)


def _decode_cached_steps(model, d: _Decoding, dev) -> None:
    from megatron.core.inference.contexts import StaticInferenceContext

    lens = [len(p) for p in d.prompt_ids]
    n, first = len(lens), min(lens)
    total = max(lens) + d.params.max_new_tokens
    tokens = torch.zeros(n, total, dtype=torch.long, device=dev)
    for i, p in enumerate(d.prompt_ids):
        tokens[i, : len(p)] = torch.tensor(p, dtype=torch.long)
    ctx = StaticInferenceContext(max_batch_size=n, max_sequence_length=total)
    last = _cached_last_logits(model, tokens[:, :first], ctx, 0)
    ctx.enable_decode_mode()
    for t in range(first, total):  # choose the token at position t, then encode it
        gen = [i for i in range(n) if t >= lens[i] and not d.done[i]]
        idx = torch.tensor(gen, dtype=torch.long, device=dev)
        rows = None if last is None else last.index_select(0, idx)
        u = d.uniforms[gen, [t - lens[i] for i in gen]] if gen else d.uniforms[:0, 0]
        picked, lps = _sample_rows(rows, rows, u, d.params, len(gen), dev)
        tokens[idx, t] = picked
        for i, tok, lp in zip(gen, picked.tolist(), lps.tolist()):
            d.emit(i, tok, lp)
        if all(d.done) or t == total - 1:
            break
        last = _cached_last_logits(model, tokens[:, t : t + 1], ctx, t)


@torch.no_grad()
def generate(model, tokenizer, prompts, params: SamplingParams | None = None, max_context: int | None = None) -> list[Generation]:
    """Generate a continuation for each prompt (strings, or lists of token ids). Collective."""
    params = params or SamplingParams()
    if params.max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0 (got {params.max_new_tokens})")
    dev = next(model.parameters()).device
    prompt_ids = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("empty prompt")
    max_context = max_context or getattr(model, "max_sequence_length", None) or 10**9
    tag = params.tag_token_id if params.tag_aware else None
    if params.tag_aware and tag is None:
        raise ValueError("tag-aware decoding needs the tag token (tag_token_id)")
    stops = set(params.stop_token_ids)
    if params.stop_at_eos and getattr(tokenizer, "eos_id", None) is not None:
        stops.add(tokenizer.eos_id)
    n = len(prompt_ids)
    gen = torch.Generator(device="cpu").manual_seed(params.seed)
    d = _Decoding(
        prompt_ids, params, stops, torch.rand(n, max(params.max_new_tokens, 1), generator=gen, dtype=torch.float64),
        [[] for _ in range(n)], [[] for _ in range(n)], [params.max_new_tokens == 0] * n, ["length"] * n,
    )
    cached = params.kv_cache and tag is None and max(len(p) for p in prompt_ids) + params.max_new_tokens <= max_context
    was_training = model.training
    model.eval()
    try:
        if n and params.max_new_tokens:
            if cached:
                _decode_cached(model, d, dev)
            else:
                _decode_full(model, d, max_context, tag, dev)
    finally:
        model.train(was_training)
    return [
        Generation(prompt_ids[i], d.out_ids[i], d.out_lp[i], tokenizer.decode([t for t in d.out_ids[i] if t not in stops]), d.reason[i])
        for i in range(n)
    ]


@torch.no_grad()
def sequence_logprobs(model, token_lists: list[list[int]]) -> list[list[float]] | None:
    """Per-token log p(t_i | t_<i) for i >= 1 of each sequence (last stage; None elsewhere).
    Collective. Useful for reference log-probs (DPO) and scoring."""
    dev = next(model.parameters()).device
    width = max(len(t) for t in token_lists)
    tokens = torch.zeros(len(token_lists), width, dtype=torch.long, device=dev)
    for j, t in enumerate(token_lists):
        tokens[j, : len(t)] = torch.tensor(t, dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        logits = forward_logits(model, tokens)
    finally:
        model.train(was_training)
    if logits is None:
        return None
    lp = torch.log_softmax(logits, dim=-1)
    res = []
    for j, t in enumerate(token_lists):
        tgt = torch.tensor(t[1:], dtype=torch.long, device=dev)
        res.append(lp[j, : len(t) - 1].gather(-1, tgt.unsqueeze(-1)).squeeze(-1).tolist())
    return res
