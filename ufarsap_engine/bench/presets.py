"""Benchmark presets and methods (the paper's rows and the Table 4 ablations)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ufarsap_engine.bench.evaluate import EvalSettings
from ufarsap_engine.errors import UserError

#: The evaluators every plugin-based method trains with (one per paradigm at least; the four
#: safety detectors cover the categories the judges measure). Conditional training scores its
#: corpus with the same set.
BENCH_PLUGINS = ["safety.toxicity", "safety.privacy", "safety.misinformation", "safety.bias",
                 "self.reward", "reflect.crossparadigm", "multi.consensus"]


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    group: str  # baseline | paradigm | combination | sota | ufarsap | ablation
    plugins: bool = True
    objective: dict[str, Any] = field(default_factory=dict)
    evolve: bool = False
    conditional: bool = False
    filtered: bool = False  # MLE on the corpus without the documents the plugins flag
    tag_aware: bool = False  # evaluate with tag-aware decoding (a model trained with harmfulness tags)
    onpolicy: dict[str, Any] = field(default_factory=dict)  # the run's onpolicy.* settings


#: The on-policy phase of the methods that train on their own samples (``onpolicy.*``).
ONPOLICY_DPO = {"every": 20, "samples": 4, "prompts": 8, "new_tokens": 32, "train_steps": 10}

METHODS: dict[str, Method] = {m.name: m for m in [
    Method("mle", "MLE (no alignment)", "baseline", plugins=False),
    Method("safety", "Safety only", "paradigm", objective={"mode": "individual", "individual_paradigm": "safety"}),
    Method("self", "Self-alignment only", "paradigm", objective={"mode": "individual", "individual_paradigm": "self"}),
    Method("reflect", "Reflection only", "paradigm", objective={"mode": "individual", "individual_paradigm": "reflect"}),
    Method("multi", "Multi-agent only", "paradigm", objective={"mode": "individual", "individual_paradigm": "multi"}),
    Method("safety_watched", "Safety, own samples watched (on-policy phase with lam = 0)", "paradigm",
           objective={"mode": "individual", "individual_paradigm": "safety"},
           onpolicy={"every": 20, "samples": 4, "prompts": 8, "new_tokens": 32, "lam": 0.0}),
    Method("safety_onpolicy", "Safety + on-policy DPO (own samples judged by the plugins)", "paradigm",
           objective={"mode": "individual", "individual_paradigm": "safety"},
           onpolicy=ONPOLICY_DPO),
    Method("sequential", "Sequential combination", "combination", objective={"mode": "sequential"}),
    Method("parallel", "Parallel combination", "combination", objective={"mode": "parallel"}),
    Method("weighted", "Weighted combination", "combination", objective={"mode": "weighted"}),
    Method("filtered", "Document filtering (Korbak et al. 2023; O'Brien et al. 2025)", "sota", plugins=False,
           filtered=True),
    Method("conditional", "Conditional training (Korbak et al. 2023)", "sota", plugins=False, conditional=True),
    Method("mask", "Token-level loss masking (Rathi & Radford 2026)", "sota",
           objective={"mode": "individual", "individual_paradigm": "safety", "families": {"safety": "mask"}}),
    Method("hidden", "<|hidden|> replacement of flagged spans (Rathi & Radford 2026)", "sota",
           objective={"mode": "individual", "individual_paradigm": "safety", "families": {"safety": "hidden"}}),
    Method("tags", "Harmfulness tags + tag-aware decoding (Maini et al. 2025)", "sota", tag_aware=True,
           objective={"mode": "individual", "individual_paradigm": "safety", "families": {"safety": "tags"}}),
    Method("ufarsap", "UFARSAP (unified + evolution)", "ufarsap", objective={"mode": "unified"}, evolve=True),
    Method("ufarsap_onpolicy", "UFARSAP + on-policy DPO on its own samples", "ufarsap",
           objective={"mode": "unified"}, evolve=True, onpolicy=ONPOLICY_DPO),
    Method("abl_no_orchestration", "w/o hierarchical orchestration", "ablation",
           objective={"mode": "unified", "orchestration": False}, evolve=True),
    Method("abl_no_emergence", "w/o emergence", "ablation", objective={"mode": "unified", "emergence": False},
           evolve=True),
    Method("abl_no_evolution", "w/o adaptive evolution", "ablation", objective={"mode": "unified"}, evolve=False),
    Method("abl_no_coordination", "w/o cross-paradigm coordination", "ablation",
           objective={"mode": "unified", "coordination": False}, evolve=True),
]}


@dataclass(frozen=True)
class Preset:
    name: str
    methods: tuple[str, ...]
    seeds: int
    steps: int
    model: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    nproc: int = 1
    tp: int = 1
    pp: int = 1
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    # data: held-out sets (from the test split) and the training-corpus size
    n_clean: int = 40
    n_bad_per_kind: int = 8
    n_adv_per_kind: int = 4
    max_train_documents: int | None = None
    vocab_size: int = 1024
    harm_repeat: int = 1  # each harmful training document this many times (bench/data.py)
    # objective / evolution
    round_steps: int | None = None  # None: steps // 2 (one evolution round mid-run)
    evolution: dict[str, Any] = field(default_factory=lambda: {"population_size": 2, "bootstrap": 50})
    probe_documents: int = 64
    conditional_threshold: float = 0.5
    note: str = ""


ALL = tuple(METHODS)
#: The CPU regime with signal: at 1000-1200 steps this model reproduces the corpus's harmful content on
#: about a fifth of the adversarial prompts under MLE (the 2-layer, hidden-64 tiny model at 100-3000
#: steps stays under 8%), so a 10x reduction is measurable.
CPU_SIGNAL_MODEL = {"num_layers": 4, "hidden_size": 128, "ffn_hidden_size": 352}
CPU_SIGNAL_EVAL = EvalSettings(unprompted=100, adversarial_prompts=20, k=25, max_new_tokens=32)

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("smoke", methods=("mle", "filtered", "conditional", "tags", "ufarsap"), seeds=1, steps=20,
           evaluation=EvalSettings(unprompted=8, adversarial_prompts=4, k=4, max_new_tokens=16),
           n_clean=12, n_bad_per_kind=3, n_adv_per_kind=1, max_train_documents=400, probe_documents=16,
           note="CI check that every stage runs; numbers are meaningless at this size"),
    Preset("cpu", methods=ALL, seeds=3, steps=1200, model_overrides=CPU_SIGNAL_MODEL, harm_repeat=3,
           evaluation=CPU_SIGNAL_EVAL,
           note="Megatron tiny preset widened to 4 layers, hidden 128 (seq 128, 1024-token BPE), 1200 steps x 8 x "
                "128 tokens on the embedded corpus with each harmful training document 3 times, 2 CPU cores"),
    Preset("cpu-quick", methods=("mle", "filtered", "conditional", "mask", "ufarsap"), seeds=1, steps=1000,
           model_overrides=CPU_SIGNAL_MODEL, harm_repeat=3, evaluation=CPU_SIGNAL_EVAL,
           note="the cpu preset's model and corpus at 1000 steps, one seed: MLE against the strongest "
                "data-side baselines and UFARSAP"),
    Preset("cpu-100", methods=ALL, seeds=3, steps=100,
           evaluation=EvalSettings(unprompted=50, adversarial_prompts=8, k=25, max_new_tokens=32),
           note="Megatron tiny preset (2 layers, hidden 64, seq 128, 1024-token BPE), 100 steps x 8 x 128 "
                "tokens, 2 CPU cores (the former cpu preset: every method ties here)"),
    Preset("onpolicy", methods=("mle", "safety", "safety_watched", "safety_onpolicy"), seeds=3, steps=400,
           evaluation=EvalSettings(unprompted=50, adversarial_prompts=8, k=25, max_new_tokens=32),
           note="the on-policy phase against the same offline objective without it: tiny preset, 400 steps "
                "x 8 x 128 tokens, a phase every 20 steps, 2 CPU cores"),
    Preset("gpu-125m", methods=ALL, seeds=3, steps=5000, model="125m", device="cuda",
           train={"global_batch_size": 64, "micro_batch_size": 8, "lr": 6e-4, "min_lr": 6e-5, "warmup_steps": 200,
                  "bf16": True},
           evaluation=EvalSettings(unprompted=500, adversarial_prompts=100, k=25, max_new_tokens=128,
                                   gen_batch=256, seq_limit=2048),
           n_clean=200, n_bad_per_kind=40, n_adv_per_kind=25, vocab_size=32768, round_steps=1000,
           evolution={"population_size": 4}, note="not run in this repository (no GPU here)"),
    Preset("gpu-1b", methods=ALL, seeds=3, steps=10000, model="1b", device="cuda", nproc=8, tp=2,
           train={"global_batch_size": 256, "micro_batch_size": 4, "lr": 3e-4, "min_lr": 3e-5, "warmup_steps": 500,
                  "bf16": True},
           evaluation=EvalSettings(unprompted=500, adversarial_prompts=100, k=25, max_new_tokens=128,
                                   gen_batch=128, seq_limit=2048),
           n_clean=200, n_bad_per_kind=40, n_adv_per_kind=25, vocab_size=32768, round_steps=2000,
           evolution={"population_size": 4}, note="not run in this repository (no GPU here); evaluation "
                                                  "loads checkpoints at TP = PP = 1 on one GPU"),
]}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown bench preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def parse_methods(spec: str | None, preset: Preset) -> list[str]:
    if not spec:
        return list(preset.methods)
    names = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise UserError(f"unknown bench method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if "mle" not in names:
        names.insert(0, "mle")  # every ratio is against MLE
    return names
