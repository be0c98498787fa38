"""Every shipped caption and synthesis config validates against its job's config model.

Configs of the other stages (`train-*`, `eval-*`) are validated by those stages' own tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from editcaption.config import load_config
from editcaption.synthesis.caption import CaptionJobConfig
from editcaption.synthesis.job import SynthesisConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    p
    for p in (ROOT / "ray_jobs" / "configs").glob("*.yaml")
    if p.name.startswith(("caption-", "synthesis-", "demo"))
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_job_config_validates(path: Path):
    model = CaptionJobConfig if path.name.startswith("caption-") else SynthesisConfig
    assert load_config(path, model).output


def test_ray_job_entry_points_exist_for_each_job():
    assert {p.stem for p in (ROOT / "ray_jobs").glob("*.py")} >= {"caption", "synthesize"}
