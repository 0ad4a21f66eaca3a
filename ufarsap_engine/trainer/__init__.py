"""Megatron-Core trainer of the engine (TP/PP/DP, CPU via gloo for development, CUDA for runs).

Start with ``loop.py`` (the training step and loop). Public entry points, imported lazily so
that ``import ufarsap_engine.trainer`` stays cheap (Megatron is imported only when training):

- ``train(model_cfg, train_cfg, data_spec=None, objective=None, callbacks=None) -> dict``
- ``launch_torchrun(nproc, spec_path, *, timeout=None, env=None, check=True) -> int``
- ``generate_from_checkpoint(checkpoint, prompts, params=None, train_cfg=None)``
- ``import_hf(hf_dir, out_ckpt)`` / ``export_hf(ckpt, out_dir)``
- configs: ``ModelConfig``, ``TrainConfig``, ``DataSpec``, ``RunSpec``, ``model_preset``
- the loss plug point: ``Objective``, ``MLEObjective``
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "train": "worker", "launch_torchrun": "worker", "generate_from_checkpoint": "worker",
    "RunSpec": "worker", "GenerateSpec": "worker", "ImportRef": "worker", "load_spec": "worker",
    "write_spec": "worker", "parse_config": "worker", "preflight": "worker", "read_worker_error": "worker",
    "ModelConfig": "model_config", "TrainConfig": "model_config", "model_preset": "model_config",
    "PRESETS": "model_config", "validate_layout": "model_config",
    "DataSpec": "data", "Batch": "data", "default_corpus_path": "data",
    "Objective": "objective", "MLEObjective": "objective", "ModelOutputs": "objective",
    "SamplingParams": "generate", "Generation": "generate",
    "import_hf": "hf_interop", "export_hf": "hf_interop",
    "apply_cpu_compat": "cpu_compat",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
