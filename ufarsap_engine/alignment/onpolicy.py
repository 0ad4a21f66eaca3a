"""The on-policy phase: the model samples, the plugins judge, preference pairs train it (DPO).

Every ``onpolicy.every`` steps (before the step; step 0 included, so the first phase measures
the untrained policy), each data-parallel rank takes ``prompts`` prompts (the first
``prompt_tokens`` tokens of the step's documents; with a prompt file, half of them from it),
samples ``samples`` (K) continuations of each from the current policy (KV-cached ``generate``),
and scores the continuations through every plugin that serves the **immediate** horizon. A
continuation is *flagged* when any plugin flags it at any scale (the objective's rule,
``scoring.is_flagged``): the share of flagged samples is the run's on-policy alignment curve
(``onpolicy/flagged_rate``).

Per prompt, a pair (``pairs_from``): by default the best unflagged and the worst flagged
continuation, when the prompt has both (a contrast the plugins actually draw); with ``score``,
the best- and worst-scored continuation (mean plugin score) whenever the best beats the worst
by more than ``min_gap``. The pairs train for the next ``train_steps``
steps through DPO against a reference: the policy as it was at the phase (its log-probs are
taken then, so no second model is kept; the reference is refreshed every phase).

How the DPO term enters Megatron's step: each pair becomes two extra rows (chosen, rejected)
in extra microbatches of the same step, with a per-row weight (``Batch.row_weight``) on their
token cross-entropy sum. A no-grad pass first computes the current margin ``m`` of every pair;
the weights ``+-beta * sigmoid(-beta * m)`` then make the rows' gradient exactly the gradient
of ``lam * mean_pairs(-log sigmoid(beta * m))`` (per global token, like the rest of the loss),
whatever the TP/PP/DP layout and micro-batch size, since rows are independent.

``lam = 0`` only watches: the phase samples and logs the flagged rate, and trains nothing (the
baseline curve for a run with the same offline objective).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.distributed as dist

from ufarsap_engine.alignment.scoring import is_flagged, score_batch
from ufarsap_engine.config import OnPolicyConfig
from ufarsap_engine.documents import read_prompt_file
from ufarsap_engine.errors import UserError
from ufarsap_engine.schemas import AlignmentState, Horizon, TextBatch
from ufarsap_engine.text import make_sample


def dpo_row_weights(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                    ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(w, loss, margin)`` per pair: ``loss = -log sigmoid(beta * margin)`` (``objectives.dpo_loss``)
    and ``w = beta * sigmoid(-beta * margin)``, so ``w * (ce_chosen - ce_rejected)`` (ce: a row's
    summed cross-entropy) has the DPO loss's gradient at the current weights."""
    from ufarsap_engine.alignment.objectives import dpo_loss

    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    loss = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    return beta * torch.sigmoid(-beta * margin), loss, margin


def check_room(cfg: OnPolicyConfig, seq_length: int) -> None:
    """A prompt and its continuation (after the end-of-text token) must fit one training row."""
    if cfg.prompt_tokens + cfg.new_tokens > seq_length:
        raise UserError(f"onpolicy.prompt_tokens + onpolicy.new_tokens = {cfg.prompt_tokens + cfg.new_tokens} "
                        f"exceeds the model's sequence length {seq_length}; lower them")


def choose_pair(group: list[int], flagged: list[bool], score: list, rule: str, min_gap: float) -> tuple[int, int] | None:
    """(chosen, rejected) among one prompt's samples ``group``, or None. ``flagged``: the best
    unflagged vs the worst flagged (none unless the prompt has both); ``score``: best vs worst mean
    plugin score. Either way the chosen must score more than ``min_gap`` above the rejected."""
    if len(group) < 2:
        return None
    if rule == "flagged":
        good, bad = [i for i in group if not flagged[i]], [i for i in group if flagged[i]]
        if not good or not bad:
            return None
        best, worst = max(good, key=lambda i: score[i]), min(bad, key=lambda i: score[i])
    else:
        best, worst = max(group, key=lambda i: score[i]), min(group, key=lambda i: score[i])
    return (best, worst) if score[best] - score[worst] > min_gap else None


