"""What every training job shares: model, fine-tuning mode, DeepSpeed, schedule, workers, storage, checkpoints.

`SFTJobConfig` (sft.py) and `DPOJobConfig` (dpo.py) add their own fields. Everything a run needs is in
the YAML, so a job is reproduced from its config alone; unknown keys are errors that name the field.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from editcaption.paths import ConfigPath, InputPath, ModelPath, OptionalOutputPath, OutputPath

DEEPSPEED_PRESETS = ("zero2", "zero3", "zero3_offload")
# A preset name, or a DeepSpeed JSON file (a path only then).
DeepSpeedSetting = Annotated[str, ConfigPath("input", only_suffixes=(".json",))]
# LoRA on the language model only: the vision tower's fused `qkv` is not a target, and vLLM could not
# apply an adapter there anyway (the final model is merged).
DEFAULT_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
# The fused expert tensors of transformers 5's MoE blocks (Qwen3-VL-MoE, GLM-4.5V), as parameter-name suffixes.
MOE_EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Strict):
    """PEFT LoRA settings, used when `finetune: lora`."""

    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha; the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter's input.")
    target_modules: str | list[str] = Field(
        DEFAULT_LORA_TARGETS,
        description="Module names (list) or one regex; the default covers the language model's "
        "attention and MLP projections and nothing in the vision tower.",
    )
    target_parameters: Literal["auto"] | list[str] = Field(
        "auto",
        description="Parameters LoRA wraps directly (PEFT's `target_parameters`, matched as name "
        "suffixes): the fused expert tensors of MoE models, which transformers 5 keeps as 3-D parameters "
        "that no `target_modules` entry reaches. `auto` targets `mlp.experts.gate_up_proj` and "
        "`mlp.experts.down_proj` when the model has them (Qwen3-VL-MoE) and nothing otherwise; `[]` leaves "
        "the experts frozen. PEFT wraps parameters only without dropout: MoE models need `dropout: 0`.",
    )
    merge: bool = Field(
        True,
        description="Merge the adapter into the base weights for the final model (vLLM serves it as "
        "a plain checkpoint); false keeps only the adapter.",
    )

    @model_validator(mode="after")
    def _parameters_without_dropout(self) -> LoraSettings:
        if isinstance(self.target_parameters, list) and self.target_parameters and self.dropout:
            raise ValueError(
                "target_parameters: PEFT cannot apply dropout to a wrapped parameter; set dropout: 0 "
                "(or target_parameters: [] to leave the experts frozen)"
            )
        return self


class WorkerSettings(_Strict):
    """Ray Train workers: one training process each."""

    num_workers: int = Field(2, ge=1, description="Training processes (data-parallel ranks).")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per worker; 0 trains on CPU with gloo.")
    cpus_per_worker: float = Field(1, gt=0, description="Logical CPUs each worker reserves.")
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict,
        description="Extra custom resources per worker, e.g. {'accelerator_type:H100': 0.001}.",
    )
    max_failures: int = Field(
        0,
        ge=-1,
        description="Worker-group restarts Ray Train attempts after a failure, each from the latest "
        "checkpoint; -1 retries forever.",
    )


class CheckpointSettings(_Strict):
    """When checkpoints are written and how many Ray Train keeps in `storage_path`."""

    save_steps: int = Field(
        500, ge=1, description="Save and report a checkpoint every this many optimizer steps."
    )
    keep: int | None = Field(2, ge=1, description="Checkpoints kept in storage (newest); null keeps all.")


class TrainJobConfig(_Strict):
    """Fields shared by the SFT and DPO jobs."""

    model: ModelPath = Field(description="Hub id or local folder of the Qwen3-VL checkpoint to start from.")
    input: InputPath = Field(description="Training data: a file or folder, local or object-store URI.")
    output: OutputPath = Field(description="Where the final Hugging Face model (and processor) is written.")
    name: str = Field(description="Run name: Ray Train keeps checkpoints under `storage_path/name`.")
    storage_path: OutputPath = Field(
        "runs/train",
        description="Ray Train storage for checkpoints and results: a local folder (shared by all "
        "nodes on a cluster) or an object-store URI such as s3://bucket/train.",
    )
    resume: bool = Field(
        False,
        description="Continue the run `name` from its latest checkpoint. Without it, a run that "
        "already has checkpoints is refused rather than silently restarted or mixed.",
    )
    finetune: Literal["full", "lora"] = Field("full", description="Train all weights, or LoRA adapters.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="Used when finetune is lora.")
    freeze_vision: bool = Field(True, description="Keep the vision tower's weights fixed.")
    freeze_projector: bool = Field(
        False, description="Keep the vision-language merger (projector) fixed, deepstack mergers included."
    )
    min_pixels: int = Field(
        32 * 32 * 4, gt=0, description="Processor's lower pixel budget per image (upscales below)."
    )
    max_pixels: int = Field(
        1024 * 32 * 32,
        gt=0,
        description="Processor's pixel budget per image; bounds the image tokens of each sample.",
    )
    deepspeed: DeepSpeedSetting = Field(
        "zero3",
        description="zero2, zero3 or zero3_offload (the JSON files shipped in "
        "editcaption/training/deepspeed/), `none`, or a path to a DeepSpeed JSON file.",
    )
    moe_leaf_modules: list[str] | None = Field(
        None,
        description="Module class names ZeRO-3 treats as leaves (gathered whole, so the router's "
        "data-dependent expert choice does not hang ranks); null picks every *SparseMoeBlock class.",
    )
    router_aux_loss_coef: float | None = Field(
        None,
        ge=0,
        description="Weight of the MoE load-balancing loss; null keeps the model config's own value. "
        "Dense models must leave it null.",
    )
    bf16: bool = Field(True, description="Train in bfloat16 (GPUs); false trains in float32 (CPU).")
    learning_rate: float = Field(1e-5, gt=0, description="Peak learning rate.")
    lr_scheduler_type: str = Field("cosine", description="Any transformers scheduler name.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    adam_beta2: float = Field(
        0.999,
        gt=0,
        lt=1,
        description="AdamW second-moment decay; 0.98 suits short from-scratch runs on tiny models.",
    )
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs over the data (ignored with max_steps).")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 runs the epochs.")
    per_device_train_batch_size: int = Field(1, ge=1, description="Samples per worker per micro-step.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-steps per optimizer step.")
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in backward to save memory."
    )
    max_length: int | None = Field(
        None,
        ge=1,
        description="Truncate samples to this many tokens; null never truncates (image tokens must "
        "not be cut, so bound them with max_pixels instead).",
    )
    logging_steps: int = Field(10, ge=1, description="Log metrics every this many steps.")
    report_to: list[str] = Field(
        default_factory=lambda: ["none"],
        description="Experiment trackers: tensorboard, wandb, mlflow (when installed), or none.",
    )
    seed: int = Field(0, description="Seed for data order, initialisation of adapters and dropout.")
    workers: WorkerSettings = Field(default_factory=WorkerSettings, description="Ray Train workers.")
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    scratch_dir: OptionalOutputPath = Field(
        None,
        description="Node-local folder for checkpoints before Ray Train persists them; null uses the "
        "system temp folder.",
    )
    ray_address: str | None = Field(None, description="Join this Ray cluster instead of starting one.")

    @field_validator("deepspeed")
    @classmethod
    def _known_deepspeed(cls, value: str) -> str:
        if value in (*DEEPSPEED_PRESETS, "none") or value.endswith(".json"):
            return value
        raise ValueError(
            f"unknown DeepSpeed config {value!r}: use one of {', '.join(DEEPSPEED_PRESETS)}, none, "
            "or a path to a .json file"
        )

    @field_validator("report_to")
    @classmethod
    def _known_trackers(cls, value: list[str]) -> list[str]:
        known = {"none", "tensorboard", "wandb", "mlflow", "trackio", "comet_ml", "clearml"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown tracker(s) {unknown}: use some of {sorted(known)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainJobConfig:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) exceeds max_pixels ({self.max_pixels})")
        if self.bf16 and self.workers.gpus_per_worker == 0:
            raise ValueError("bf16 needs GPUs: set bf16: false when workers.gpus_per_worker is 0")
        if self.deepspeed == "zero3_offload" and self.workers.gpus_per_worker == 0:
            raise ValueError("deepspeed zero3_offload offloads from GPUs: use zero3 when training on CPU")
        return self

    @property
    def on_gpu(self) -> bool:
        return self.workers.gpus_per_worker > 0

    def deepspeed_config(self) -> dict[str, Any] | None:
        """The DeepSpeed config as a dict (None for `none`); `auto` values are filled in by transformers.

        On CPU, communication overlap is turned off: gloo has no separate streams to overlap with.
        """
        if self.deepspeed == "none":
            return None
        if self.deepspeed in DEEPSPEED_PRESETS:
            text = resources.files("editcaption.training").joinpath(f"deepspeed/{self.deepspeed}.json")
            config = json.loads(text.read_text())
        else:
            path = Path(self.deepspeed)
            if not path.is_file():
                raise FileNotFoundError(f"deepspeed: no DeepSpeed config file at {path}")
            config = json.loads(path.read_text())
        if not self.on_gpu:
            config.setdefault("zero_optimization", {})["overlap_comm"] = False
        return config

    def zero_stage(self) -> int:
        config = self.deepspeed_config() or {}
        return int(config.get("zero_optimization", {}).get("stage", 0))
