"""Entry points: in-process ``train(...)``, the ``torchrun`` worker, and ``launch_torchrun``.

- ``train(model_cfg, train_cfg, data_spec)`` trains in this process. Without ``torchrun`` it
  creates a private gloo group of size 1 on a free localhost port; under ``torchrun`` it joins
  the launched world. Returns the summary dict (also written to ``OUT/summary.json``).
- ``python -m ufarsap_engine.trainer.worker --spec FILE.json`` is what every ``torchrun``
  process runs; the spec is a :class:`RunSpec` (model, train, data, and the objective and
  callbacks as ``module:callable`` references, built inside each worker; or one ``runtime``
  reference whose result carries both, ``.objective`` and ``.callbacks``, so that they share
  their state without any global).
- ``launch_torchrun(nproc, spec_path)`` checks the spec in the calling process first (layout,
  device, data, tokenizer, checkpoint), so user mistakes are reported as one line without
  starting any worker, then runs ``torch.distributed.run --standalone`` (through
  ``launcher.py``, which keeps torchrun's failure traceback out of the way). The workers then
  print nothing themselves: the first failing rank records its one line and exit code in
  ``OUT/worker_error.json`` (2 user error, 1 failure) and the caller reports it once.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ufarsap_engine.errors import UserError

from .data import DataSpec, PackedDataset, get_tokenizer, load_documents, load_marks
from .interrupt import RECORD, Interrupted, forwarded, write_record
from .model_config import ModelConfig, TrainConfig, validate_layout

WORKER_ERROR = "worker_error.json"
#: Set by :func:`launch_torchrun`: the launching process reports the result, not each worker.
LAUNCHER_REPORTS_ENV = "UFARSAP_LAUNCHER_REPORTS"


def quiet_megatron_warnings() -> None:
    """Megatron warns at import that Transformer Engine / Apex are absent; that is expected."""
    for pat in (
        r".*Transformer Engine.*", r".*Apex is not installed.*", r".*apex.*",
        r".*full scope is deprecated.*", r".*deprecating ShardedTensor.*",
        r".*`load_state_dict` is deprecated.*", r".*CUDA_DEVICE_MAX_CONNECTIONS.*",
        r".*all_gather_into_tensor` is deprecated.*",
    ):
        warnings.filterwarnings("ignore", message=pat)


class ImportRef(BaseModel):
    """A ``module:callable`` to build inside each worker, with keyword arguments."""

    model_config = ConfigDict(extra="forbid")
    target: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    def build(self):
        mod, _, attr = self.target.partition(":")
        if not attr:
            raise UserError(f"'{self.target}' is not a 'module:callable' reference")
        try:
            obj = importlib.import_module(mod)
        except ImportError as e:
            raise UserError(f"cannot import '{mod}' for '{self.target}': {e}") from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise UserError(f"'{mod}' has no attribute '{attr}'")
            obj = getattr(obj, part)
        return obj(**self.kwargs)


class GenerateSpec(BaseModel):
    """Sampling from a checkpoint (``task: "generate"``)."""

    model_config = ConfigDict(extra="forbid")
    checkpoint: str | None = None  # None -> OUT/checkpoints (latest)
    prompts: list[str]
    max_new_tokens: int = Field(default=32, gt=0)
    temperature: float = Field(default=0.0, ge=0.0)
    top_k: int = Field(default=0, ge=0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop_token_ids: list[int] = Field(default_factory=list)
    seed: int = 0
    tag_aware: bool | None = None  # None: on for a checkpoint trained with harmfulness tags
    kv_cache: bool = True  # False: recompute the whole sequence per token (slow; a reference)
    output: str | None = None  # None -> OUT/generations.jsonl

    def params(self):
        from .generate import SamplingParams

        return SamplingParams(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_k=self.top_k,
            top_p=self.top_p, stop_token_ids=list(self.stop_token_ids), seed=self.seed, tag_aware=self.tag_aware,
            kv_cache=self.kv_cache,
        )


class RunSpec(BaseModel):
    """Everything a worker needs (the file passed with ``--spec``)."""

    model_config = ConfigDict(extra="forbid")
    task: Literal["train", "generate"] = "train"
    model: ModelConfig | None = None  # required for training; generation reads the checkpoint's
    train: TrainConfig
    data: DataSpec = Field(default_factory=DataSpec)
    objective: ImportRef | None = None
    callbacks: list[ImportRef] = Field(default_factory=list)
    runtime: ImportRef | None = Field(None, description="builds one object with .objective and .callbacks "
                                                        "(and .policy_phase, the on-policy phase, or None)")
    policy_phase: ImportRef | None = Field(None, description="the on-policy phase, when no runtime brings one")
    generate: GenerateSpec | None = None

    @model_validator(mode="after")
    def _task_fields(self) -> "RunSpec":
        if self.task == "train" and self.model is None:
            raise ValueError("a training spec needs 'model'")
        if self.runtime is not None and self.objective is not None:
            raise ValueError("give 'runtime' (which brings its objective) or 'objective', not both")
        if self.task == "generate" and self.generate is None:
            raise ValueError("a generation spec needs 'generate'")
        return self


def _validation_line(e: ValidationError, what: str) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ())) or what
    return f"invalid {what}: {loc}: {err.get('msg', 'invalid value')}"


def parse_config(cls, data: dict, what: str | None = None):
    """Build a pydantic config (``ModelConfig``, ``TrainConfig``, ``DataSpec``, ``RunSpec``)
    from a dict; a validation error becomes a one-line UserError."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise UserError(_validation_line(e, what or cls.__name__)) from None


