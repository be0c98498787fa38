"""Paths in configs and --set resolve against the caller's working directory before anything reaches a
Ray worker, and a model that is neither a folder nor a hub id is refused with its field named.

The command tests stop at the boundary where a job would start: the stage function (`run_sft`,
`run_dpo`, `evaluate`, Serve's `run_config`) is replaced by a recorder of the config it was handed, so
they check exactly what would be shipped without starting Ray. The real jobs run on relative
`--set model=` paths in `test_quickstart.py::test_the_whole_loop` (`make test-extra`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from editcaption.cli import app
from editcaption.config import ConfigError, load_config, set_overrides
from editcaption.paths import PathError, resolve_config_paths, resolve_model, resolved_paths
from editcaption.synthesis.config import SynthesisConfig

ROOT = Path(__file__).resolve().parents[1]
MINIATURE = "editcaption/data/miniature/annotator"  # relative to the repo root
MISSING = ".cache/no-such-model"
EVAL_KEYS = ("pairs_evaluated", "pairs_judged", "pairs_quarantined", "seconds", "judged_pairs_per_s")


def _synthesis(annotator: dict, **extra) -> SynthesisConfig:
    scorer = {"backend": "vllm", "model": MINIATURE}
    return SynthesisConfig(input="pairs", output="out", annotator=annotator, scorer=scorer, **extra)


def test_every_local_path_becomes_absolute_against_the_working_directory(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = resolve_config_paths(_synthesis({"backend": "transformers", "model": MINIATURE}))
    assert cfg.input == str(ROOT / "pairs") and cfg.output == str(ROOT / "out")
    assert cfg.annotator.model == cfg.scorer.model == str(ROOT / MINIATURE)


def test_uris_hub_ids_and_api_model_names_are_left_alone(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = SynthesisConfig(
        input="s3://bucket/pairs",
        output="gs://bucket/out",
        annotator={"backend": "openai", "model": "glm-4.5v", "base_url": "http://127.0.0.1:1/v1"},
        scorer={"backend": "vllm", "model": "Qwen/Qwen3-VL-8B-Instruct"},
    )
    assert resolved_paths(cfg) == {}


def test_a_model_that_is_neither_a_folder_nor_a_hub_id_names_its_field(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        PathError, match=r"^annotator\.model: no model folder at .*no-such-model.*not a hub id"
    ):
        resolve_config_paths(_synthesis({"backend": "vllm", "model": MISSING}))
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(PathError, match=r"^model: 'weights.safetensors' is a file"):
        resolve_model("weights.safetensors")
    assert resolve_model("owner/name") == "owner/name"  # a plausible hub id, looked up by the loader


def test_load_config_resolves_only_when_asked(monkeypatch, tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text(
        f"input: pairs\noutput: out\nannotator: {{backend: vllm, model: {MISSING}}}\n"
        f"scorer: {{backend: vllm, model: {MISSING}}}\n"
    )
    monkeypatch.chdir(tmp_path)
    assert load_config(config, SynthesisConfig).input == "pairs"  # validation alone: as written
    with pytest.raises(ConfigError, match=r"job\.yaml: annotator\.model: no model folder"):
        load_config(config, SynthesisConfig, resolve_paths=True)


def test_set_reaches_nested_fields_and_list_items_and_keeps_the_rest():
    base = {"workers": {"num_workers": 2, "cpus_per_worker": 1}, "captioners": [{"name": "a", "engine": {}}]}
    assert set_overrides(base, ["workers.num_workers=4"]) == {
        "workers": {"num_workers": 4, "cpus_per_worker": 1}
    }
    aliases = {"model": "captioners.0.engine.model"}
    assert set_overrides(base, ["model=m"], aliases)["captioners"][0] == {
        "name": "a",
        "engine": {"model": "m"},
    }
    assert base["captioners"][0]["engine"] == {}  # the file's data is not changed
    for bad, message in (
        ("captioners.2.name=x", "not an index of a list of 1"),
        ("workers.num_workers.x=1", "holds 2, not a mapping"),
        ("novalue", "expected KEY=VALUE"),
    ):
        with pytest.raises(ConfigError, match=message):
            set_overrides(base, [bad])


# ---------------------------------------------------------------- the commands, from the repo root


@pytest.fixture
def recorded(monkeypatch):
    """Replace the stage functions by a recorder of the config they are handed."""
    seen: dict[str, object] = {}

    def record(name):
        def stage(cfg, *args, **kwargs):
            seen[name] = cfg
            return {"meta": dict.fromkeys(EVAL_KEYS, 0)} if name == "eval" else {"recorded": True}

        return stage

    monkeypatch.setattr("editcaption.training.sft.run_sft", record("sft"))
    monkeypatch.setattr("editcaption.training.dpo.run_dpo", record("dpo"))
    monkeypatch.setattr("editcaption.evaluation.job.evaluate", record("eval"))
    monkeypatch.setattr("editcaption.serving.cli.run_config", record("serve"))
    monkeypatch.chdir(ROOT)
    return seen


COMMANDS = {
    "sft": ["train", "sft", "--config", "ray_jobs/configs/train-sft-demo.yaml"],
    "dpo": ["train", "dpo", "--config", "ray_jobs/configs/train-dpo-demo.yaml"],
    "eval": ["eval", "--config", "ray_jobs/configs/eval-demo.yaml"],
    "serve": ["serve", "--config", "serve_configs/miniature.yaml"],
}


def _model_of(kind: str, cfg) -> str:
    if kind == "eval":
        return cfg.captioners[0].engine.model
    if kind == "serve":
        return cfg.applications[0].args["captioner"]["engine"]["model"]
    return cfg.model


@pytest.mark.parametrize("kind", COMMANDS)
def test_set_model_to_a_relative_folder_ships_an_absolute_path(recorded, kind, tmp_path):
    sets = ["--set", f"model={MINIATURE}"]
    if kind in ("sft", "dpo"):  # inputs that exist, outputs in a temp folder
        sets += ["--set", f"input={os.path.relpath(ROOT / 'editcaption/data/sample_pairs')}"]
        sets += ["--set", f"storage_path={tmp_path}", "--set", f"output={tmp_path / 'model'}"]
    if kind == "eval":
        sets += ["--output", str(tmp_path / "eval")]
    result = CliRunner().invoke(app, [*COMMANDS[kind], *sets])
    assert result.exit_code == 0, result.output
    assert _model_of(kind, recorded[kind]) == str(ROOT / MINIATURE)
    if kind in ("sft", "dpo"):
        assert recorded[kind].input == str(ROOT / "editcaption/data/sample_pairs")


@pytest.mark.parametrize("kind", COMMANDS)
def test_set_model_to_a_missing_folder_is_refused_naming_the_field(recorded, kind):
    result = CliRunner().invoke(app, [*COMMANDS[kind], "--set", f"model={MISSING}"])
    field = {"eval": "captioners.0.engine.model", "serve": "captioner.engine.model"}.get(kind, "model")
    assert result.exit_code == 2 and kind not in recorded
    flat = " ".join(result.output.split())
    assert f"{field}: no model folder at {ROOT / MISSING}" in flat and "not a hub id" in flat
