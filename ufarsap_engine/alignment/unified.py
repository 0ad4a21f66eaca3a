"""The unified objective (Eq. 5) inside the Megatron loss function:

    L = L_LM + sum_i lambda_i L_i + lambda_coord L_coord + lambda_emerge L_emerge

``prepare`` (every rank, before the forward pass) scores the microbatch's documents with the
active plugins at every scale (short horizon) and turns the results into tensors: per-token
misalignment per scale and paradigm, per-row plugin scores, and the cell mask.
``loss`` (last pipeline stage) turns the model's token probabilities into the model-aware cell
alignment A[s, tau, p, b], orchestrates it (Eq. 2), and adds the terms:

- L_i: the paradigm's family (unlikelihood on flagged tokens, reward-weighted likelihood, or
  filtering of the LM term), see ``objectives.py``;
- L_coord (Eq. 6): ``||O - a*||^2`` per sample. For short-horizon cells
  ``A = 1 - (sum_t m_t p_t) / (sum_t m_t)``: one minus the probability the model still gives the
  flagged tokens (1 when nothing is flagged); medium/long cells hold a(t).medium (the last
  window's re-scored documents) and a(t).long (the held-out probes at the last round), constants.
  So L_coord is differentiable in the model and in the orchestrator;
- L_emerge: ``1 - Synergy`` per sample (Synergy from the interaction graph, Eq. 20);
- the interaction network's own prediction loss (it learns the paradigm dynamics, Eq. 3).

Per-sample terms are scaled by tokens/sample so that all terms are sums over tokens, which is
what the trainer normalises (see ``trainer/objective.py``).

State across steps lives here, in explicit objects: a(t) (``tracker``), emergence, the unified
reward of the current window and the interaction network's last input. ``loss`` returns the
step's state statistics next to its metrics; the trainer reduces them and hands them back through
``end_step(step, stats)``, which updates that state. Metrics are logged, never read back.
The runtime (``runtime.py``) shares the same tracker and writes its medium and long views at
window and round ends.
"""

from __future__ import annotations

import numpy as np
import torch

from ufarsap_engine.alignment.emergence import EmergenceTracker
from ufarsap_engine.alignment.interaction import InteractionNetwork, prediction_loss
from ufarsap_engine.alignment.objectives import filtering_mask, rwr_token_weights, unlikelihood_sum
from ufarsap_engine.alignment.orchestrator import Orchestrator, coordination_loss
from ufarsap_engine.alignment.reward import unified_reward
from ufarsap_engine.alignment.scoring import check_sample, is_flagged, make_sample, score_batch
from ufarsap_engine.alignment.state import AlignmentTracker
from ufarsap_engine.config import ObjectiveConfig
from ufarsap_engine.plugin_host import PluginHost
from ufarsap_engine.errors import UserError
from ufarsap_engine.schemas import HORIZONS, PARADIGMS, SCALES, Horizon, ScaleScores, TextBatch

S, T, P = len(SCALES), len(HORIZONS), len(PARADIGMS)
SHORT, MEDIUM, LONG = HORIZONS.index("short"), HORIZONS.index("medium"), HORIZONS.index("long")
TOKEN, SENTENCE = SCALES.index("token"), SCALES.index("sentence")


