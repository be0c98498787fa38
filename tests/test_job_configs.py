"""Every shipped job config validates against its job's config model, so configs cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from editcaption.config import load_config
from editcaption.synthesis.caption import CaptionJobConfig
from editcaption.synthesis.job import SynthesisConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "ray_jobs" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_job_config_validates(path: Path):
    model = CaptionJobConfig if path.name.startswith("caption-") else SynthesisConfig
    assert load_config(path, model).output


def test_ray_job_entry_points_exist_for_each_job():
    assert {p.stem for p in (ROOT / "ray_jobs").glob("*.py")} >= {"caption", "synthesize"}
