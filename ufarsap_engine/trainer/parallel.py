"""Process group, Megatron model-parallel groups and seeds, in the order Megatron requires.

``init_parallel`` works both under ``torchrun`` (reads ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``)
and in-process at world size 1 (a private gloo group on a free localhost port), so tests and the
CLI can train without a launcher. Every collective gets a timeout (``dist_timeout_s``) so a
broken peer ends the run with an error instead of hanging for ever.
"""

from __future__ import annotations

import datetime
import os
import random
import socket
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ufarsap_engine.errors import UserError

from .model_config import ModelConfig, TrainConfig, validate_layout


@dataclass
class ParallelInfo:
    """Where this process sits in the world and in the TP x PP x DP grid."""

    rank: int
    world_size: int
    local_rank: int
    tp: int
    pp: int
    dp: int
    tp_rank: int
    pp_rank: int
    dp_rank: int
    device: torch.device
    owns_process_group: bool  # True when init_parallel created it (then teardown destroys it)

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp - 1

    @property
    def is_logging_rank(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A TCP port free on localhost right now (for a world-size-1 process group)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_device(device: str) -> None:
    """``cuda`` on a machine without CUDA is a user error, reported before anything starts."""
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "device 'cuda' was requested but no CUDA GPU is available here "
            "(torch.cuda.is_available() is False); use --device cpu"
        )


def seed_everything(seed: int, device: str) -> None:
    """Seed python, numpy, torch and Megatron's model-parallel RNG tracker.

    On the CPU the tracker is created with ``inference_rng_tracker=True`` (a tracker that needs no
    CUDA generator); dropout defaults to 0, so no training maths depends on it."""
    from megatron.core import tensor_parallel

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(
        seed, inference_rng_tracker=(device == "cpu"), force_reset_rng=True
    )


def init_parallel(model_cfg: ModelConfig, train_cfg: TrainConfig, check_batch: bool = True) -> ParallelInfo:
    """Create (or join) the process group, Megatron's TP/PP/DP groups, and seed everything.

    Checks the device and the layout first, so a user mistake costs no process-group setup.
    """
    check_device(train_cfg.device)
    if dist.is_initialized():
        world_size = dist.get_world_size()
    else:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    validate_layout(model_cfg, train_cfg, world_size, check_batch)

    from .cpu_compat import apply_cpu_compat

    if train_cfg.device == "cpu":
        apply_cpu_compat()

    timeout = datetime.timedelta(seconds=train_cfg.dist_timeout_s)
    backend = "nccl" if train_cfg.device == "cuda" else "gloo"
    owns = False

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if train_cfg.device == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")

    if not dist.is_initialized():
        if "MASTER_ADDR" in os.environ and "RANK" in os.environ:
            dist.init_process_group(backend=backend, timeout=timeout)
        else:
            dist.init_process_group(
                backend=backend,
                init_method=f"tcp://127.0.0.1:{free_port()}",
                rank=0,
                world_size=1,
                timeout=timeout,
            )
        owns = True

    from megatron.core import parallel_state as ps

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    ps.initialize_model_parallel(
        tensor_model_parallel_size=train_cfg.tp,
        pipeline_model_parallel_size=train_cfg.pp,
        distributed_timeout_minutes=max(1, train_cfg.dist_timeout_s // 60),
    )
    seed_everything(train_cfg.seed, train_cfg.device)
    return ParallelInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        tp=train_cfg.tp,
        pp=train_cfg.pp,
        dp=ps.get_data_parallel_world_size(),
        tp_rank=ps.get_tensor_model_parallel_rank(),
        pp_rank=ps.get_pipeline_model_parallel_rank(),
        dp_rank=ps.get_data_parallel_rank(),
        device=device,
        owns_process_group=owns,
    )


def teardown_parallel(info: ParallelInfo | None) -> None:
    """Destroy Megatron's groups, and the process group if ``init_parallel`` created it."""
    from megatron.core import parallel_state as ps

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    if info is not None and info.owns_process_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
