"""`editcaption demo --retrain` end to end at toy size: the curriculum stages, the world stage, the error-injected stage
and the scorer all run through `run_sft` (Ray Train, CPU), and both folders
come out in bfloat16 with their measurements. The full-size run is timed in docs/miniature.md."""

from __future__ import annotations

import json

import pytest

from editcaption.demo.retrain import CurriculumStage, RetrainConfig, retrain
from editcaption.demo.world_models import WorldModelConfig

pytestmark = pytest.mark.slow


def test_retrain_runs_every_stage_and_writes_both_models(tmp_path):
    cfg = RetrainConfig(
        out=str(tmp_path / "models"),
        work_dir=str(tmp_path / "work"),
        train_pairs=64,
        heldout=10,
        curriculum=[
            CurriculumStage(kinds=["camera_pan"], steps=1),
            CurriculumStage(kinds=["camera_pan", "move"], steps=1),
        ],
        world_steps=2,
        max_steps=2,
        batch_size=4,
        warmup_steps=1,
        scorer_pairs=64,
        scorer_steps=1,
        model=WorldModelConfig(text_layers=1, vision_depth=1),
    )
    cards = retrain(cfg)
    for stage in ("stage0", "stage1", "world", "annotator", "scorer"):
        assert (tmp_path / "work" / stage / "config.json").is_file(), stage
    for name in ("annotator", "scorer"):
        folder = tmp_path / "models" / name
        assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
        assert json.loads((folder / "world_metrics.json").read_text())["heldout_measured"]["n"] == 10
    assert cards["annotator"]["heldout_measured"]["n"] == 10
    assert [s["kinds"] for s in cards["annotator"]["curriculum"]] == [["camera_pan"], ["camera_pan", "move"]]
    assert 0 <= cards["scorer"]["heldout_measured"]["parsed"] <= 1
