"""Launch a TRL trainer on Ray Train: one worker per rank, checkpoints persisted and resumable.

The driver checks the run folder, then starts a `TorchTrainer` whose workers each build the job's TRL
trainer (`build_trainer`), report every checkpoint to Ray Train, resume from the latest one when Ray
Train has one (a rerun with `resume`, or a restart after a worker failure) and write the final model.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from editcaption.io.fs import is_uri, open_fs
from editcaption.redaction import redact
from editcaption.training.config import TrainJobConfig

if TYPE_CHECKING:
    from transformers import Trainer

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
SUMMARY_NAME = "training_summary.json"
RUN_MEAN_PREFIXES = ("hae/", "rewards/")  # logged metrics averaged over the run into the summary
TENSORBOARD_DIR = "tensorboard"
BuildTrainer = Callable[[TrainJobConfig, str, str], "Trainer"]


class RunExistsError(ValueError):
    """The run already has checkpoints and `resume` was not asked for."""


def run_uri(cfg: TrainJobConfig) -> str:
    """Where Ray Train keeps this run: `storage_path/name` (local paths made absolute)."""
    return posixpath.join(storage_path(cfg), cfg.name)


def storage_path(cfg: TrainJobConfig) -> str:
    return cfg.storage_path if is_uri(cfg.storage_path) else os.path.abspath(cfg.storage_path)


def reported_checkpoints(cfg: TrainJobConfig) -> list[str]:
    """Names of the checkpoints Ray Train holds for the run, oldest first."""
    fs, path = open_fs(run_uri(cfg))
    if not fs.isdir(path):
        return []
    names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
    return sorted(n for n in names if n.startswith(CHECKPOINT_PREFIX))


def check_run_folder(cfg: TrainJobConfig) -> None:
    """Refuse to start over a run that has checkpoints unless asked to resume it."""
    existing = reported_checkpoints(cfg)
    if existing and not cfg.resume:
        raise RunExistsError(
            f"name: run {cfg.name!r} already has {len(existing)} checkpoint(s) in {run_uri(cfg)} "
            f"(latest {existing[-1]}); pass --resume to continue it, or choose another name"
        )
    if cfg.resume and not existing:
        log.warning("resume: run %r has no checkpoint yet; starting from step 0", cfg.name)


def launch(cfg: TrainJobConfig, build_trainer: BuildTrainer, data_uri: str) -> dict[str, Any]:
    """Run `build_trainer`'s trainer on Ray Train workers; returns the final metrics and paths."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from editcaption.ray_setup import init_ray

    check_run_folder(cfg)
    init_ray(cfg.ray_address)
    workers = cfg.workers
    resources = {"CPU": workers.cpus_per_worker, **workers.resources_per_worker}
    if cfg.on_gpu:
        resources["GPU"] = workers.gpus_per_worker
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "config": cfg,
            "build_trainer": build_trainer,
            "data_uri": data_uri,
            # Same-node ranks share one scratch folder per launch, as the HF checkpoint layout expects.
            "attempt": uuid.uuid4().hex[:12],
        },
        scaling_config=ScalingConfig(
            num_workers=workers.num_workers, use_gpu=cfg.on_gpu, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if cfg.on_gpu else "gloo"),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=storage_path(cfg),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
            failure_config=FailureConfig(max_failures=workers.max_failures),
            worker_runtime_env={"env_vars": _worker_env()},
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    return {
        "metrics": result.metrics,  # those reported with the latest checkpoint
        "final": read_summary(cfg),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "run": run_uri(cfg),
        "output": cfg.output,
    }


