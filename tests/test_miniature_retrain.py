"""`editcaption demo --retrain` end to end at toy size: the curriculum stages, the world stage, the error-injected stage
and the scorer all run through `run_sft` (Ray Train, CPU), and both folders
come out in bfloat16 with their measurements. The full-size run is timed in docs/miniature.md."""

from __future__ import annotations

import json

import pytest

from editcaption.demo.retrain import CurriculumStage, RetrainConfig, retrain
from editcaption.demo.world_models import WorldModelConfig

pytestmark = [pytest.mark.slow, pytest.mark.miniature_extra]  # `make test-miniature`: beyond CI's budget


def test_retrain_runs_every_stage_and_writes_both_models(tmp_path, monkeypatch):
    cfg = RetrainConfig(
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
        model=WorldModelConfig(text_layers=1, vision_depth=1),
    )
    cards = retrain(cfg)
    for stage in ("stage0", "stage1", "world0", "world1", "annotator", "scorer"):
        assert (tmp_path / "work" / stage / "config.json").is_file(), stage
    for name in ("annotator", "scorer"):
        folder = tmp_path / "models" / name
        assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
        assert json.loads((folder / "world_metrics.json").read_text()) == json.loads(json.dumps(cards[name]))
    world = cards["annotator"]["world_model"]
    assert [s["kinds"] for s in world["curriculum"]] == [["camera_pan"], ["camera_pan", "move"]]
    assert [c["step"] for c in world["curve"]] == [4, 5]  # 2 curriculum steps, then chunks of 2 and 1
    # Training time adds up job by job: each world chunk, then the annotator's own job on top.
    seconds = [c["train_seconds"] for c in world["curve"]]
    assert 0 < seconds[0] < seconds[1] == world["train_seconds"] < cards["annotator"]["train_seconds"]
    assert world["test_measured"]["n"] == cards["annotator"]["test_measured"]["n"] == 10
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