def load_spec(path: str | os.PathLike) -> RunSpec:
    p = Path(path)
    if not p.exists():
        raise UserError(f"spec file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None
    return parse_config(RunSpec, data, "run spec")


def write_spec(spec: RunSpec, path: str | os.PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # only the owner may read a run's spec
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(spec.model_dump_json(indent=1))
    return p


# --------------------------------------------------------------------------------------------
# In-process training


def effective_data_spec(data_spec: DataSpec, train_cfg: TrainConfig) -> DataSpec:
    """Without a tokenizer of the run's own yet, use the one saved in the checkpoint the run
    starts from (resume, else ``init_from``): token ids must mean the same thing."""
    from .checkpoint import TOKENIZER, find_latest, resolve_checkpoint

    if data_spec.tokenizer or (train_cfg.out_path / TOKENIZER).exists():
        return data_spec
    start = find_latest(train_cfg.out_path / "checkpoints") if train_cfg.resume else None
    if start is None and train_cfg.init_from:
        start = resolve_checkpoint(train_cfg.init_from)
    if start is None or not (start / TOKENIZER).exists():
        return data_spec
    return data_spec.model_copy(update={"tokenizer": str(start / TOKENIZER)})


def _dataset_for_rank(model_cfg: ModelConfig, train_cfg: TrainConfig, data_spec: DataSpec, docs=None) -> PackedDataset:
    """All ranks read the documents; rank 0 trains/saves the tokenizer first, then the others
    load it (a failure on rank 0 is re-raised on every rank instead of hanging them)."""
    import torch.distributed as dist

    from .checkpoint import _agree

    data_spec = effective_data_spec(data_spec, train_cfg)
    docs = docs if docs is not None else load_documents(data_spec)
    run_dir = train_cfg.out_path
    box: dict = {}

    def first():
        box["tok"] = get_tokenizer(data_spec, docs, model_cfg.vocab_size, run_dir, is_writer=True)

    _agree(first)
    tok = box.get("tok")
    if dist.get_rank() != 0:
        tok = get_tokenizer(data_spec, docs, model_cfg.vocab_size, run_dir, is_writer=False)
    return PackedDataset(docs, tok, model_cfg.seq_length, load_marks(data_spec.marks) if data_spec.marks else None)


def build_state(model_cfg: ModelConfig, train_cfg: TrainConfig, data_spec: DataSpec, objective=None, callbacks=None, info=None, docs=None,
                policy_phase=None):
    """Build model, optimizer, scheduler, data and (if any) restore a checkpoint. Needs
    ``init_parallel`` to have run (pass its ``ParallelInfo``); ``docs``: already-read documents."""
    import torch

    from .checkpoint import agree_resumable, load_checkpoint, resolve_checkpoint
    from .data import StepBatches
    from .loop import TrainState, restore_extra_state
    from .model import build_model, build_optimizer, build_scheduler
    from .objective import MLEObjective, extra_modules_of

    if policy_phase is not None:
        policy_phase.check(model_cfg.seq_length)
    ds = _dataset_for_rank(model_cfg, train_cfg, data_spec, docs)
    built = build_model(model_cfg, train_cfg)
    optimizer = build_optimizer(built, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg)
    data = StepBatches(ds, train_cfg.seed, train_cfg.global_batch_size, train_cfg.micro_batch_size, info.dp, info.dp_rank)
    objective = objective if objective is not None else MLEObjective()
    extra = extra_modules_of(objective)
    for m, _ in extra:
        m.to(info.device)
    extra_opts = [torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0) for m, lr in extra]
    state = TrainState(
        model_cfg=model_cfg, train_cfg=train_cfg, info=info, built=built, optimizer=optimizer,
        scheduler=scheduler, data=data, objective=objective, extra_modules=extra,
        extra_optimizers=extra_opts, callbacks=list(callbacks or []), policy_phase=policy_phase,
    )
    latest = agree_resumable(train_cfg.out_path / "checkpoints") if train_cfg.resume else None
    if latest is not None:
        restore_extra_state(state, load_checkpoint(state, latest, full=True, verified=True))
    elif train_cfg.init_from:
        load_checkpoint(state, resolve_checkpoint(train_cfg.init_from), full=False)
    return state


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    data_spec: DataSpec | None = None,
    objective=None,
    callbacks=None,
    policy_phase=None,
) -> dict:
    """Train in this process (world size 1, or one rank of a torchrun world). Returns the
    summary dict. Resumes from ``OUT/checkpoints/latest`` when present (``train_cfg.resume``)."""
    from .loop import run_training
    from .parallel import init_parallel, teardown_parallel

    from .parallel import check_device

    quiet_megatron_warnings()
    data_spec = data_spec or DataSpec()
    check_device(train_cfg.device)
    docs = load_documents(effective_data_spec(data_spec, train_cfg))  # data errors before any setup
    info = None
    try:
        info = init_parallel(model_cfg, train_cfg)
        state = build_state(model_cfg, train_cfg, data_spec, objective, callbacks, info, docs, policy_phase)
        return run_training(state)
    finally:
        teardown_parallel(info)


