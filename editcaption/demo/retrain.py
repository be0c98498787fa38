"""`editcaption demo --retrain`: train the miniature models, the one command that rebuilds the
committed weights (`editcaption/data/miniature/{world,annotator,scorer}`).

1. World model: a fresh miniature Qwen3-VL (`world_models.py`), or a trained one (`start_from`),
   trained with the project's SFT job
   (prompt `from_data`) on the world's clean instructions mixed with single-image scene descriptions
   (`records.world_conversations`): first a curriculum of direction-bearing edits alone (camera pans,
   then pans and moves: from all kinds mixed it never learned left from right), then every kind, in
   chunks measured on the `dev` split (the training curve); the last chunk decays the learning rate.
2. Annotator: the world model trained further on instructions with injected, systematic orientation,
   viewpoint and attribute errors (`records.NoiseConfig`): a strong VLM that knows the scene but errs.
3. Scorer: the world model (not the annotator: its mistakes would be the scorer's) trained on the
   EditScore prompts: what it reads off the images where the answer is a relation (`records.seen_facts`),
   the edit it sees, a verdict on the candidate, then scores; half of the rows are ones that only the
   images decide (`records.scorer_contrast_conversations`); then `scorer_stages` weighted to the kinds
   it ranked worst, each measured on `dev`.

`models` trains some of the three and reads the others from `out` (a new scorer alone, say).

The finished models are measured on the `test` split; the cards beside the weights (bfloat16) hold
the curve, the measurements, the seeds and the time. With a `work_dir` a retrain that was cut off
resumes: every job whose output is complete is kept, with its measurements, and the rest is trained.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from editcaption.demo.captioning import caption_pairs, score_candidates
from editcaption.demo.grading import summarize
from editcaption.demo.pipeline import DemoConfig, filter_passes, filter_quality, scorer_ranking
from editcaption.demo.records import (
    NoiseConfig,
    scorer_contrast_conversations,
    world_conversations,
    write_conversations,
)
from editcaption.demo.world import EditKind, WorldConfig, generate, split_pairs
from editcaption.demo.world_models import WorldModelConfig, build_world_qwen3vl
from editcaption.redaction import redact

if TYPE_CHECKING:
    from editcaption.training.sft import SFTJobConfig

COMMITTED = Path(__file__).resolve().parent.parent / "data" / "miniature"


class CurriculumStage(BaseModel):
    """Steps on clean labels of a few edit kinds only, at a constant learning rate."""

    kinds: list[EditKind] = Field(min_length=1, description="Edit kinds of this stage's pairs.")
    steps: int = Field(ge=1, description="Optimizer steps (pairs: steps x batch size, all fresh).")


class ScorerStage(BaseModel):
    """Steps that continue the scorer on a mix weighted to a few edit kinds, decaying from the scorer's
    learning rate. Half-kind mixes keep the other verdicts from being forgotten."""

    steps: int = Field(ge=1, description="Optimizer steps (rows: steps x batch size, all fresh pairs).")
    kinds: list[EditKind] = Field(
        min_length=1,
        description="Edit kinds of the focus pairs, drawn round-robin (repeat one to weight it).",
    )
    focus_share: float = Field(0.5, gt=0, le=1, description="Share of the rows from the focus pairs.")
    focus_regular_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of the focus pairs asked as `scorer_conversations` rows (their major and minor "
        "variants) instead of contrast rows; the other rows are the scorer's usual mix of every kind.",
    )


def _default_scorer_stages() -> list[ScorerStage]:
    # Chosen on `dev` (7 Dec): after the 900 steps, canonical above critical rotations 0.13 and raised arms
    # 0.50 (the scorer reads a rotation's headings, 27 of 30, but not yet the sense they make); 600 steps
    # with half the rows rotations and raised arms: raised arms 1.00, rotations 0.40; the second stage
    # weights rotations twice and asks a quarter of them the regular way (their major variant had
    # fallen to 0.60).
    return [
        ScorerStage(steps=600, kinds=["rotate", "raise_arm"]),
        ScorerStage(steps=600, kinds=["rotate", "rotate", "raise_arm"], focus_regular_share=0.25),
    ]


def _default_curriculum() -> list[CurriculumStage]:
    return [
        CurriculumStage(kinds=["camera_pan"], steps=400),
        CurriculumStage(kinds=["camera_pan", "move"], steps=200),
    ]


class RetrainConfig(BaseModel):
    """The from-scratch training of the world model, the annotator and the scorer."""

    out: str = Field(str(COMMITTED), description="Folder that receives `annotator/` and `scorer/`.")
    seed: int = Field(
        0,
        ge=0,
        lt=100_000,
        description="Seed of the training streams, the label noise and the initial weights. Streams are "
        "drawn from world seeds below 1,000,000, disjoint from the pool, dev and test splits.",
    )
    measure_pairs: int = Field(300, ge=10, description="Pairs of the dev (curve) and test (cards) splits.")
    curriculum: list[CurriculumStage] = Field(
        default_factory=_default_curriculum,
        description="Stages before the world stage. Pans alone first: a binary left/right task the "
        "model learns suddenly, after 175-275 steps depending on data order (a 200-step stage was too "
        "short); then pans and moves. From all kinds mixed, or pans and moves from scratch, it stayed "
        "at chance on direction. Empty: no curriculum.",
    )
    curriculum_warmup_steps: int = Field(50, ge=0, description="Warm-up steps of the first stage.")
    describe_share: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Share of each world-model batch that is a single-image scene description instead of "
        "an instruction. Measured in a plain loop at step 2000: exact match 0.39 with half the batch "
        "descriptions, 0.32 with instructions only (docs/miniature.md).",
    )
    world_steps: int = Field(
        3000, ge=0, description="Steps on every kind after the curriculum, clean labels (with descriptions)."
    )
    world_chunk: int = Field(
        600,
        ge=1,
        description="The world stage runs in chunks of this many steps at a constant learning rate, each "
        "measured on the dev split: the training curve in the annotator's card.",
    )
    world_decay_steps: int = Field(
        600,
        ge=0,
        description="The world stage's last chunk: the learning rate decays linearly to 0 over these steps "
        "(part of `world_steps`). At a constant 5e-4 the per-kind accuracy swung by ±0.15 between "
        "measurements 500 steps apart (the plain-loop probe, docs/miniature.md).",
    )
    max_steps: int = Field(600, ge=1, description="Steps on the error-injected labels (the annotator).")
    annotator_learning_rate: float = Field(
        2.5e-4, gt=0, description="Peak learning rate of the annotator's run (decays linearly to 0)."
    )
    batch_size: int = Field(32, ge=1, description="Examples per step (one CPU worker with 2 threads).")
    learning_rate: float = Field(
        5e-4,
        gt=0,
        description="Peak AdamW learning rate, constant after warm-up until each stage's decay. 5e-4 left "
        "the text prior (started using the images) by step ~300; 1e-3 and 2e-3 had not by steps 325 and 600.",
    )
    adam_beta2: float = Field(
        0.98, gt=0, lt=1, description="AdamW beta2: 0.98 (not 0.999) is what left the text prior here."
    )
    noise: NoiseConfig = Field(default_factory=NoiseConfig, description="Injected label errors.")
    model: WorldModelConfig = Field(default_factory=WorldModelConfig)
    scorer_steps: int = Field(
        900,
        ge=1,
        description="Scorer optimizer steps from the world model (no scorer: leave it out of `models`).",
    )
    scorer_learning_rate: float = Field(5e-4, gt=0, description="Peak learning rate of the scorer's run.")
    scorer_contrast_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of the scorer's pairs asked as rows that only the images decide "
        "(`records.scorer_contrast_conversations`: a reversed direction or zoom asked of the pair and "
        "of its mirror image); the rest are `records.scorer_conversations` rows.",
    )
    scorer_stages: list[ScorerStage] = Field(
        default_factory=_default_scorer_stages,
        description="Stages that continue the scorer after its first run, each measured on `dev` (the "
        "card's scorer curve). Empty: the first run alone.",
    )
    work_dir: str | None = Field(
        None,
        description="Scratch folder for data and checkpoints; null: a temp folder. Run again with the same "
        "folder and config to resume after the last finished job.",
    )
    models: list[Literal["world", "annotator", "scorer"]] = Field(
        default_factory=lambda: ["world", "annotator", "scorer"],
        min_length=1,
        description='The models this run trains; the others are read from `out` (e.g. ["scorer"]: a new '
        "scorer from the world model and measured with the annotator that `out` holds).",
    )
    start_from: str | None = Field(
        None,
        description="A model folder the world stage continues from, instead of a fresh model and its "
        "curriculum: e.g. the committed world model, to train it further without the two hours from "
        "scratch. Null: from scratch.",
    )
    world_kinds: list[EditKind] | None = Field(
        None,
        description="Edit kinds of the world stage's instructions and of the scenes it describes, drawn "
        "round-robin: repeat a kind to weight it (e.g. rotations and raised arms three times each, the "
        "kinds the 6 Dec world model read worst). Null: every kind once.",
    )
    image_pixels: int = Field(
        128 * 128,
        ge=32 * 32,
        description="Pixels the processor scales every image to (its min and max pixels) in training and "
        "in the saved model's processor. 128×128 is the renders as drawn: 16 vision tokens an image; "
        "65,536 upscales them to 256×256, 64 tokens, so a small change spans several tokens.",
    )
    world_stream: int = Field(
        201,
        ge=0,
        lt=1_000,
        description="World stream of the world stage's first chunk (chunk k draws stream + k). A "
        "continuation takes streams its start model has not seen (the from-scratch run used 201-205).",
    )


def _job(
    cfg: RetrainConfig,
    work: Path,
    name: str,
    model: str,
    data: Path,
    steps: int,
    lr: float,
    warmup_steps: int = 0,
    decay: bool = False,
) -> SFTJobConfig:
    """One `run_sft` job of the retrain: full fine-tune, one CPU worker, no DeepSpeed, conversations from
    the data; constant learning rate after warm-up, or a linear decay to 0 over the job (`decay`)."""
    from editcaption.training.sft import SFTJobConfig

    return SFTJobConfig(
        model=model,
        input=str(data),
        output=str(work / name),
        name=name,
        storage_path=str(work / "train"),
        prompt="from_data",
        finetune="full",
        freeze_vision=False,
        min_pixels=cfg.image_pixels,
        max_pixels=cfg.image_pixels,
        deepspeed="none",
        bf16=False,
        learning_rate=lr,
        warmup_ratio=min(0.5, warmup_steps / steps),
        lr_scheduler_type="linear" if decay else "constant_with_warmup",
        adam_beta2=cfg.adam_beta2,
        weight_decay=0.01,
        max_steps=steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_checkpointing=False,
        logging_steps=25,
        seed=cfg.seed,
        checkpoint={"save_steps": steps, "keep": 1},
        workers={"num_workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 2},
    )


def _train(job: SFTJobConfig) -> dict[str, Any]:
    """Train `job` unless an earlier run of it finished (resume); returns its `training_summary.json`
    (final metrics: `train_runtime`, `train_loss`, ...)."""
    from editcaption.training.sft import run_sft

    summary = Path(job.output) / "training_summary.json"
    if not (summary.exists() and (Path(job.output) / "config.json").exists()):
        run_sft(job.model_copy(update={"resume": True}))  # from its last checkpoint, if it has one
    return json.loads(summary.read_text())


def _measured_once(folder: str, name: str, measure: Any) -> dict[str, Any]:
    """`measure()`, kept in `folder/name` so a resumed retrain does not measure a finished job again."""
    path = Path(folder) / name
    if path.exists():
        return json.loads(path.read_text())
    result = measure()
    path.write_text(json.dumps(result))
    return result


def _seconds(result: dict[str, Any]) -> float:
    return float((result.get("metrics") or {}).get("train_runtime") or 0.0)


def _world_data(
    cfg: RetrainConfig,
    work: Path,
    name: str,
    steps: int,
    stream: int,
    kinds: list[str] | None,
    describe_kinds: list[str] | None = None,
) -> Path:
    """`steps` batches of fresh examples from world stream `stream`: instructions of `kinds` (all when
    None), and the configured share of scene descriptions of pairs of `describe_kinds` (all when None)."""
    examples = steps * cfg.batch_size
    n_describe = round(examples * cfg.describe_share)
    drawn = WorldConfig(seed=cfg.seed + stream, **({"kinds": kinds} if kinds else {}))
    pairs = list(generate(examples - n_describe, drawn, prefix=name))
    scenes = WorldConfig(
        seed=cfg.seed + stream + 50_000, **({"kinds": describe_kinds} if describe_kinds else {})
    )
    described = list(generate(n_describe, scenes, prefix=f"{name}-d"))
    rows, _ = world_conversations(pairs, described, seed=cfg.seed + stream)
    return write_conversations(rows, work / f"{name}.parquet")


def _chunks(total: int, size: int, decay: int) -> list[int]:
    """Constant-rate chunks of `size` steps, then one decay chunk of `decay` steps; `total` in all."""
    decay = min(decay, total)
    constant = total - decay
    return [min(size, constant - start) for start in range(0, constant, size)] + ([decay] if decay else [])


def train_world(cfg: RetrainConfig, work: Path) -> tuple[str, dict[str, Any]]:
    """The world model: its trained folder and its record (curriculum, curve on `dev`, `test`
    measurements, training seconds)."""
    dev, test = split_pairs("dev", cfg.measure_pairs), split_pairs("test", cfg.measure_pairs)
    if cfg.start_from:
        start, curriculum = cfg.start_from, []
    else:
        base, curriculum = work / "base", cfg.curriculum
        if not (base / "config.json").exists():
            build_world_qwen3vl(base, cfg.model.model_copy(update={"seed": cfg.seed}))
        start = str(base)
    seconds = 0.0  # summed training time of the jobs, resumed ones included
    stages, curve, step = [], [], 0
    for i, stage in enumerate(curriculum):
        data = _world_data(cfg, work, f"stage{i}", stage.steps, 101 + i, list(stage.kinds))
        warmup = cfg.curriculum_warmup_steps if i == 0 else 0
        job = _job(cfg, work, f"stage{i}", start, data, stage.steps, cfg.learning_rate, warmup)
        result = _train(job)
        stages.append({"kinds": stage.kinds, "steps": stage.steps, "train_metrics": result.get("metrics")})
        start, step, seconds = job.output, step + stage.steps, seconds + _seconds(result)
    chunks = _chunks(cfg.world_steps, cfg.world_chunk, cfg.world_decay_steps)
    for k, steps in enumerate(chunks):
        decay = cfg.world_decay_steps > 0 and k == len(chunks) - 1
        data = _world_data(
            cfg, work, f"world{k}", steps, cfg.world_stream + k, cfg.world_kinds, cfg.world_kinds
        )
        # A short warm-up per chunk: each job starts a fresh Adam state.
        job = _job(cfg, work, f"world{k}", start, data, steps, cfg.learning_rate, min(20, steps // 10), decay)
        result = _train(job)
        start, step, seconds = job.output, step + steps, seconds + _seconds(result)
        measured = _measured_once(
            start, "dev_measured.json", lambda m=start: summarize(caption_pairs(m, dev), dev)
        )
        curve.append(
            {
                "step": step,
                "train_seconds": round(seconds, 1),
                "loss": (result.get("metrics") or {}).get("train_loss"),
                "dev_exact_match": measured["exact_match"],
                "dev_error_rates": measured["error_rates"],
                "dev_exact_by_kind": measured["exact_by_kind"],
            }
        )
    world_test = _measured_once(
        start, "test_measured.json", lambda: summarize(caption_pairs(start, test), test)
    )
    start_card = Path(cfg.start_from) / "world_metrics.json" if cfg.start_from else None
    record = {
        "start_from": cfg.start_from,
        # The start model's own card: a continued model's card keeps its whole history.
        "start_card": json.loads(start_card.read_text()) if start_card and start_card.is_file() else None,
        "curriculum": stages,
        "curve": curve,
        "test_measured": world_test,
        "train_seconds": round(seconds, 1),
    }
    return start, record


def check_folders(cfg: RetrainConfig) -> None:
    """Refuse, before any training, a run that would overwrite its own start model or lacks a model it
    reads from `out`; ValueError says which folder."""
    out = Path(cfg.out).resolve()
    if cfg.start_from and Path(cfg.start_from).resolve() in {out / name for name in cfg.models}:
        # Its weights and card would be replaced while a resumed run still reads them as the start.
        raise ValueError(
            f"start_from: {cfg.start_from} is a folder this retrain writes; copy it elsewhere and start from the copy"
        )
    # The annotator starts from the world model; the scorer too, and it is measured with the annotator.
    needed = {"annotator": {"world"}, "scorer": {"world", "annotator"}}
    for name in sorted(set().union(*(needed.get(m, set()) for m in cfg.models)) - set(cfg.models)):
        if not (out / name / "config.json").is_file():
            raise ValueError(f"models: {name} is not trained in this run and {out / name} holds no model")


def retrain(cfg: RetrainConfig) -> dict[str, Any]:
    """Train, measure and write the models `cfg.models` names (the others are read from `cfg.out`);
    returns the cards of those it wrote."""
    check_folders(cfg)
    out = Path(cfg.out).resolve()  # training jobs take a model folder by absolute path
    work = Path(cfg.work_dir or tempfile.mkdtemp(prefix="miniature-"))
    dev, test = split_pairs("dev", cfg.measure_pairs), split_pairs("test", cfg.measure_pairs)
    cards: dict[str, Any] = {}
    world, annotator = str(out / "world"), out / "annotator"
    if "world" in cfg.models:
        world, world_record = train_world(cfg, work)
        card = {
            "what": "world model of the miniature world: clean instructions and scene descriptions; the "
            "annotator and the scorer start from it",
            "seed": cfg.seed,
            **world_record,
        }
        cards["world"] = write_card(store_bf16(world, out / "world"), card)
    if "annotator" in cfg.models:
        noisy = list(
            generate(cfg.max_steps * cfg.batch_size, WorldConfig(seed=cfg.seed + 401), prefix="noisy")
        )
        rows, injected = world_conversations(noisy, [], cfg.noise.model_copy(update={"seed": cfg.seed}))
        data = write_conversations(rows, work / "annotator.parquet")
        job = _job(
            cfg, work, "annotator", world, data, cfg.max_steps, cfg.annotator_learning_rate, 20, decay=True
        )
        result = _train(job)
        annotator = store_bf16(job.output, out / "annotator")
        held = out / "world" / "world_metrics.json"
        world_card = cards.get("world") or (json.loads(held.read_text()) if held.is_file() else {})
        cards["annotator"] = write_card(
            annotator,
            {
                "what": "weak annotator for the miniature world: the world model trained on labels with "
                "injected systematic errors",
                "seed": cfg.seed,
                "world_model": {k: v for k, v in world_card.items() if k not in ("what", "seed")},
                "injected_label_error_rates": injected,
                "train_metrics": result.get("metrics"),
                "train_seconds": round(world_card.get("train_seconds", 0.0) + _seconds(result), 1),
                "config": redact(cfg.model_dump()),
                "test_measured": summarize(caption_pairs(annotator, test), test),
            },
        )
    if "scorer" in cfg.models:
        scorer_pairs = list(
            generate(cfg.scorer_steps * cfg.batch_size, WorldConfig(seed=cfg.seed + 7), prefix="scorer")
        )
        rows = scorer_contrast_conversations(
            scorer_pairs, seed=cfg.seed, regular_share=1 - cfg.scorer_contrast_share
        )
        data = write_conversations(rows, work / "scorer.parquet")
        job = _job(
            cfg, work, "scorer", world, data, cfg.scorer_steps, cfg.scorer_learning_rate, 20, decay=True
        )
        result = _train(job)
        seconds, step, trained = _seconds(result), cfg.scorer_steps, [(cfg.scorer_steps, job.output)]
        for i, stage in enumerate(cfg.scorer_stages):
            data = write_conversations(scorer_stage_rows(cfg, i), work / f"scorer-stage{i}.parquet")
            lr = cfg.scorer_learning_rate
            job = _job(cfg, work, f"scorer-stage{i}", job.output, data, stage.steps, lr, 20, decay=True)
            result = _train(job)
            seconds, step = seconds + _seconds(result), step + stage.steps
            trained.append((step, job.output))
        curve = [
            {
                "step": at,
                **_measured_once(folder, "dev_ranking.json", lambda f=folder: _dev_ranking(f, dev)),
            }
            for at, folder in trained
        ]
        scorer = store_bf16(job.output, out / "scorer")
        cards["scorer"] = write_card(
            scorer,
            {
                "what": "miniature EditScore scorer (the world model trained on the EditScore prompts, "
                "half of them rows that only the images decide, the facts a relation needs written first; "
                "then `scorer_stages`)",
                "seed": cfg.seed,
                "stages": [stage.model_dump() for stage in cfg.scorer_stages],
                "dev_curve": curve,
                "train_metrics": result.get("metrics"),
                "train_seconds": round(seconds, 1),
                "test_measured": measure_scorer(scorer, annotator, test),
            },
        )
    return cards


def scorer_stage_rows(cfg: RetrainConfig, index: int) -> list[dict]:
    """Rows of scorer stage `index`: fresh pairs of the stage's kinds asked as contrast rows (a share as
    regular rows) and fresh pairs of every kind in the scorer's usual mix, shuffled together."""
    stage = cfg.scorer_stages[index]
    n = stage.steps * cfg.batch_size
    n_focus = round(n * stage.focus_share)
    # World streams 11 and 13 (+10 a stage) and row seeds 1 and 2 (+3 a stage): no other model's streams
    # (the first scorer run draws 7, the annotator 401, the world 101-105 and 201 on), and not the splits'.
    base = cfg.seed + 10 * index
    focus = list(generate(n_focus, WorldConfig(seed=base + 11, kinds=stage.kinds), prefix="focus"))
    mixed = list(generate(n - n_focus, WorldConfig(seed=base + 13), prefix="mixed"))
    seed = cfg.seed + 3 * index
    rows = scorer_contrast_conversations(focus, seed=seed + 1, regular_share=stage.focus_regular_share)
    rows += scorer_contrast_conversations(mixed, seed=seed + 2, regular_share=1 - cfg.scorer_contrast_share)
    random.Random(cfg.seed + 3).shuffle(rows)
    return rows


def _dev_ranking(scorer: str | Path, pairs: list) -> dict[str, Any]:
    """The scorer's canonical-above-variant shares by severity on `pairs` (the card's dev curve)."""
    return {"dev_canonical_above": scorer_ranking(str(scorer), pairs)["canonical_above"]}


def measure_scorer(scorer: str | Path, annotator: str | Path, pairs: list) -> dict[str, Any]:
    """The scorer on `pairs`: how often it ranks the canonical instruction above each labelled variant
    (by severity), and the Stage-1 filter it drives on the annotator's drafts of the same pairs (the
    synthesis stage's default thresholds and the viewpoint lint)."""
    cfg = DemoConfig(annotator=str(annotator), scorer=str(scorer))
    drafts = caption_pairs(annotator, pairs)
    drafted = [i for i, d in enumerate(drafts) if d]
    scores: list = [None] * len(pairs)
    for i, score in zip(
        drafted,
        score_candidates(scorer, [pairs[i] for i in drafted], [drafts[i] for i in drafted]),
        strict=True,
    ):
        scores[i] = score
    return {
        "ranking": scorer_ranking(str(scorer), pairs),
        "filter_on_annotator_drafts": filter_quality(pairs, drafts, filter_passes(cfg, drafts, scores)),
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
