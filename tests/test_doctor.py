"""`editcaption doctor`: the stack, the machine, and a config's paths checked as its job would resolve them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from editcaption.cli import app
from editcaption.doctor import config_model

ROOT = Path(__file__).resolve().parents[1]


def _doctor(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["doctor", *args])
    return result.exit_code, " ".join(result.output.split())


def test_a_config_whose_paths_resolve_passes(monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out = _doctor("--config", "serve_configs/miniature.yaml")
    assert code == 0, out
    for line in (
        "ok torch 2.14.1",
        "ok ray 2.60.0",
        "ok transformers",
        "ok device",
        "jobs start a local Ray",
    ):
        assert line in out
    assert (
        f"ok miniature: captioner.engine.model model folder: {ROOT}/editcaption/data/miniature/annotator"
        in out
    )
    assert "valid `editcaption serve` config" in out


def test_missing_models_and_inputs_are_named(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the demo configs' relative paths point nowhere from here
    code, out = _doctor("--config", str(ROOT / "ray_jobs/configs/train-dpo-demo.yaml"))
    assert code == 1
    assert "valid `editcaption train dpo` config" in out
    assert f"!! model no model folder at {tmp_path}/runs/train/sft-demo/model" in out
    assert f"!! input {tmp_path}/runs/demo/inputs: not found" in out
    assert f"ok output {tmp_path}/runs/train/dpo-demo/model (will be created)" in out


def test_an_invalid_config_says_which_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("captioners: []\nbenchmarks: []\nsurprise: 1\n")
    code, out = _doctor("--config", str(bad))
    assert code == 1 and "(eval)" in out and "surprise: Extra inputs are not permitted" in out


def test_the_job_is_told_from_the_keys():
    assert config_model({"applications": []})[0] == "serve"
    assert config_model({"annotator": {}})[0] == "synthesize"
    assert config_model({"engine": {}})[0] == "caption"
    assert config_model({"model": "m", "beta": 0.1})[0] == "train dpo"
    assert config_model({"model": "m", "augment_mirrored": True})[0] == "train sft"
