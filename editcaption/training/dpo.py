"""Stage 2 post-training: DPO on preference pairs, with the HAE-DPO objective or plain sigmoid DPO.

Rows carry the rejected instruction's `error_type` and `severity`; HAE-DPO (`hae_dpo.py`) turns them
into a per-pair margin, plain DPO ignores them (the ablation). Rule-written hard negatives can be
mixed in at a configured ratio per given pair (issue #8).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from editcaption.training.config import TrainJobConfig
from editcaption.training.data import (
    DPO_FEATURES,
    add_hard_negatives,
    preference_rows,
    read_preference_pairs,
    write_rows,
)

if TYPE_CHECKING:
    from trl import DPOTrainer

log = logging.getLogger(__name__)


class HardNegativeSettings(BaseModel):
    """Rule-written rejected variants of the chosen instructions (`checks/hard_negatives.py`)."""

    model_config = ConfigDict(extra="forbid")

    ratio: float = Field(
        0.0, ge=0, description="Hard negatives added per given preference pair; 0 adds none."
    )
    seed: int = Field(0, description="Fixes which variants are drawn and the mixed order.")


class DPOJobConfig(TrainJobConfig):
    """`editcaption train dpo`: `PreferencePair` Parquet in (a file or a folder of files)."""

    objective: Literal["hae", "sigmoid"] = Field(
        "hae",
        description="hae: HAE-DPO with per-pair margins from severity, error type and hardness; "
        "sigmoid: TRL's standard DPO loss (the ablation), run as HAE-DPO with zero margins so that both "
        "log per-error-type reward margins under the same names.",
    )
    beta: float = Field(0.1, gt=0, description="DPO temperature on the log-ratio difference.")
    hae: dict[str, Any] = Field(
        default_factory=dict,
        description="HAE-DPO settings passed to HAEDPOConfig by name (severity_margins, type_margins, "
        "hardness_weight, margin_cap, ...; see hae_dpo.py); empty keeps its defaults. Must be empty "
        "for objective sigmoid.",
    )
    sft_loss_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of a negative log-likelihood term on the chosen answer (TRL's loss_type "
        "'sft', as in RPO), added to either objective; it keeps DPO from lowering the chosen answer "
        "along with the rejected one. 0: none.",
    )
    hard_negatives: HardNegativeSettings = Field(default_factory=HardNegativeSettings)
    learning_rate: float = Field(5e-7, gt=0, description="Peak learning rate (DPO wants a small one).")
    precompute_reference: bool = Field(
        False,
        description="Run the reference model once over the pairs in a Ray Data pass before training "
        "(`training/reference.py`, `workers.num_workers` actors with a worker's CPUs and GPUs) and store "
        "its log-probs with them; training then holds no reference model and runs no reference forward "
        "(the loss equals the on-the-fly reference's to 1e-5). false: TRL's reference on every step.",
    )


def prepare_dpo_data(cfg: DPOJobConfig) -> tuple[str, dict[str, int]]:
    """Read the pairs, mix in hard negatives, write the rows next to the run; returns (URI, counts)."""
    from editcaption.training.ray_train import run_uri

    pairs = read_preference_pairs(cfg.input)
    counts = {"pairs": len(pairs), "hard_negatives_added": 0}
    pairs, counts["hard_negatives_added"] = add_hard_negatives(
        pairs, cfg.hard_negatives.ratio, cfg.hard_negatives.seed
    )
    if counts["hard_negatives_added"]:
        log.info(
            "hard negatives: added %d to %d preference pairs", counts["hard_negatives_added"], counts["pairs"]
        )
    uri = f"{run_uri(cfg)}/prepared/dpo.parquet"
    counts["rows"] = write_rows(preference_rows(pairs), DPO_FEATURES, uri)
    return uri, counts


def trainer_classes(cfg: DPOJobConfig) -> tuple[type, type]:
    """(config class, trainer class): HAE-DPO's for both objectives, so both log the same per-error-type
    metrics; plain DPO runs it with every margin weight 0, which is TRL's sigmoid DPO to the last digit
    (tests/test_hae_dpo.py). HAE-DPO's margin weights are checked by name."""
    if {"loss_type", "loss_weights"} & set(cfg.hae):
        raise ValueError(
            "hae: set the chosen-answer NLL term with sft_loss_weight, not loss_type/loss_weights"
        )
    if cfg.objective == "sigmoid" and cfg.hae:
        raise ValueError("hae: margin weights are only used with objective hae")
    try:
        from editcaption.training.hae_dpo import HAEDPOConfig, HAEDPOTrainer
    except ImportError as e:
        raise ValueError(f"DPO needs editcaption.training.hae_dpo, which failed to import ({e})") from e
    import dataclasses

    known = {f.name for f in dataclasses.fields(HAEDPOConfig)}
    unknown = sorted(set(cfg.hae) - known)
    if unknown:
        raise ValueError(f"hae: HAEDPOConfig has no field(s) {unknown}")
    return HAEDPOConfig, HAEDPOTrainer


