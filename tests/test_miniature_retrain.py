"""`editcaption demo --retrain` end to end at toy size: the curriculum stages, the world stage, the error-injected stage
and the scorer all run through `run_sft` (Ray Train, CPU), and both folders
come out in bfloat16 with their measurements. The full-size run is timed in docs/miniature.md."""

from __future__ import annotations

import json

import pytest

from editcaption.demo.retrain import CurriculumStage, RetrainConfig, ScorerStage, retrain
from editcaption.demo.world_models import WorldModelConfig

pytestmark = [pytest.mark.slow, pytest.mark.miniature_extra]  # `make test-miniature`: beyond CI's budget


def _toy(tmp_path, **update) -> RetrainConfig:
    return RetrainConfig(
        out=str(tmp_path / "models"),
        work_dir=str(tmp_path / "work"),
        measure_pairs=10,
        curriculum=[
            CurriculumStage(kinds=["camera_pan"], steps=1),
            CurriculumStage(kinds=["camera_pan", "move"], steps=1),
        ],
        world_steps=3,
        world_chunk=2,
        world_decay_steps=1,
        max_steps=2,
        batch_size=4,
        scorer_steps=1,
        scorer_stages=[ScorerStage(steps=1, kinds=["rotate", "raise_arm"])],
        model=WorldModelConfig(text_layers=1, vision_depth=1),
    ).model_copy(update=update)


def test_retrain_runs_every_stage_and_writes_the_three_models(tmp_path, monkeypatch):
    cfg = _toy(tmp_path)
    cards = retrain(cfg)
    for stage in ("stage0", "stage1", "world0", "world1", "annotator", "scorer", "scorer-stage0"):
        assert (tmp_path / "work" / stage / "config.json").is_file(), stage
    for name in ("world", "annotator", "scorer"):
        folder = tmp_path / "models" / name
        assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
        assert json.loads((folder / "world_metrics.json").read_text()) == json.loads(json.dumps(cards[name]))
    world = cards["annotator"]["world_model"]
    assert world == {k: v for k, v in cards["world"].items() if k not in ("what", "seed")}
    assert [s["kinds"] for s in world["curriculum"]] == [["camera_pan"], ["camera_pan", "move"]]
    assert [c["step"] for c in world["curve"]] == [4, 5]  # 2 curriculum steps, then chunks of 2 and 1
    # Training time adds up job by job: each world chunk, then the annotator's own job on top.
    seconds = [c["train_seconds"] for c in world["curve"]]
    assert 0 < seconds[0] < seconds[1] == world["train_seconds"] < cards["annotator"]["train_seconds"]
    assert world["test_measured"]["n"] == cards["annotator"]["test_measured"]["n"] == 10
    # The scorer's stage continues its first run, and each is measured on dev: the scorer's curve.
    stage_job = json.loads((tmp_path / "work" / "scorer-stage0" / "training_summary.json").read_text())
    assert stage_job["config"]["model"] == str(tmp_path / "work" / "scorer")
    assert [c["step"] for c in cards["scorer"]["dev_curve"]] == [1, 2]
    assert "critical" in cards["scorer"]["dev_curve"][-1]["dev_canonical_above"]
    measured = cards["scorer"]["test_measured"]
    assert measured["ranking"]["n_pairs"] == 10 and "critical" in measured["ranking"]["canonical_above"]
    assert set(measured["filter_on_annotator_drafts"]["by_error_type"]) == {
        "orientation",
        "viewpoint",
        "attribute",
        "other",
    }

    # Cut off after the world model: the annotator's and scorer's jobs are lost; the same command
    # trains only those two again and keeps every earlier job and its measurements.
    for name in ("annotator", "scorer"):
        (tmp_path / "work" / name / "training_summary.json").unlink()
    from editcaption.training import sft

    trained, run_sft = [], sft.run_sft
    monkeypatch.setattr(sft, "run_sft", lambda job: trained.append(job.name) or run_sft(job))
    resumed = retrain(cfg)
    assert trained == ["annotator", "scorer"]
    assert resumed["annotator"]["world_model"] == json.loads(json.dumps(world))
    # The world model's time is kept from the first run; the rerun's annotator job resumes from the last
    # checkpoint the first run left (it may train no step at all), so it adds little or nothing.
    assert resumed["annotator"]["train_seconds"] >= world["train_seconds"] > 0


def test_retrain_continues_the_world_stage_from_a_trained_model(tmp_path):
    """`start_from`: no fresh model and no curriculum; the world stage's chunks start from the given
    folder, on the world streams asked for, and the card says where it started."""
    first = _toy(
        tmp_path / "first", max_steps=1, world_steps=1, world_decay_steps=0, models=["world", "annotator"]
    )
    retrain(first)
    start = tmp_path / "first" / "models" / "world"
    cfg = _toy(
        tmp_path,
        start_from=str(start),
        world_stream=300,
        world_steps=2,
        world_chunk=1,
        world_decay_steps=1,
        max_steps=1,
        models=["world", "annotator"],
    )
    cards = retrain(cfg)
    world = cards["world"]
    assert world["start_from"] == str(start) and world["curriculum"] == []
    assert world["start_card"] == json.loads((start / "world_metrics.json").read_text())
    assert [c["step"] for c in world["curve"]] == [1, 2]
    assert not (tmp_path / "work" / "base").exists() and not (tmp_path / "work" / "stage0").exists()
    job = json.loads((tmp_path / "work" / "world0" / "training_summary.json").read_text())
    assert job["config"]["model"] == str(start)
    # Chunk 0 trained on world stream 300, not the from-scratch run's 201.
    import pyarrow.parquet as pq

    from editcaption.demo.retrain import _world_data

    trained = pq.read_table(tmp_path / "work" / "world0.parquet")
    for stream, same in ((300, True), (201, False)):
        drawn = pq.read_table(_world_data(cfg, tmp_path / f"check{stream}", "world0", 1, stream, None))
        assert trained.equals(drawn) is same


def test_retrain_refuses_to_start_from_a_folder_it_overwrites(tmp_path):
    """Starting from the committed annotator while writing the committed folders would replace the start
    model (and the card a resumed run reads as its history) mid-run: refused before any training."""
    cfg = _toy(tmp_path, start_from=str(tmp_path / "models" / "annotator"))
    with pytest.raises(ValueError, match="start_from: .* is a folder this retrain writes"):
        retrain(cfg)
    assert not (tmp_path / "work").exists()


def test_retrain_of_the_scorer_alone_starts_from_the_folder_world_model(tmp_path):
    """`models=["scorer"]`: one job, from the world model the output folder holds, measured with its
    annotator; the world model and the annotator are left as they were."""
    cfg = _toy(tmp_path, world_steps=1, world_decay_steps=0, max_steps=1, models=["world", "annotator"])
    retrain(cfg)
    models = tmp_path / "models"
    before = {name: (models / name / "model.safetensors").read_bytes() for name in ("world", "annotator")}
    cards = retrain(cfg.model_copy(update={"models": ["scorer"]}))
    assert set(cards) == {"scorer"} and (models / "scorer" / "world_metrics.json").is_file()
    assert {name: (models / name / "model.safetensors").read_bytes() for name in before} == before
    job = json.loads((tmp_path / "work" / "scorer" / "training_summary.json").read_text())
    assert job["config"]["model"] == str(models / "world")
    assert cards["scorer"]["test_measured"]["ranking"]["n_pairs"] == 10
