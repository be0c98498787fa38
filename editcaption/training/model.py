"""Model, processor and trainer arguments for a training worker, built from a `TrainJobConfig`.

Order matters under ZeRO-3: the trainer arguments are created first (they register the DeepSpeed
config with transformers), so the model that follows is loaded already partitioned across ranks.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from editcaption.training.config import MOE_EXPERT_PARAMETERS, TrainJobConfig

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig
    from transformers import PreTrainedModel, ProcessorMixin

log = logging.getLogger(__name__)

# Parameter-name prefixes of the vision tower and of the vision-language merger (incl. deepstack mergers).
_VISION_PREFIX = "visual."
_PROJECTOR_PARTS = ("visual.merger.", "visual.deepstack_merger_list.")


def trainer_kwargs(cfg: TrainJobConfig, output_dir: str) -> dict[str, Any]:
    """Keyword arguments shared by `SFTConfig` and `DPOConfig` (both `TrainingArguments`)."""
    return {
        "output_dir": output_dir,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "warmup_steps": cfg.warmup_ratio,  # a float below 1 is a share of the steps
        "weight_decay": cfg.weight_decay,
        "adam_beta2": cfg.adam_beta2,
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "bf16": cfg.bf16,
        "max_length": cfg.max_length,
        "logging_steps": cfg.logging_steps,
        "report_to": cfg.report_to,
        "seed": cfg.seed,
        "save_strategy": "steps",
        "save_steps": cfg.checkpoint.save_steps,
        # Local copies only: Ray Train keeps `checkpoint.keep` of them in storage.
        "save_total_limit": 1,
        "save_only_model": False,
        "deepspeed": cfg.deepspeed_config(),
        "router_aux_loss_coef": cfg.router_aux_loss_coef,
        # Ray Train already formed the process group; accelerate reuses the state built on it.
        "use_cpu": False,
        "accelerator_config": {"use_configured_state": True},
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }


def dtype(cfg: TrainJobConfig) -> torch.dtype:
    import torch

    return torch.bfloat16 if cfg.bf16 else torch.float32


def load_model(cfg: TrainJobConfig) -> PreTrainedModel:
    """The image-text-to-text model, frozen as configured, with MoE blocks as ZeRO-3 leaves."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=dtype(cfg))
    freeze(model, cfg)
    if cfg.zero_stage() == 3:
        register_moe_leaves(model, cfg.moe_leaf_modules)
    return model


def load_processor(cfg: TrainJobConfig) -> ProcessorMixin:
    from transformers import AutoProcessor

    # Qwen-VL image processors read the pixel budget from `size` (area bounds, not side lengths).
    budget = {"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels}
    return AutoProcessor.from_pretrained(cfg.model, size=budget)


def freeze(model: torch.nn.Module, cfg: TrainJobConfig) -> int:
    """Turn off gradients of the vision tower and/or projector; returns how many tensors were frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        inner = name.split("model.", 1)[-1] if name.startswith("model.") else name
        is_projector = inner.startswith(_PROJECTOR_PARTS)
        is_vision = inner.startswith(_VISION_PREFIX) and not is_projector
        if (cfg.freeze_vision and is_vision) or (cfg.freeze_projector and is_projector):
            param.requires_grad_(False)
            frozen += 1
    return frozen


def register_moe_leaves(model: torch.nn.Module, class_names: list[str] | None) -> list[str]:
    """Mark sparse MoE blocks as ZeRO-3 leaf modules; returns the class names registered.

    ZeRO-3 fetches parameters as modules run; a router sends each rank's tokens to different experts,
    so ranks would wait on different parameter gathers and hang. A leaf is gathered whole instead.
    """
    from deepspeed.utils import set_z3_leaf_modules

    classes = {type(m) for m in model.modules()}
    if class_names is None:
        chosen = [c for c in classes if c.__name__.endswith("SparseMoeBlock")]
    else:
        by_name = {c.__name__: c for c in classes}
        missing = sorted(set(class_names) - set(by_name))
        if missing:
            raise ValueError(f"moe_leaf_modules: the model has no module class named {missing}")
        chosen = [by_name[n] for n in class_names]
    if chosen:
        set_z3_leaf_modules(model, chosen)
    return sorted(c.__name__ for c in chosen)


def lora_config(cfg: TrainJobConfig, model: torch.nn.Module) -> LoraConfig | None:
    """PEFT's LoRA config for `model`: modules by `target_modules`, and the fused MoE expert tensors
    by `target_parameters` (resolved against the model when `auto`)."""
    if cfg.finetune != "lora":
        return None
    from peft import LoraConfig

    parameters = expert_parameters(model, cfg.lora.target_parameters)
    if parameters and cfg.lora.dropout:
        raise ValueError(
            f"lora: the model's experts ({', '.join(parameters)}) are LoRA targets, and PEFT cannot apply "
            "dropout to a wrapped parameter: set lora.dropout: 0 (or lora.target_parameters: [] to leave "
            "the experts frozen)"
        )
    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        target_parameters=parameters or None,
        task_type="CAUSAL_LM",
    )


def expert_parameters(model: torch.nn.Module, setting: str | list[str]) -> list[str]:
    """The `target_parameters` for `model`: the setting's list, or under `auto` the fused expert tensor
    suffixes that some parameter of the model ends with (none for a dense model)."""
    if setting != "auto":
        return list(setting)
    names = [name for name, _ in model.named_parameters()]
    return [suffix for suffix in MOE_EXPERT_PARAMETERS if any(n.endswith("." + suffix) for n in names)]


def is_moe(model: torch.nn.Module) -> bool:
    text = getattr(model.config, "text_config", model.config)
    return getattr(text, "num_experts", 0) > 0