def generate_from_checkpoint(checkpoint: str | os.PathLike, prompts: list[str], params=None, train_cfg: TrainConfig | None = None):
    """Load a checkpoint (at the layout of ``train_cfg``: tp, pp, device) and sample from it.

    In-process at world size 1, or on every rank of a torchrun world (collective). Returns a
    list of :class:`~ufarsap_engine.trainer.generate.Generation`."""
    from .checkpoint import checkpoint_model_config, checkpoint_tokenizer_path, load_model_weights, resolve_checkpoint, verify_checkpoint
    from .data import load_tokenizer
    from .generate import generate
    from .model import build_gpt
    from .parallel import init_parallel, teardown_parallel

    quiet_megatron_warnings()
    train_cfg = train_cfg or TrainConfig()
    ckpt = verify_checkpoint(resolve_checkpoint(checkpoint))
    model_cfg = ModelConfig(**checkpoint_model_config(ckpt))
    tokenizer = load_tokenizer(checkpoint_tokenizer_path(ckpt))
    prompts, params = condition_on_training(tokenizer, prompts, params)
    info = None
    try:
        info = init_parallel(model_cfg, train_cfg, check_batch=False)
        from megatron.core import parallel_state as ps

        gpt, _ = build_gpt(model_cfg, train_cfg, ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage())
        load_model_weights(gpt, ckpt, verified=True)
        return generate(gpt, tokenizer, prompts, params)
    finally:
        teardown_parallel(info)


