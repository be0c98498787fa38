"""`editcaption demo --retrain`: train the weak annotator from scratch, the one command that rebuilds the
committed weights (`editcaption/data/miniature/annotator`).

A fresh miniature Qwen3-VL (`world_models.py`) is trained with the project's SFT job on world pairs
whose labels carry injected orientation, viewpoint and attribute errors (`records.NoiseConfig`); the
model learns the world and the mistakes. Its real error rates on held-out pairs are measured and
written beside the weights, which are stored in bfloat16.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from editcaption.demo.captioning import caption_pairs
from editcaption.demo.grading import summarize
from editcaption.demo.records import NoiseConfig, sft_records, write_records
from editcaption.demo.world import WorldConfig, generate
from editcaption.demo.world_models import WorldModelConfig, build_world_qwen3vl
from editcaption.schema import SFTRecord

COMMITTED = Path(__file__).resolve().parent.parent / "data" / "miniature"


class RetrainConfig(BaseModel):
    """The annotator's from-scratch training run."""

    out: str = Field(str(COMMITTED), description="Where the annotator folder is written.")
    seed: int = Field(0, description="Seed of the world pairs, the label noise and the initial weights.")
    train_pairs: int = Field(16384, ge=64, description="Distinct training pairs (epochs repeat them).")
    heldout: int = Field(
        300, ge=10, description="Held-out pairs the annotator's error rates are measured on."
    )
    max_steps: int = Field(1200, ge=1, description="Optimizer steps.")
    batch_size: int = Field(32, ge=1, description="Pairs per step (one CPU worker with 2 threads).")
    learning_rate: float = Field(2e-3, gt=0, description="Peak AdamW learning rate (from scratch).")
    adam_beta2: float = Field(
        0.98, gt=0, lt=1, description="AdamW beta2: 0.98 (not 0.999) is what left the text prior here."
    )
    warmup_steps: int = Field(100, ge=0, description="Linear warm-up steps before the cosine decay.")
    noise: NoiseConfig = Field(default_factory=NoiseConfig, description="Injected label errors.")
    model: WorldModelConfig = Field(default_factory=WorldModelConfig)
    work_dir: str | None = Field(
        None, description="Scratch folder for data and checkpoints; null: a temp folder."
    )


def retrain(cfg: RetrainConfig) -> dict[str, Any]:
    """Train, measure and write the annotator; returns its training metrics and measured error rates."""
    from editcaption.training.sft import SFTJobConfig, run_sft

    work = Path(cfg.work_dir or tempfile.mkdtemp(prefix="miniature-"))
    t0 = time.monotonic()
    base = build_world_qwen3vl(work / "base", cfg.model.model_copy(update={"seed": cfg.seed}))
    pairs = list(generate(cfg.train_pairs, WorldConfig(seed=cfg.seed), prefix="train"))
    rows, injected = sft_records(pairs, cfg.noise.model_copy(update={"seed": cfg.seed}), model="world-noisy")
    data = write_records(rows, SFTRecord, work / "annotator.parquet")
    job = SFTJobConfig(
        model=str(base),
        input=str(data),
        output=str(work / "annotator"),
        name="annotator",
        storage_path=str(work / "train"),
        finetune="full",
        freeze_vision=False,
        min_pixels=128 * 128,
        max_pixels=128 * 128,
        deepspeed="none",
        bf16=False,
        learning_rate=cfg.learning_rate,
        warmup_ratio=min(0.5, cfg.warmup_steps / cfg.max_steps),
        adam_beta2=cfg.adam_beta2,
        weight_decay=0.01,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_checkpointing=False,
        logging_steps=25,
        seed=cfg.seed,
        checkpoint={"save_steps": min(200, cfg.max_steps), "keep": 2},
        workers={"num_workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 2},
    )
    result = run_sft(job)
    return export_annotator(
        job.output,
        Path(cfg.out) / "annotator",
        {
            "injected_label_error_rates": injected,
            "train_metrics": result.get("metrics"),
            "train_seconds": round(time.monotonic() - t0, 1),
            "config": cfg.model_dump(),
        },
        heldout=cfg.heldout,
        seed=cfg.seed,
    )


def export_annotator(
    trained: str | Path, out: Path, card: dict[str, Any], heldout: int = 300, seed: int = 0
) -> dict[str, Any]:
    """Store a trained folder (or a training checkpoint of one) as the annotator in bfloat16, measure it
    on held-out pairs and write `world_metrics.json` beside it; returns that card."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if out.exists():
        shutil.rmtree(out)
    model = AutoModelForImageTextToText.from_pretrained(trained, dtype=torch.float32)
    model.to(torch.bfloat16).save_pretrained(out)
    AutoProcessor.from_pretrained(trained).save_pretrained(out)
    pairs = list(generate(heldout, WorldConfig(seed=seed + 1_000_003), prefix="heldout"))
    card = {
        "what": "weak annotator for the miniature world (trained on labels with injected errors)",
        **card,
        "heldout_measured": summarize(caption_pairs(out, pairs), pairs),
    }
    (out / "world_metrics.json").write_text(json.dumps(card, indent=1) + "\n")
    return card
