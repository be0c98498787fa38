"""`editcaption demo --retrain`: train the miniature models from scratch, the one command that rebuilds
the committed weights (`editcaption/data/miniature/{annotator,scorer}`).

1. Annotator: a fresh miniature Qwen3-VL (`world_models.py`) trained with the project's SFT job,
   first through a curriculum of direction-bearing edits alone (camera pans, then pans and moves:
   from all kinds mixed it never learned left from right), then on the world's canonical labels
   (it learns to read the images), then on the same pairs with injected orientation, viewpoint
   and attribute errors (`records.NoiseConfig`): it learns the mistakes.
2. Scorer: the annotator's weights trained further, with the same job and prompt `from_data`, to
   answer the EditScore prompts (`records.scorer_conversations`): it learns to grade a candidate.

Each is measured on held-out pairs; the measurements are written beside its weights (bfloat16).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from editcaption.demo.captioning import caption_pairs, score_candidates
from editcaption.demo.grading import summarize
from editcaption.demo.records import (
    NoiseConfig,
    scorer_conversations,
    sft_records,
    write_conversations,
    write_records,
)
from editcaption.demo.world import EditKind, WorldConfig, WorldPair, generate
from editcaption.demo.world_models import WorldModelConfig, build_world_qwen3vl
from editcaption.redaction import redact
from editcaption.schema import SFTRecord

if TYPE_CHECKING:
    from editcaption.training.sft import SFTJobConfig

COMMITTED = Path(__file__).resolve().parent.parent / "data" / "miniature"


class CurriculumStage(BaseModel):
    """Steps on clean labels of a few edit kinds only, at a constant learning rate."""

    kinds: list[EditKind] = Field(min_length=1, description="Edit kinds of this stage's pairs.")
    steps: int = Field(ge=1, description="Optimizer steps (pairs: steps x batch size, all fresh).")


def _default_curriculum() -> list[CurriculumStage]:
    return [
        CurriculumStage(kinds=["camera_pan"], steps=400),
        CurriculumStage(kinds=["camera_pan", "move"], steps=200),
    ]


class RetrainConfig(BaseModel):
    """The from-scratch training of the annotator and the scorer."""

    out: str = Field(str(COMMITTED), description="Folder that receives `annotator/` and `scorer/`.")
    seed: int = Field(0, description="Seed of the world pairs, the label noise and the initial weights.")
    train_pairs: int = Field(
        40960, ge=64, description="Distinct training pairs: about one epoch over both stages, as fresh pairs."
    )
    heldout: int = Field(300, ge=10, description="Held-out pairs each model is measured on.")
    curriculum: list[CurriculumStage] = Field(
        default_factory=_default_curriculum,
        description="Stages before the world stage. Pans alone first: a binary left/right task the "
        "model learns suddenly, after 175-275 steps depending on data order (a 200-step stage was too "
        "short); then pans and moves. From all kinds mixed, or pans and moves from scratch, it stayed "
        "at chance on direction. Empty: no curriculum.",
    )
    curriculum_warmup_steps: int = Field(50, ge=0, description="Warm-up steps of the first stage.")
    world_steps: int = Field(
        600,
        ge=0,
        description="Steps on clean labels of every kind after the curriculum: the model learns to read "
        "the images, which on the error-injected labels alone took ~800 steps to start (~300 on clean ones).",
    )
    max_steps: int = Field(
        400, ge=1, description="Steps on the error-injected labels after that: the model learns the mistakes."
    )
    batch_size: int = Field(32, ge=1, description="Pairs per step (one CPU worker with 2 threads).")
    learning_rate: float = Field(
        5e-4,
        gt=0,
        description="Peak AdamW learning rate. 5e-4 left the text prior (started using the images) by "
        "step ~300; 1e-3 and 2e-3 had not by steps 325 and 600.",
    )
    adam_beta2: float = Field(
        0.98, gt=0, lt=1, description="AdamW beta2: 0.98 (not 0.999) is what left the text prior here."
    )
    warmup_steps: int = Field(100, ge=0, description="Linear warm-up steps before the cosine decay.")
    noise: NoiseConfig = Field(default_factory=NoiseConfig, description="Injected label errors.")
    model: WorldModelConfig = Field(default_factory=WorldModelConfig)
    scorer_pairs: int = Field(
        4096, ge=64, description="Pairs the scorer's EditScore conversations come from."
    )
    scorer_steps: int = Field(
        200, ge=0, description="Scorer optimizer steps from the annotator; 0: no scorer."
    )
    scorer_learning_rate: float = Field(5e-4, gt=0, description="Peak learning rate of the scorer's run.")
    work_dir: str | None = Field(
        None, description="Scratch folder for data and checkpoints; null: a temp folder."
    )


def _job(
    cfg: RetrainConfig,
    work: Path,
    name: str,
    model: str,
    data: Path,
    steps: int,
    lr: float,
    warmup_steps: int | None = None,
    **extra: Any,
) -> SFTJobConfig:
    """One `run_sft` job of the retrain: full fine-tune, one CPU worker, no DeepSpeed."""
    from editcaption.training.sft import SFTJobConfig

    return SFTJobConfig(
        model=model,
        input=str(data),
        output=str(work / name),
        name=name,
        storage_path=str(work / "train"),
        finetune="full",
        freeze_vision=False,
        min_pixels=128 * 128,
        max_pixels=128 * 128,
        deepspeed="none",
        bf16=False,
        learning_rate=lr,
        warmup_ratio=min(0.5, (cfg.warmup_steps if warmup_steps is None else warmup_steps) / steps),
        adam_beta2=cfg.adam_beta2,
        weight_decay=0.01,
        max_steps=steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_checkpointing=False,
        logging_steps=25,
        seed=cfg.seed,
        checkpoint={"save_steps": min(200, steps), "keep": 2},
        workers={"num_workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 2},
        **extra,
    )


def retrain(cfg: RetrainConfig) -> dict[str, Any]:
    """Train, measure and write the annotator, then the scorer; returns both cards."""
    from editcaption.training.sft import run_sft

    work = Path(cfg.work_dir or tempfile.mkdtemp(prefix="miniature-"))
    heldout = list(generate(cfg.heldout, WorldConfig(seed=cfg.seed + 1_000_003), prefix="heldout"))
    t0 = time.monotonic()
    start = str(build_world_qwen3vl(work / "base", cfg.model.model_copy(update={"seed": cfg.seed})))
    stages = []
    for i, stage in enumerate(cfg.curriculum):
        drawn = WorldConfig(seed=cfg.seed + 101 + i, kinds=stage.kinds)
        rows = sft_records(list(generate(stage.steps * cfg.batch_size, drawn, prefix=f"stage{i}")))[0]
        data = write_records(rows, SFTRecord, work / f"stage{i}.parquet")
        job = _job(
            cfg,
            work,
            f"stage{i}",
            start,
            data,
            stage.steps,
            cfg.learning_rate,
            warmup_steps=cfg.curriculum_warmup_steps if i == 0 else 0,
            lr_scheduler_type="constant_with_warmup",
        )
        stages.append(
            {"kinds": stage.kinds, "steps": stage.steps, "train_metrics": run_sft(job).get("metrics")}
        )
        start = job.output
    pairs = list(generate(cfg.train_pairs, WorldConfig(seed=cfg.seed), prefix="train"))
    if cfg.world_steps:
        clean = write_records(sft_records(pairs)[0], SFTRecord, work / "world.parquet")
        world = _job(cfg, work, "world", start, clean, cfg.world_steps, cfg.learning_rate)
        run_sft(world)
        start = world.output
    rows, injected = sft_records(pairs, cfg.noise.model_copy(update={"seed": cfg.seed}), model="world-noisy")
    data = write_records(rows, SFTRecord, work / "annotator.parquet")
    job = _job(cfg, work, "annotator", start, data, cfg.max_steps, cfg.learning_rate)
    result = run_sft(job)
    annotator = store_bf16(job.output, Path(cfg.out) / "annotator")
    cards = {
        "annotator": write_card(
            annotator,
            {
                "what": "weak annotator for the miniature world (trained on labels with injected errors)",
                "injected_label_error_rates": injected,
                "curriculum": stages,
                "train_metrics": result.get("metrics"),
                "train_seconds": round(time.monotonic() - t0, 1),
                "config": redact(cfg.model_dump()),
                "heldout_measured": summarize(caption_pairs(annotator, heldout), heldout),
            },
        )
    }
    if cfg.scorer_steps:
        t0 = time.monotonic()
        scorer_pairs = list(generate(cfg.scorer_pairs, WorldConfig(seed=cfg.seed + 7), prefix="scorer"))
        data = write_conversations(scorer_conversations(scorer_pairs, seed=cfg.seed), work / "scorer.parquet")
        job = _job(
            cfg,
            work,
            "scorer",
            job.output,
            data,
            cfg.scorer_steps,
            cfg.scorer_learning_rate,
            prompt="from_data",
        )
        result = run_sft(job)
        scorer = store_bf16(job.output, Path(cfg.out) / "scorer")
        cards["scorer"] = write_card(
            scorer,
            {
                "what": "miniature EditScore scorer (the annotator trained on the EditScore prompts)",
                "train_metrics": result.get("metrics"),
                "train_seconds": round(time.monotonic() - t0, 1),
                "heldout_measured": measure_scorer(scorer, heldout),
            },
        )
    return cards


def measure_scorer(model_dir: str | Path, pairs: list[WorldPair], seed: int = 0) -> dict[str, Any]:
    """Mean overall score of canonical instructions and of each severity of wrong variant, the share
    parsed, and how often a canonical instruction outscores one wrong variant of the same pair."""
    import random

    rng = random.Random(seed)
    wrong = [rng.choice(p.variants) for p in pairs]
    scores = score_candidates(
        model_dir, pairs + pairs, [p.instruction for p in pairs] + [v.text for v in wrong]
    )
    right, bad = scores[: len(pairs)], scores[len(pairs) :]
    by_severity: dict[str, list[float]] = {"canonical": [s.overall for s in right if s.overall is not None]}
    for v, s in zip(wrong, bad, strict=True):
        if s.overall is not None:
            by_severity.setdefault(v.severity, []).append(s.overall)
    ranked = [
        a.overall > b.overall for a, b in zip(right, bad, strict=True) if None not in (a.overall, b.overall)
    ]
    return {
        "n": len(pairs),
        "parsed": sum(s.overall is not None for s in scores) / len(scores),
        "mean_overall": {k: round(sum(v) / len(v), 3) for k, v in by_severity.items() if v},
        "canonical_above_variant": round(sum(ranked) / max(1, len(ranked)), 3),
    }


def store_bf16(trained: str | Path, out: Path) -> Path:
    """Store a trained folder (or a training checkpoint of one) in bfloat16 with its processor."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if out.exists():
        shutil.rmtree(out)
    model = AutoModelForImageTextToText.from_pretrained(trained, dtype=torch.float32)
    model.to(torch.bfloat16).save_pretrained(out)
    AutoProcessor.from_pretrained(trained).save_pretrained(out)
    return out


def write_card(out: Path, card: dict[str, Any]) -> dict[str, Any]:
    (out / "world_metrics.json").write_text(json.dumps(card, indent=1) + "\n")
    return card
