"""Every shipped caption and synthesis config validates against its job's config model.

Configs of the other stages (`train-*`, `eval-*`) are validated by those stages' own tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from editcaption.config import load_config
from editcaption.synthesis.caption import CaptionJobConfig
from editcaption.synthesis.config import SynthesisConfig

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


@pytest.mark.parametrize("command", ["synthesize", "caption"])
def test_set_overrides_reach_nested_fields_and_bad_ones_are_refused(command: str):
    """`--set` goes through the same override mechanism as eval, train and serve: a dotted key reaches
    the engine's field (and its validation), a malformed item is a clear error, exit code 2."""
    from typer.testing import CliRunner

    from editcaption.cli import app

    name, engine = (
        ("synthesis-glm45v-editscore.yaml", "annotator")
        if command == "synthesize"
        else ("caption-glm45v.yaml", "engine")
    )
    config = str(ROOT / "ray_jobs" / "configs" / name)
    runner = CliRunner()
    bad_value = runner.invoke(app, [command, "--config", config, "--set", f"{engine}.tensor_parallel_size=0"])
    assert bad_value.exit_code == 2 and "tensor_parallel_size" in bad_value.output
    malformed = runner.invoke(app, [command, "--config", config, "--set", "no-equals-sign"])
    assert malformed.exit_code == 2 and "KEY=VALUE" in malformed.output