def _worker_env() -> dict[str, str]:
    """Offline and tokenizer settings the workers inherit from the driver."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM")
    return {k: os.environ[k] for k in keys if k in os.environ}


def _worker_loop(loop_config: dict[str, Any]) -> None:
    import ray.train

    from editcaption.training.export import save_final_model

    cfg: TrainJobConfig = loop_config["config"]
    configure_accelerate(cfg)
    scratch = Path(cfg.scratch_dir or tempfile.gettempdir()) / "editcaption-train"
    output_dir = scratch / f"{cfg.name}-{loop_config['attempt']}"
    if "tensorboard" in cfg.report_to:
        # Scratch is freed at the end, so TensorBoard writes there and its files are copied beside the model.
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(output_dir / TENSORBOARD_DIR))
    trainer = loop_config["build_trainer"](cfg, loop_config["data_uri"], str(output_dir))
    trainer.add_callback(ReportCheckpoints())
    checkpoint = ray.train.get_checkpoint()
    resumed_from = 0
    if checkpoint is None:
        result = trainer.train()
    else:
        with checkpoint.as_directory() as folder:
            resumed_from = _checkpoint_step(folder)
            log.info("resuming from %s (step %d)", folder, resumed_from)
            result = trainer.train(resume_from_checkpoint=folder)
    save_final_model(trainer, cfg)
    summary = {
        **_numbers(result.metrics),
        **run_means(trainer.state.log_history, RUN_MEAN_PREFIXES),
        "step": trainer.state.global_step,
        "resumed_from_step": resumed_from,
    }
    if trainer.accelerator.is_main_process:
        write_summary(cfg, summary)
        keep_tensorboard_logs(output_dir / TENSORBOARD_DIR, cfg.output)
    if ray.train.get_context().get_local_rank() == 0:
        # Every checkpoint is in storage and the model in `output`: free the node's scratch disk.
        shutil.rmtree(output_dir, ignore_errors=True)


def keep_tensorboard_logs(local: Path, output: str) -> None:
    """Copy TensorBoard's event files from the node's scratch to `output/tensorboard` (local or URI)."""
    if not local.is_dir():
        return
    fs, path = open_fs(posixpath.join(output, TENSORBOARD_DIR))
    fs.put(str(local), path, recursive=True)


def write_summary(cfg: TrainJobConfig, metrics: dict[str, float]) -> None:
    """`training_summary.json` beside the final model: the final metrics and the config that made it."""
    fs, path = open_fs(posixpath.join(cfg.output, SUMMARY_NAME))
    with fs.open(path, "w") as f:
        json.dump({"metrics": metrics, "config": redact(cfg.model_dump(mode="json"))}, f, indent=1)


def read_summary(cfg: TrainJobConfig) -> dict[str, float] | None:
    """The final metrics from `training_summary.json`; None where the driver cannot see the output
    (a local folder on another node)."""
    fs, path = open_fs(posixpath.join(cfg.output, SUMMARY_NAME))
    if not fs.isfile(path):
        return None
    with fs.open(path) as f:
        return json.load(f)["metrics"]


def _checkpoint_step(folder: str) -> int:
    state = Path(folder) / "trainer_state.json"
    return int(json.loads(state.read_text())["global_step"]) if state.is_file() else 0


def configure_accelerate(cfg: TrainJobConfig) -> Any:
    """Build accelerate's state on the process group Ray Train formed, as a DeepSpeed state if used.

    Left to itself, accelerate would see CPU ranks as one process: it would skip DeepSpeed, and
    without DeepSpeed each rank would train alone. Without DeepSpeed on CPU the state must be asked
    for as a CPU state to become multi-process (DDP over gloo).
    """
    from accelerate import PartialState

    if cfg.deepspeed_config() is not None:
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        return PartialState(backend="nccl" if cfg.on_gpu else "gloo")
    if cfg.on_gpu:
        return PartialState(backend="nccl")
    return PartialState(cpu=True, backend="gloo")


class ReportCheckpoints(TrainerCallback):
    """Report each saved checkpoint and the latest logged metrics to Ray Train.

    Every rank calls `ray.train.report` (it is a barrier); on each node the local rank 0 hands over
    the node's checkpoint folder once all ranks finished writing it, and Ray Train merges the nodes'
    folders into one checkpoint in storage.
    """

    def __init__(self) -> None:
        self.latest: dict[str, float] = {}

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.latest.update(_numbers(logs or {}))

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        import ray.train
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
        folder = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
        checkpoint = None
        if ray.train.get_context().get_local_rank() == 0 and folder.is_dir():
            checkpoint = ray.train.Checkpoint.from_directory(str(folder))
        ray.train.report(
            {**self.latest, "step": state.global_step, "epoch": state.epoch or 0.0},
            checkpoint=checkpoint,
            checkpoint_dir_name=f"{CHECKPOINT_PREFIX}{state.global_step:07d}",
        )


def run_means(log_history: list[dict[str, Any]], prefixes: tuple[str, ...]) -> dict[str, float]:
    """Mean over every logging step of the logged metrics whose names start with one of `prefixes`.

    Why: the trainer's final metrics hold only the loss and timings, and Ray Train's only the last
    logging step's values; a run's per-error-type margins and reward margins are read over the whole
    run (a HAE-DPO job that trained with zero margins shows it here).
    """
    values: dict[str, list[float]] = {}
    for entry in log_history:
        for key, value in _numbers(entry).items():
            if key.startswith(prefixes):
                values.setdefault(key, []).append(value)
    return {f"run_mean/{key}": sum(v) / len(v) for key, v in values.items()}


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