def condition_on_training(tokenizer, prompts: list, params=None):
    """What a checkpoint's data-side family asks of sampling, read from its tokenizer's special
    tokens: a conditionally trained model (``<|aligned|>``/``<|misaligned|>``) gets ``<|aligned|>``
    before every prompt; a tag-trained one (``<|harmful|>``) decodes tag-aware unless told not to."""
    from dataclasses import replace

    from ufarsap_engine.alignment.data_families import ALIGNED, HARMFUL, MISALIGNED

    from .data import special_tokens
    from .generate import SamplingParams

    params = params or SamplingParams()
    specials = special_tokens(tokenizer)
    if ALIGNED in specials and MISALIGNED in specials:
        aligned = tokenizer.token_to_id(ALIGNED)
        prompts = [ALIGNED + p if isinstance(p, str) else [aligned, *p] for p in prompts]
    tag = tokenizer.token_to_id(HARMFUL) if HARMFUL in specials else None
    if params.tag_aware and tag is None:
        raise UserError("tag-aware decoding needs a checkpoint trained with harmfulness tags "
                        "(objective.families.PARADIGM=tags); this one has no <|harmful|> token")
    return prompts, replace(params, tag_token_id=tag, tag_aware=tag is not None and params.tag_aware is not False)


def _run_generate(spec: RunSpec) -> dict:
    from dataclasses import asdict

    g = spec.generate
    ckpt = g.checkpoint or str(spec.train.out_path / "checkpoints")
    gens = generate_from_checkpoint(ckpt, g.prompts, g.params(), spec.train)
    out = Path(g.output) if g.output else spec.train.out_path / "generations.jsonl"
    if int(os.environ.get("RANK", "0")) == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(asdict(x)) + "\n" for x in gens))
    return {"generations": len(gens), "output": str(out)}


def run_spec(spec: RunSpec) -> dict:
    if spec.task == "generate":
        return _run_generate(spec)
    objective = spec.objective.build() if spec.objective else None
    callbacks = []
    policy_phase = spec.policy_phase.build() if spec.policy_phase else None
    if spec.runtime is not None:
        runtime = spec.runtime.build()
        objective, callbacks = runtime.objective, list(runtime.callbacks)
        policy_phase = getattr(runtime, "policy_phase", None) or policy_phase
    callbacks += [c.build() for c in spec.callbacks]
    return train(spec.model, spec.train, spec.data, objective, callbacks, policy_phase)


# --------------------------------------------------------------------------------------------
# torchrun


def preflight(spec: RunSpec, nproc: int) -> None:
    """Everything that can be checked before starting workers; also trains and saves the
    tokenizer once (workers then load ``OUT/tokenizer.json``)."""
    from .checkpoint import find_resumable, resolve_checkpoint, verify_checkpoint
    from .parallel import check_device

    check_device(spec.train.device)
    if spec.task == "generate":
        ckpt = verify_checkpoint(resolve_checkpoint(spec.generate.checkpoint or spec.train.out_path / "checkpoints"))
        from .checkpoint import checkpoint_model_config

        model_cfg = ModelConfig(**checkpoint_model_config(ckpt))
        validate_layout(model_cfg, spec.train, nproc, check_batch=False)
        return
    validate_layout(spec.model, spec.train, nproc)
    data_spec = effective_data_spec(spec.data, spec.train)
    docs = load_documents(data_spec)
    tok = get_tokenizer(data_spec, docs, spec.model.vocab_size, spec.train.out_path, is_writer=True)
    PackedDataset(docs, tok, spec.model.seq_length, load_marks(data_spec.marks) if data_spec.marks else None)
    latest = find_resumable(spec.train.out_path / "checkpoints") if spec.train.resume else None
    if latest is None and spec.train.init_from:
        verify_checkpoint(resolve_checkpoint(spec.train.init_from))
    for ref in [r for r in (spec.objective, spec.runtime) if r] + list(spec.callbacks):
        mod = ref.target.partition(":")[0]
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise UserError(f"cannot import '{mod}' for '{ref.target}': {e}") from None