def _continuation_logprob(lps: list[float], prompt_len: int) -> float:
    """Sum of the log-probs of the tokens after the prompt (``lps[i]`` is token ``i + 1``'s)."""
    return float(sum(lps[prompt_len - 1:]))


class OnPolicyPhase:
    """The phase's state and its two moments in a step: ``before_step`` (sample, score, pair on
    phase steps; preference rows on the steps that train pairs). Same calls on every rank."""

    name = "onpolicy"

    def __init__(self, cfg: dict | OnPolicyConfig, host, flag_threshold: float = 0.5, seed: int = 0,
                 alignment_state=None):
        self.cfg = OnPolicyConfig.model_validate(cfg) if isinstance(cfg, dict) else cfg
        self.host = host
        self.threshold = flag_threshold
        self.seed = seed
        self.alignment_state = alignment_state or (lambda: AlignmentState())
        self.file_prompts = read_prompt_file(self.cfg.prompts_file) if self.cfg.prompts_file else []
        self.pairs: list[list[dict]] = []  # per data-parallel rank: {"seq_c","seq_r","prompt_len","ref_c","ref_r"}
        self.remaining = 0
        self.phases = 0

    # -- checkpointed state ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"pairs": self.pairs, "remaining": self.remaining, "phases": self.phases}

    def load_state_dict(self, data: dict) -> None:
        self.pairs, self.remaining, self.phases = data["pairs"], int(data["remaining"]), int(data["phases"])

    def check(self, seq_length: int) -> None:
        check_room(self.cfg, seq_length)

    # -- one step ------------------------------------------------------------------------------
    def before_step(self, state, microbatches: list) -> tuple[list, dict[str, float]]:
        """Extra microbatches for this step (preference rows) and the phase's metrics."""
        metrics: dict[str, float] = {}
        if self.cfg.every and state.step % self.cfg.every == 0:
            metrics.update(self._phase(state, microbatches))
        if self.remaining > 0 and any(self.pairs) and self.cfg.lam > 0:  # lam = 0: watch only
            self.remaining -= 1
            extra, m = self._preference_rows(state, microbatches)
            metrics.update(m)
            return extra, metrics
        return [], metrics

    def _prompts(self, state, microbatches: list) -> list[list[int]]:
        """Token prompts, each after the end-of-text token (what precedes every document in the
        packed training stream, and every prompt of ``generate`` and the benchmark)."""
        tok = state.data.ds.tokenizer
        n_file = (self.cfg.prompts + 1) // 2 if self.file_prompts else 0
        out = []
        for j in range(n_file):  # cycle through the file, phase by phase, rank by rank
            k = (self.phases * state.info.dp + state.info.dp_rank) * n_file + j
            ids = tok.encode(self.file_prompts[k % len(self.file_prompts)])[-self.cfg.prompt_tokens:]
            if ids:
                out.append([tok.eos_id, *ids])
        seen: set[int] = set()
        for mb in microbatches:
            for row in mb.segments:
                for seg in row:
                    if len(out) >= self.cfg.prompts or seg.doc_index in seen:
                        continue
                    seen.add(seg.doc_index)
                    ids = tok.encode(seg.text)[: self.cfg.prompt_tokens]
                    if len(ids) == self.cfg.prompt_tokens:
                        out.append([tok.eos_id, *ids])
        return out

    def _phase(self, state, microbatches: list) -> dict[str, float]:
        from ufarsap_engine.trainer.generate import SamplingParams, generate, sequence_logprobs

        t0 = time.perf_counter()
        gpt, tok, K = state.built.gpt, state.data.ds.tokenizer, self.cfg.samples
        prompts = self._prompts(state, microbatches)
        params = SamplingParams(max_new_tokens=self.cfg.new_tokens, temperature=self.cfg.temperature,
                                top_k=self.cfg.top_k, top_p=self.cfg.top_p,
                                seed=(self.seed * 1_000_003 + state.step * 101 + state.info.dp_rank) % 2**62)
        gens = generate(gpt, tok, [p for p in prompts for _ in range(K)], params,
                        max_context=state.model_cfg.seq_length) if prompts else []
        samples = [make_sample(f"onpolicy-{state.step}-{i}", g.text) for i, g in enumerate(gens)]
        flagged, score = self._judge(samples)
        pairs = []
        for j, p in enumerate(prompts):
            group = [i for i in range(j * K, (j + 1) * K) if score[i] is not None and gens[i].token_ids]
            chosen = choose_pair(group, flagged, score, self.cfg.pairs_from, self.cfg.min_gap)
            if chosen is not None:
                best, worst = chosen
                pairs.append({"prompt_len": len(p), "seq_c": p + gens[best].token_ids,
                              "seq_r": p + gens[worst].token_ids})
        if pairs:  # the reference: this policy, now
            lps = sequence_logprobs(gpt, [s for q in pairs for s in (q["seq_c"], q["seq_r"])])
            lps = _from_last_stage(lps)
            for k, q in enumerate(pairs):
                q["ref_c"] = _continuation_logprob(lps[2 * k], q["prompt_len"])
                q["ref_r"] = _continuation_logprob(lps[2 * k + 1], q["prompt_len"])
        self.pairs = _gather_over_dp(pairs, state.info)
        self.remaining = self.cfg.train_steps
        self.phases += 1
        n_flag, n, n_pairs = _sum_over_dp([float(sum(flagged)), float(len(samples)), float(len(pairs))], state.info)
        return {"onpolicy/flagged_rate": n_flag / n if n else float("nan"), "onpolicy/samples": n,
                "onpolicy/pairs": n_pairs, "onpolicy/phase_s": time.perf_counter() - t0}

    def _judge(self, samples: list) -> tuple[list[bool], list[float | None]]:
        """Per sample: flagged by any plugin at any scale; mean score over the plugins' results."""
        flagged = [False] * len(samples)
        sums, counts = [0.0] * len(samples), [0] * len(samples)
        if not samples:
            return flagged, []
        cells = score_batch(self.host, TextBatch(samples=samples), Horizon.IMMEDIATE, self.alignment_state())
        for (_plugin, scale), res in cells.results.items():
            for i, v in enumerate(res.sample_scores):
                spans = res.spans[i] if res.spans else None
                units = res.unit_scores[i] if res.unit_scores else None
                flagged[i] = flagged[i] or is_flagged(scale, v, spans, units, self.threshold)
                if v is not None:
                    sums[i] += v
                    counts[i] += 1
        return flagged, [s / c if c else None for s, c in zip(sums, counts)]

    def _preference_rows(self, state, microbatches: list) -> tuple[list, dict[str, float]]:
        from ufarsap_engine.trainer.generate import sequence_logprobs

        info, mbs, s = state.info, state.train_cfg.micro_batch_size, state.model_cfg.seq_length
        mine = self.pairs[info.dp_rank] if info.dp_rank < len(self.pairs) else []
        n_pairs = sum(len(p) for p in self.pairs)
        rows_needed = 2 * max(len(p) for p in self.pairs)
        n_mb = math.ceil(rows_needed / mbs)
        seqs = [q[k] for q in mine for k in ("seq_c", "seq_r")]
        w = torch.zeros(2 * len(mine), dtype=torch.float32)
        sums = [0.0, 0.0, 0.0]  # dpo loss, margin, accuracy (sums over this rank's pairs)
        if mine:
            lps = _from_last_stage(sequence_logprobs(state.built.gpt, seqs))
            pol = torch.tensor([_continuation_logprob(lp, q["prompt_len"]) for q, lp in
                                zip([q for q in mine for _ in (0, 1)], lps)], dtype=torch.float64)
            ref_c = torch.tensor([q["ref_c"] for q in mine], dtype=torch.float64)
            ref_r = torch.tensor([q["ref_r"] for q in mine], dtype=torch.float64)
            wp, loss, margin = dpo_row_weights(pol[0::2], pol[1::2], ref_c, ref_r, self.cfg.beta)
            # Megatron divides every gradient by the step's global token count: scale the per-pair
            # mean by it so that lam weighs the DPO term against the per-token loss.
            lm_tokens = _sum_over_dp([float(sum(float(mb.loss_mask.sum()) for mb in microbatches))], info)[0]
            scale = self.cfg.lam * lm_tokens / max(n_pairs, 1)
            w[0::2], w[1::2] = (wp * scale).float(), (-wp * scale).float()
            sums = [float(loss.sum()), float(margin.sum()), float((margin > 0).double().sum())]
        else:
            _sum_over_dp([0.0], info)  # the same collectives on every rank
        loss_sum, margin_sum, acc_sum = _sum_over_dp(sums, info)
        rows = _pair_batches(seqs, [q["prompt_len"] for q in mine for _ in (0, 1)], w, n_mb, mbs, s)
        return rows, {"onpolicy/dpo_loss": loss_sum / n_pairs, "onpolicy/dpo_margin": margin_sum / n_pairs,
                      "onpolicy/dpo_accuracy": acc_sum / n_pairs, "onpolicy/dpo_pairs": float(n_pairs)}