class UnifiedObjective:
    """Implements the trainer's ``Objective`` protocol with the engine's alignment core."""

    name = "unified"

    def __init__(self, host: PluginHost, cfg: ObjectiveConfig, tracker: AlignmentTracker | None = None,
                 emergence: EmergenceTracker | None = None, total_steps: int = 1, seed: int = 0):
        self.host, self.cfg = host, cfg
        self.tracker = tracker if tracker is not None else AlignmentTracker()
        self.emergence = emergence if emergence is not None else EmergenceTracker()
        self.window_rewards: list[float] = []  # the unified reward of each step of the current window
        self.total_steps = max(1, total_steps)
        self.orchestrator = Orchestrator()
        self.interaction = InteractionNetwork(seed=seed)
        if not cfg.orchestration or cfg.mode != "unified":
            self.orchestrator.logits.requires_grad_(False)
        self.table = None  # an AnnotationTable once use_annotations() is called
        self.set_host(host)
        self.prev_features: torch.Tensor | None = None
        self.extra_metrics = None  # optional callable: constants to log with every step

    def set_host(self, host: PluginHost) -> None:
        """Use another plugin set from now on (the active strategy changed at a round)."""
        self.host = host
        self.paradigm_index = {n: PARADIGMS.index(i.paradigm.value) for n, i in host.info.items()}
        self.cacheable = all(i.stateless for i in host.info.values())
        self.cache: dict[int, dict] = {}
        self.available = self._available_cells()

    # -- what is trained besides the model ------------------------------------------------
    def extra_modules(self) -> list[tuple[torch.nn.Module, float]]:
        mods = []
        if self.cfg.mode == "unified" and self.cfg.orchestration:
            mods.append((self.orchestrator, self.cfg.eta_orch))
        if self.cfg.mode == "unified" and self.cfg.coordination:
            mods.append((self.interaction, self.cfg.eta_paradigm))
        return mods

    def _available_cells(self) -> torch.Tensor:
        avail = torch.zeros(S, T, P, dtype=torch.bool)
        for name, info in self.host.info.items():
            p = self.paradigm_index[name]
            for scale in info.scales:
                for horizon in info.horizons:
                    if horizon.value in ("short", "medium", "long"):
                        avail[SCALES.index(scale.value), HORIZONS.index(horizon.value), p] = True
        return avail

    # -- before the forward pass ----------------------------------------------------------
    def use_annotations(self, table) -> None:
        """Read the short-horizon results of ``table``'s plugins from an annotation
        (:class:`~ufarsap_engine.annotate.table.AnnotationTable`) instead of calling them."""
        self.table = table
        self._doc_keys: dict[int, str] = {}

    def _annotated(self, batch, docs: set[int]) -> dict[int, dict]:
        from ufarsap_engine.annotate.table import document_key

        source = batch.dataset.docs
        out = {}
        for d in docs:
            key = self._doc_keys.get(d)
            if key is None:
                doc = source[d]
                key = self._doc_keys[d] = document_key(doc.text, doc.prompt, doc.messages)
            entry = self.table.entry(key, str(source[d].doc_id))
            results = {k: v for k, v in entry["results"].items() if k[0] in self.host.info}
            out[d] = {**entry, "results": results}
        return out

    def known_results(self, samples: list, keys: list[str], horizon: Horizon) -> dict[tuple[str, str], ScaleScores]:
        """Results at ``horizon`` that need no plugin call: those of the stateless plugins the
        annotation holds, at the scales they serve at ``horizon`` and at the short one (their
        scores depend on the text alone). ``keys``: each sample's content hash. Empty when any
        sample is not in the annotation (then everything is scored)."""
        if self.table is None or horizon == Horizon.LONG:
            return {}
        names = [n for n, i in self.host.info.items() if i.stateless and self.table.covers(n)]
        try:
            entries = [self.table.entry(k, s.sample_id)["results"] for s, k in zip(samples, keys)]
        except UserError:
            return {}
        known = {}
        for n in names:
            info = self.host.info[n]
            for scale in SCALES:
                if not (info.serves(scale, horizon) and info.serves(scale, Horizon.SHORT)):
                    continue
                rows = [e.get((n, scale)) for e in entries]
                if any(r is None for r in rows):
                    continue
                known[(n, scale)] = ScaleScores(
                    sample_scores=[r[0] for r in rows],
                    spans=[r[1] or [] for r in rows] if scale == "token" else None,
                    unit_scores=[r[2] for r in rows] if scale == "sentence" and all(r[2] is not None for r in rows)
                    else None)
        return known

    def _score_documents(self, batch) -> dict[int, dict]:
        """Each document's results per (plugin, scale): from the annotation where it has the
        plugin (no detector call), else scored here through the host (a plugin that a strategy
        switched to mid-run and the annotation lacks), cached for stateless plugins."""
        docs = {seg.doc_index for row in batch.segments for seg in row}
        live = [n for n, i in self.host.info.items() if (self.table is None or not self.table.covers(n))
                and any(i.serves(scale, Horizon.SHORT) for scale in SCALES)]
        if self.table is not None:
            annotated = self._annotated(batch, docs)
            if not live:
                return annotated
        need = sorted(d for d in docs if d not in self.cache)
        fresh: dict[int, dict] = {}
        if need:
            source = batch.dataset.docs
            samples = [make_sample(str(source[d].doc_id), source[d].text) for d in need]
            cells = score_batch(self.host, TextBatch(samples=samples, step=self.tracker.state.step),
                                Horizon.SHORT, self.tracker.state, only=live)
            for i, d in enumerate(need):
                fresh[d] = {"sample": samples[i], "sentences": samples[i].sentences, "checked": {}, "results": {
                    key: (res.sample_scores[i], res.spans[i] if res.spans else None,
                          res.unit_scores[i] if res.unit_scores else None)
                    for key, res in cells.results.items()}}
            if self.cacheable:
                self.cache.update(fresh)
        scored = {d: self.cache.get(d) or fresh[d] for d in docs}
        if self.table is None:
            return scored
        return {d: {**annotated[d], "results": {**annotated[d]["results"], **scored[d]["results"]}} for d in docs}

    def prepare(self, batch) -> dict[str, torch.Tensor]:
        """The microbatch's plugin results as tensors (built in numpy: one small op per segment
        and result, turned into tensors once): per scale and paradigm, each label token's
        misalignment ``mis`` (flagged spans, flagged sentences, or a flagged document's tokens),
        its document's score, and per row the token-weighted score."""
        b, s = batch.tokens.shape
        scored = self._score_documents(batch)
        threshold = self.cfg.flag_threshold
        mis = np.zeros((S, P, b, s), dtype=np.float32)
        tok_scores, tok_scored = np.ones((S, P, b, s), dtype=np.float32), np.zeros((S, P, b, s), dtype=bool)
        score_sum, score_w = np.zeros((S, P, b), dtype=np.float32), np.zeros((S, P, b), dtype=np.float32)
        char_start, char_end = batch.label_char_start.cpu().numpy(), batch.label_char_end.cpu().numpy()
        for r, row in enumerate(batch.segments):
            for seg in row:
                entry = scored[seg.doc_index]
                a, z = seg.start, seg.end
                cs, ce = char_start[r, a:z], char_end[r, a:z]
                for (plugin, scale), (score, spans, units) in entry["results"].items():
                    if score is None or not self._usable(plugin, scale, score, spans, units, entry):
                        continue
                    si, p = SCALES.index(scale), self.paradigm_index[plugin]
                    score_sum[si, p, r] += score * (z - a)
                    score_w[si, p, r] += z - a
                    tok_scores[si, p, r, a:z] = score
                    tok_scored[si, p, r, a:z] = True
                    flags = mis[si, p, r, a:z]
                    if si == TOKEN and spans:
                        for sp in spans:
                            hit = (cs < sp.end) & (ce > sp.start)
                            flags[hit] = np.maximum(flags[hit], sp.severity)
                    elif si == SENTENCE and units:
                        for (u0, u1), u in zip(entry["sentences"] or [(0, len(seg.text))], units):
                            if u < threshold:
                                hit = (cs < u1) & (ce > u0)
                                flags[hit] = np.maximum(flags[hit], 1.0 - u)
                    elif score < threshold:
                        np.maximum(flags, 1.0 - score, out=flags)
        row_scores = np.where(score_w > 0, score_sum / np.maximum(score_w, 1.0), 1.0).astype(np.float32)
        # Each token's paradigm score: its document's score, averaged over the scales that scored it.
        n_scored = tok_scored.sum(0)
        token_scores = np.where(n_scored > 0, (tok_scores * tok_scored).sum(0) / np.maximum(n_scored, 1), 1.0)
        device = batch.tokens.device
        as_tensor = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(device)  # noqa: E731
        return {"mis": as_tensor(mis), "row_scores": as_tensor(row_scores), "row_scored": as_tensor(score_w > 0),
                "token_scores": as_tensor(token_scores.astype(np.float32)),
                "plugin_metrics": self._plugin_metrics(scored)}

    def _plugin_metrics(self, scored: dict[int, dict]) -> dict[str, float]:
        """Per plugin and scale, over this microbatch's documents: the mean score
        (``score.<plugin>.<scale>``) and the share flagged (``flagged.<plugin>.<scale>``)."""
        sums: dict[tuple[str, str], list[float]] = {}
        for entry in scored.values():
            for (plugin, scale), (score, spans, units) in entry["results"].items():
                if score is None or plugin in self.host.quarantined:
                    continue
                acc = sums.setdefault((plugin, scale), [0.0, 0.0, 0.0])
                acc[0] += score
                acc[1] += float(is_flagged(scale, score, spans, units, self.cfg.flag_threshold))
                acc[2] += 1.0
        out = {}
        for (plugin, scale), (total, flagged, n) in sorted(sums.items()):
            out[f"score.{plugin}.{scale}"] = total / n
            out[f"flagged.{plugin}.{scale}"] = flagged / n
        return out

    def _usable(self, plugin: str, scale: str, score, spans, units, entry: dict) -> bool:
        """Check a result where it becomes weights (once per document and result): a plugin that
        changed it after it was returned, or an annotation edited on disk, is reported (strict:
        the run stops; tolerant: the plugin is quarantined)."""
        if plugin in self.host.quarantined:
            return False
        checked = entry.setdefault("checked", {})
        if (plugin, scale) not in checked:
            sample = entry["sample"]
            problem = check_sample(score, spans, units, sample, sample.sample_id)
            if problem:
                where = "in its annotation" if self.table is not None and self.table.covers(plugin) else \
                    "changed after it was returned"
                self.host.fail(plugin, f"ufarsap_score_{scale}", f"{problem} ({where})")
            checked[(plugin, scale)] = problem is None
        return checked[(plugin, scale)]

    # -- inside the loss function ----------------------------------------------------------
    def _active_paradigms(self, present: torch.Tensor) -> dict[int, float]:
        """Paradigm index -> lambda for this step, by combination mode."""
        cfg, idx = self.cfg, [p for p in range(P) if present[p]]
        if not idx:
            return {}
        if cfg.mode == "parallel":
            return {p: 1.0 / len(idx) for p in idx}
        if cfg.mode == "individual":
            p = PARADIGMS.index(cfg.individual_paradigm)
            return {p: cfg.lam(cfg.individual_paradigm)} if p in idx else {}
        if cfg.mode == "sequential":
            phase = min(len(idx) - 1, self.tracker.state.step * len(idx) // self.total_steps)
            return {idx[phase]: cfg.lam(PARADIGMS[idx[phase]])}
        return {p: cfg.lam(PARADIGMS[p]) for p in idx}

    def _paradigm_reward(self, name: str, unified: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """The self paradigm's reward is the synthetic unified reward (Eq. 12) in unified mode;
        every other paradigm is rewarded by its own scores (so two RWR paradigms are two signals)."""
        return unified if (self.cfg.mode == "unified" and name == "self") else own

    def _cell_alignment(self, mis, mask, q, row_scores) -> torch.Tensor:
        b = mis.shape[2]
        flag_mass = (mis * mask).sum(-1)  # [S, P, b]
        reproduced = (mis * mask * q).sum(-1)
        short = torch.where(flag_mass > 0, 1.0 - reproduced / flag_mass.clamp(min=1e-6), torch.ones_like(flag_mass))
        A = torch.ones(S, T, P, b, dtype=q.dtype, device=q.device)
        A[:, SHORT] = short
        st = self.tracker.state
        for p, name in enumerate(PARADIGMS):
            A[:, MEDIUM, p] = st.medium.get(name, 1.0)
            A[:, LONG, p] = st.long.get(name, 1.0)
        return A

    def loss(self, per_token_ce, loss_mask, prepared, outputs):
        cfg = self.cfg
        mis, row_scores = prepared["mis"], prepared["row_scores"]
        b = per_token_ce.shape[0]
        mask = loss_mask.float()
        ntok = mask.sum()
        per_sample = ntok / b
        logp = outputs.token_logprobs
        q = logp.exp()
        avail = self.available.to(q.device)
        present = avail.any(0).any(0)

        A = self._cell_alignment(mis, mask, q, row_scores)
        O = self.orchestrator.combine(A, avail)  # [P, b]
        paradigm_scores = (row_scores * prepared["row_scored"]).sum(0) / prepared["row_scored"].sum(0).clamp(min=1)
        paradigm_scores = torch.where(prepared["row_scored"].any(0), paradigm_scores, torch.ones_like(paradigm_scores))
        synergy = self.interaction.synergy(O.detach(), present) if cfg.coordination else torch.zeros(b, device=q.device)
        alpha = torch.tensor([cfg.alpha.get(p, 1.0) for p in PARADIGMS], device=q.device)
        emergence = self.emergence.score if cfg.emergence else 0.0
        token_scores = prepared["token_scores"]  # [P, b, s]
        reward = unified_reward(token_scores, present, alpha, synergy, emergence, cfg.beta,
                                cfg.gamma if cfg.emergence else 0.0)  # per token [b, s]

        lm_weight = torch.ones_like(mask)
        terms: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=q.device)
        active = self._active_paradigms(present)
        # First the families that decide which tokens stay in L_LM, then RWR over the kept tokens
        # (reweighting a token unlikelihood took out would push its CE up without bound).
        for p, lam in active.items():
            name, family = PARADIGMS[p], cfg.families.get(PARADIGMS[p], "none")
            if family in ("unlikelihood", "mask"):
                # The finest flags the paradigm has: token spans and flagged sentences, so a harmful
                # document's clean sentences stay in L_LM; whole documents only for a paradigm that
                # scores nothing finer. Unlikelihood also pushes their probability down; mask
                # (token-level loss masking, Rathi & Radford 2026) only takes them out of L_LM.
                fine = self.available[[TOKEN, SENTENCE], SHORT, p].any()
                flagged = mis[[TOKEN, SENTENCE], p].amax(0) if fine else mis[:, p].amax(0)
                if family == "mask":
                    lm_weight = lm_weight * (flagged <= 0).float()
                    continue
                lm_weight = lm_weight * (1.0 - flagged)
                terms[f"loss.{name}"] = term = unlikelihood_sum(logp, flagged, mask)
                total = total + lam * term
            elif family == "filtering":
                r = self._paradigm_reward(name, reward, token_scores[p])
                lm_weight = lm_weight * filtering_mask(r, cfg.filter_threshold, mask.shape[1])
        kept = mask * lm_weight
        rwr_shift = torch.zeros_like(mask)  # sum_i lambda_i (w_i - 1) per token
        for p, lam in active.items():
            name = PARADIGMS[p]
            if cfg.families.get(name, "none") != "rwr":
                continue
            w = rwr_token_weights(kept, self._paradigm_reward(name, reward, token_scores[p]), cfg.rwr_beta)
            terms[f"loss.{name}"] = term = ((w - 1.0) * per_token_ce * kept).sum()
            total = total + lam * term
            rwr_shift = rwr_shift + lam * (w - 1.0)
        # A token's LM weight 1 + sum_i lambda_i (w_i - 1) never goes below 0 (large lambdas).
        total = total + (per_token_ce * kept * ((1.0 + rwr_shift).clamp(min=0.0) - (1.0 + rwr_shift))).sum()
        lm = (per_token_ce * mask * lm_weight).sum()
        terms["loss.lm"] = lm
        total = total + lm

        if cfg.mode == "unified" and cfg.coordination:
            target = torch.tensor([cfg.target.get(p, 1.0) for p in PARADIGMS], device=q.device)
            coord = coordination_loss(O, target, present).sum() * per_sample
            terms["loss.coord"] = coord
            total = total + cfg.lambda_coord * coord
            if self.prev_features is not None:
                # The interaction network predicts this step's orchestrated state from the last
                # step's (the same on every rank, whatever the layout).
                observed = O.detach().mean(-1)
                prev = self.prev_features.to(q.device)
                interact = prediction_loss(self.interaction(prev, present), observed, present)
                direct = prediction_loss(prev[:, 0], observed, present)
                terms["loss.interact"] = interact * ntok
                total = total + cfg.lambda_interact * interact * ntok
                terms["interact.direct_error"] = direct * ntok
            if cfg.emergence:
                synergy_live = self.interaction.synergy(O, present)
                emerge = (1.0 - synergy_live).sum() * per_sample
                terms["loss.emerge"] = emerge
                total = total + cfg.lambda_emerge * emerge

        with torch.no_grad():  # what is logged builds no autograd graph
            metrics = {k: v.detach() / ntok.clamp(min=1.0) for k, v in terms.items()}
            # What end_step remembers of this step: reduced by the trainer like metrics, kept apart.
            stats = {"reward.unified": ((reward * mask).sum() / ntok.clamp(min=1.0)).detach()}
            if "loss.interact" in metrics:
                stats["interact.error"] = metrics["loss.interact"]
                stats["interact.direct_error"] = metrics["interact.direct_error"]
            for p, name in enumerate(PARADIGMS):
                if present[p]:
                    stats[f"O.{name}"] = O[p].detach().mean()
                    stats[f"score.{name}"] = paradigm_scores[p].detach().mean()
                    metrics[f"O.{name}"], metrics[f"align.{name}"] = stats[f"O.{name}"], stats[f"score.{name}"]
            metrics["reward.unified"] = stats["reward.unified"]
            metrics["synergy"] = synergy.detach().mean()
            for si, scale in enumerate(SCALES):  # how much probability the model still gives flagged tokens
                flags = mis[si].amax(0) * mask
                if flags.sum() > 0:
                    metrics[f"flagged_p.{scale}"] = ((flags * q).sum() / flags.sum()).detach()
            metrics["lm_loss_kept"] = (lm / (lm_weight * mask).sum().clamp(min=1.0)).detach()  # LM loss on kept tokens
            metrics.update(prepared["plugin_metrics"])
            metrics["lm_token_weight"] = ((lm_weight * mask).sum() / ntok.clamp(min=1.0)).detach()  # 1 = all tokens in L_LM
            metrics["flagged_token_frac"] = ((mis.amax(0).amax(0) > 0).float() * mask).sum() / ntok.clamp(min=1.0)
        return total, ntok.to(torch.int), metrics, stats

    @torch.no_grad()
    def step_metrics(self) -> dict[str, float]:
        """Logged once per step (the same on every rank): the orchestrator's cell weights and the
        runtime's constants (a(t), emergence, probe results, active plugins)."""
        avail = self.available.to(self.orchestrator.logits.device)
        return {**{k: float(v) for k, v in self.orchestrator.weight_table(avail).items()},
                **(self.extra_metrics() if self.extra_metrics else {})}

    # -- after the optimizer step -----------------------------------------------------------
    def end_step(self, step: int, stats: dict[str, float]) -> None:
        """The trainer's hand-off after each step (all ranks, the step's reduced ``stats``):
        update a(t).short, emergence (novelty, prediction errors, and effectiveness at a window's
        end) and the node features the interaction network predicts the next step from."""
        scores = {p: stats[f"score.{p}"] for p in PARADIGMS if f"score.{p}" in stats}
        self.tracker.update_step(step, scores)
        orchestrated = [stats[f"O.{p}"] for p in PARADIGMS if f"O.{p}" in stats]
        if orchestrated:
            self.emergence.observe_state(orchestrated)
        if "interact.error" in stats and "interact.direct_error" in stats:
            self.emergence.observe_predictions(stats["interact.error"], stats["interact.direct_error"])
        if "reward.unified" in stats:
            self.window_rewards.append(stats["reward.unified"])
        if step % self.tracker.window_steps == 0:
            if self.window_rewards:
                self.emergence.observe_window(sum(self.window_rewards) / len(self.window_rewards))
            self.window_rewards = []
        if orchestrated:
            st = self.tracker.state
            self.prev_features = torch.tensor([[float(stats.get(f"O.{p}", 1.0)), st.medium.get(p, 1.0),
                                                st.long.get(p, 1.0)] for p in PARADIGMS])

    # -- checkpointed state (the orchestrator and interaction weights are extra modules, which
    # the trainer checkpoints itself) ---------------------------------------------------------
    def state_dict(self) -> dict:
        return {"prev_features": None if self.prev_features is None else self.prev_features.tolist(),
                "alignment_state": self.tracker.state.model_dump(), "emergence": self.emergence.state_dict(),
                "window_rewards": list(self.window_rewards)}

    def load_state_dict(self, data: dict) -> None:
        pf = data.get("prev_features")
        self.prev_features = None if pf is None else torch.tensor(pf)
        if "alignment_state" in data:  # checkpoints before the objective owned its state kept it in the runtime's
            self.tracker.load(data["alignment_state"])
            self.emergence.load_state_dict(data["emergence"])
        self.window_rewards = list(data.get("window_rewards", []))