def objective_arguments(cfg: DPOJobConfig) -> dict[str, Any]:
    """The trainer-config fields that pick the loss: beta, HAE-DPO's margins, the loss terms."""
    extra = dict(cfg.hae) if cfg.objective == "hae" else dict(NO_MARGIN)
    extra["loss_type"] = ["sigmoid", "sft"] if cfg.sft_loss_weight else ["sigmoid"]
    extra["loss_weights"] = [1.0, cfg.sft_loss_weight] if cfg.sft_loss_weight else None
    return {"beta": cfg.beta, "precomputed_reference": cfg.precompute_reference, **extra}


# Plain DPO as HAE-DPO with no margin: every weight 0 (labels then optional).
NO_MARGIN = {"severity_margins": {}, "type_margins": {}, "hardness_weight": 0.0, "margin_cap": 0.0}


def build_dpo_trainer(cfg: DPOJobConfig, data_uri: str, output_dir: str) -> DPOTrainer:
    """The worker's DPO trainer (called inside each Ray Train worker).

    Full fine-tuning gets its reference model built here, so it gets the same MoE leaf modules as
    the policy; LoRA runs use the base model with the adapter disabled as the reference. With
    `precompute_reference` the rows carry the reference's log-probs and no reference model is built.
    """
    import ray.train

    from editcaption.training.data import load_rows
    from editcaption.training.model import load_model, load_processor, lora_config, trainer_kwargs

    config_class, trainer_class = trainer_classes(cfg)
    args = config_class(**trainer_kwargs(cfg, output_dir), **objective_arguments(cfg))
    rank = ray.train.get_context().get_world_rank()
    cache = os.path.join(output_dir, f"data-rank{rank}")
    model = load_model(cfg)
    return trainer_class(
        model=model,
        ref_model=load_model(cfg) if cfg.finetune == "full" and not cfg.precompute_reference else None,
        args=args,
        train_dataset=load_rows(data_uri, cache),
        processing_class=load_processor(cfg),
        peft_config=lora_config(cfg, model),
    )


def run_dpo(cfg: DPOJobConfig) -> dict[str, Any]:
    """Prepare the pairs, train on Ray Train, write the final model; returns metrics, counts, paths."""
    from editcaption.training.ray_train import check_run_folder, launch

    trainer_classes(cfg)  # a bad objective or margin weight fails here, before Ray starts
    check_run_folder(cfg)
    data_uri, counts = prepare_dpo_data(cfg)
    data: dict[str, Any] = dict(counts)
    if cfg.precompute_reference:
        from editcaption.training.reference import precompute_reference

        data_uri, data["reference_pass"] = precompute_reference(cfg, data_uri)
    return {**launch(cfg, build_dpo_trainer, data_uri), "data": data}