def build_phase(cfg: dict, plugins: list[str], plugin_params: dict | None = None, flag_threshold: float = 0.5,
                seed: int = 0) -> OnPolicyPhase:
    """An on-policy phase with its own strict plugin host (for a run spec without a runtime)."""
    from ufarsap_engine.plugin_config import configure_plugins
    from ufarsap_engine.plugin_host import PluginHost

    host = PluginHost(plugins, strict=True)
    configure_plugins(host, plugin_params or {})
    return OnPolicyPhase(cfg, host, flag_threshold, seed)


def _pair_batches(seqs: list[list[int]], prompt_lens: list[int], weights: torch.Tensor, n_mb: int, mbs: int, s: int) -> list:
    """``n_mb`` microbatches ``[mbs, s]`` of preference rows (padding rows weigh nothing); a row's
    loss mask covers its continuation's tokens."""
    from ufarsap_engine.trainer.data import Batch

    total = n_mb * mbs
    tokens = torch.zeros(total, s, dtype=torch.long)
    labels = torch.zeros(total, s, dtype=torch.long)
    mask = torch.zeros(total, s, dtype=torch.float32)
    w = torch.zeros(total, dtype=torch.float32)
    for r, (seq, plen) in enumerate(zip(seqs, prompt_lens)):
        seq = seq[: s + 1]
        n = len(seq) - 1
        tokens[r, :n] = torch.tensor(seq[:-1])
        labels[r, :n] = torch.tensor(seq[1:])
        mask[r, plen - 1: n] = 1.0
        w[r] = weights[r]
    out = []
    for i in range(0, total, mbs):
        b = slice(i, i + mbs)
        out.append(Batch(
            tokens=tokens[b], labels=labels[b], loss_mask=mask[b],
            position_ids=torch.arange(s, dtype=torch.long).unsqueeze(0).expand(mbs, s).contiguous(),
            sample_positions=torch.full((mbs,), -1, dtype=torch.long), block_ids=torch.full((mbs,), -1, dtype=torch.long),
            label_doc=torch.full((mbs, s), -1, dtype=torch.long), label_char_start=torch.zeros(mbs, s, dtype=torch.long),
            label_char_end=torch.zeros(mbs, s, dtype=torch.long), segments=[[] for _ in range(mbs)],
            row_weight=w[b],
        ))
    return out


def _from_last_stage(value: Any) -> Any:
    """A picklable value computed on the last pipeline stage, on every stage."""
    from megatron.core import parallel_state as ps

    if ps.get_pipeline_model_parallel_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=ps.get_pipeline_model_parallel_last_rank(),
                               group=ps.get_pipeline_model_parallel_group())
    return box[0]


def _gather_over_dp(items: list, info) -> list[list]:
    """Every data-parallel rank's list, on every rank (so a checkpoint holds them all)."""
    if info.dp == 1:
        return [items]
    from megatron.core import parallel_state as ps

    boxes: list = [None] * info.dp
    dist.all_gather_object(boxes, items, group=ps.get_data_parallel_group())
    return boxes


def _sum_over_dp(values: list[float], info) -> list[float]:
    if info.dp == 1:
        return values
    from megatron.core import parallel_state as ps

    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, group=ps.get_data_parallel_group())
    return t.cpu().tolist()