def launch_torchrun(
    nproc: int,
    spec_path: str | os.PathLike,
    *,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> int:
    """Run the worker on ``nproc`` local processes with ``torch.distributed.run --standalone``
    (``python -m ufarsap_engine.trainer.launcher --standalone --nproc_per_node N -m
    ufarsap_engine.trainer.worker --spec SPEC``).

    Raises UserError (one line) for what the preflight finds. Returns the exit code: 0 ok,
    2 user error or 1 failure reported by the workers (``read_worker_error(out_dir)`` has the
    line; the workers print neither it nor the summary),
    124 timeout (the whole process group is killed), 128+N killed by signal N, else failure.
    ``check=False`` skips the preflight."""
    spec = load_spec(spec_path)
    if check:
        preflight(spec, nproc)
    out = spec.train.out_path
    out.mkdir(parents=True, exist_ok=True)
    (out / WORKER_ERROR).unlink(missing_ok=True)
    (out / RECORD).unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "ufarsap_engine.trainer.launcher", "--standalone",
        "--nproc_per_node", str(nproc),
        "-m", "ufarsap_engine.trainer.worker", "--spec", str(spec_path),
    ]
    run_env = dict(os.environ)
    if spec.train.device == "cpu":
        run_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    run_env.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_env[LAUNCHER_REPORTS_ENV] = "1"
    # SIGINT/SIGTERM reach torchrun (forwarded below), which passes them to the workers and
    # waits this long for them to save a checkpoint before it kills them.
    run_env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "600")
    run_env.update(env or {})
    proc = subprocess.Popen(cmd, env=run_env, start_new_session=True)
    try:
        with forwarded(proc.pid):
            rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return 124
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        raise
    if rc != 0 and (out / WORKER_ERROR).exists():
        return int(json.loads((out / WORKER_ERROR).read_text()).get("exit_code", 2))
    return rc


def read_worker_error(out_dir: str | os.PathLike) -> str | None:
    """The one-line error the workers reported, if any."""
    p = Path(out_dir) / WORKER_ERROR
    if not p.exists():
        return None
    return json.loads(p.read_text()).get("message")


def _record_error(spec: RunSpec | None, rank: int, message: str, exit_code: int) -> bool:
    """Write ``OUT/worker_error.json`` unless another rank already did (the first error is the
    cause; later ones are usually other ranks losing their peer). True if this rank wrote it."""
    if spec is None:
        return True
    out = spec.train.out_path
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{WORKER_ERROR}.{rank}.tmp"
    tmp.write_text(json.dumps({"message": message, "rank": rank, "exit_code": exit_code}))
    try:
        os.link(tmp, out / WORKER_ERROR)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    quiet_megatron_warnings()
    ap = argparse.ArgumentParser(prog="python -m ufarsap_engine.trainer.worker")
    ap.add_argument("--spec", required=True, help="RunSpec JSON file")
    args = ap.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    # Launched by ``ufarsap-engine run``: the launching process prints the summary and the one
    # error line; the workers only record them, so nothing appears once per rank.
    reported_by_launcher = os.environ.get(LAUNCHER_REPORTS_ENV) == "1"
    spec = None
    try:
        spec = load_spec(args.spec)
        summary = run_spec(spec)
        if rank == 0 and not reported_by_launcher:
            print(json.dumps({"summary": summary}), flush=True)
        return 0
    except Interrupted as e:
        if rank == 0:
            if spec is not None:
                write_record(spec.train.out_path, e)
            print(f"{e}; resume with the same command", file=sys.stderr, flush=True)
        return e.exit_code
    except Exception as e:  # every failure becomes one recorded line; tracebacks on request
        from ufarsap_engine.errors import EngineError

        if isinstance(e, EngineError):
            message, code = str(e), e.exit_code
        else:
            if os.environ.get("UFARSAP_DEBUG"):
                traceback.print_exc()
            message, code = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}", 1
        first = _record_error(spec, rank, message, code)
        if not reported_by_launcher and (rank == 0 or first):
            print(f"error: {message}", file=sys.stderr, flush=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
