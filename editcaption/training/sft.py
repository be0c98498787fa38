"""Stage 1 post-training: supervised fine-tuning of the captioner on SFT records, on Ray Train.

The loss is on the instruction only (TRL prompt-completion rows), never on the prompt or the images.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from editcaption.training.config import TrainJobConfig
from editcaption.training.data import (
    SFT_FEATURES,
    augment_mirrored,
    read_conversation_rows,
    read_sft_records,
    sft_rows,
    write_rows,
)

if TYPE_CHECKING:
    from trl import SFTTrainer

log = logging.getLogger(__name__)


class SFTJobConfig(TrainJobConfig):
    """`editcaption train sft`: SFT records (or a TRL export, or a synthesis output folder) in."""

    augment_mirrored: bool = Field(
        False,
        description="Add the mirrored copy (images flipped, left/right swapped in the instruction) of "
        "every record whose instruction states a horizontal direction and shows no mirror-sensitive "
        "content such as text (issue #8).",
    )
    prompt: Literal["instruction", "from_data"] = Field(
        "instruction",
        description="`instruction`: every record is asked with the project's instruction prompt (the "
        "captioner). `from_data`: the input is a TRL export whose own conversations are kept, the "
        "messages before the last reply as the prompt, with all of the row's images; this trains a "
        "scorer or judge on the prompts it is asked with (e.g. the EditScore prompts).",
    )

    @model_validator(mode="after")
    def _mirror_needs_instructions(self) -> SFTJobConfig:
        if self.prompt == "from_data" and self.augment_mirrored:
            raise ValueError("augment_mirrored needs prompt 'instruction': it rewrites instructions")
        return self


def prepare_sft_data(cfg: SFTJobConfig) -> tuple[str, dict[str, int]]:
    """Read, augment and write the training rows next to the run; returns (URI, counts)."""
    from editcaption.training.ray_train import run_uri

    uri = f"{run_uri(cfg)}/prepared/sft.parquet"
    if cfg.prompt == "from_data":
        rows = read_conversation_rows(cfg.input)
        return uri, {"records": len(rows), "mirrored_added": 0, "rows": write_rows(rows, SFT_FEATURES, uri)}
    records = read_sft_records(cfg.input)
    counts = {"records": len(records), "mirrored_added": 0}
    if cfg.augment_mirrored:
        records, counts["mirrored_added"] = augment_mirrored(records)
        log.info("mirrored augmentation added %d of %d records", counts["mirrored_added"], counts["records"])
    counts["rows"] = write_rows(sft_rows(records), SFT_FEATURES, uri)
    return uri, counts


def build_sft_trainer(cfg: SFTJobConfig, data_uri: str, output_dir: str) -> SFTTrainer:
    """The worker's TRL `SFTTrainer` (called inside each Ray Train worker)."""
    import ray.train
    from trl import SFTConfig, SFTTrainer

    from editcaption.training.data import load_rows
    from editcaption.training.model import load_model, load_processor, lora_config, trainer_kwargs

    args = SFTConfig(**trainer_kwargs(cfg, output_dir), completion_only_loss=True)
    rank = ray.train.get_context().get_world_rank()
    cache = os.path.join(output_dir, f"data-rank{rank}")
    model = load_model(cfg)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=load_rows(data_uri, cache),
        processing_class=load_processor(cfg),
        peft_config=lora_config(cfg, model),
    )


def run_sft(cfg: SFTJobConfig) -> dict[str, Any]:
    """Prepare the data, train on Ray Train, write the final model; returns metrics, counts, paths."""
    from editcaption.training.ray_train import check_run_folder, launch

    check_run_folder(cfg)
    data_uri, counts = prepare_sft_data(cfg)
    return {**launch(cfg, build_sft_trainer, data_uri), "data": counts}
