"""Training configs: every shipped train-*.yaml validates; bad configs and bad runs fail with the field named."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from editcaption.cli import app
from editcaption.config import ConfigError, load_config
from editcaption.training.config import TrainJobConfig
from editcaption.training.dpo import DPOJobConfig, objective_arguments, trainer_classes
from editcaption.training.model import freeze, register_moe_leaves
from editcaption.training.ray_train import RunExistsError, check_run_folder
from editcaption.training.sft import SFTJobConfig

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONFIGS = sorted((ROOT / "ray_jobs" / "configs").glob("train-*.yaml"))
BASE = {"model": "m", "input": "in", "output": "out", "name": "run", "bf16": False}


def _model(path: Path) -> type[TrainJobConfig]:
    return SFTJobConfig if path.name.startswith("train-sft-") else DPOJobConfig


def test_every_model_size_has_an_sft_and_a_dpo_config():
    names = {p.stem for p in TRAIN_CONFIGS}
    for size in ("demo", "qwen3vl-2b", "qwen3vl-8b", "qwen3vl-32b", "qwen3vl-235b-a22b"):
        assert {f"train-sft-{size}", f"train-dpo-{size}"} <= names
    assert {p.stem for p in (ROOT / "ray_jobs").glob("*.py")} >= {"train_sft", "train_dpo"}


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_train_config_validates(path: Path):
    cfg = load_config(path, _model(path))
    if isinstance(cfg, DPOJobConfig):
        trainer_classes(cfg)  # margin weights name real HAEDPOConfig fields
    if "laptop-cluster" in path.name:
        # docs/cluster.md's laptop walk-through: one CPU worker on a gpu-1x stand-in node, no DeepSpeed,
        # checkpoints and retries so a lost node restarts training from the last checkpoint.
        assert cfg.deepspeed_config() is None and not cfg.on_gpu
        assert cfg.workers.resources_per_worker == {"gpu-1x": 1} and cfg.workers.max_failures >= 1
        assert cfg.checkpoint.save_steps < cfg.max_steps
        return
    ds = cfg.deepspeed_config()
    assert ds is not None and ds["zero_optimization"]["stage"] in (2, 3)
    if "demo" in path.name:
        assert cfg.workers.num_workers == 2 and cfg.workers.gpus_per_worker == 0 and cfg.zero_stage() == 3
    else:
        assert cfg.on_gpu and cfg.bf16 and cfg.model.startswith("Qwen/Qwen3-VL-")
    if "235b" in path.name:
        assert cfg.deepspeed == "zero3_offload" and cfg.moe_leaf_modules and cfg.router_aux_loss_coef


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"deepspeed": "zero4"}, "deepspeed"),
        ({"workers": {"num_workers": 0}}, "workers.num_workers"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"finetune": "qlora"}, "finetune"),
        ({"report_to": ["nonsense"]}, "report_to"),
        ({"lora": {"rank": 8}}, "lora.rank"),
        ({"epochs": 3}, "epochs"),
    ],
)
def test_bad_config_names_the_field(tmp_path, change, field):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, **change}))
    with pytest.raises(ConfigError) as err:
        load_config(path, SFTJobConfig)
    assert f"  {field}:" in str(err.value)


def test_inconsistent_settings_are_refused():
    with pytest.raises(ValueError, match="bf16 needs GPUs"):
        SFTJobConfig(**{**BASE, "bf16": True})
    with pytest.raises(ValueError, match="min_pixels"):
        SFTJobConfig(**BASE, min_pixels=4096, max_pixels=1024)
    with pytest.raises(ValueError, match="hae: margin weights"):
        trainer_classes(DPOJobConfig(**BASE, objective="sigmoid", hae={"hardness_weight": 1.0}))
    with pytest.raises(ValueError, match=r"HAEDPOConfig has no field\(s\) \['margins'\]"):
        trainer_classes(DPOJobConfig(**BASE, hae={"margins": 1.0}))
    with pytest.raises(FileNotFoundError, match="deepspeed"):
        SFTJobConfig(**BASE, deepspeed="missing.json").deepspeed_config()


def test_cpu_runs_turn_communication_overlap_off():
    cfg = SFTJobConfig(**BASE)
    assert cfg.deepspeed_config()["zero_optimization"]["overlap_comm"] is False
    gpu = SFTJobConfig(**{**BASE, "bf16": True}, workers={"gpus_per_worker": 1})
    assert gpu.deepspeed_config()["zero_optimization"]["overlap_comm"] is True
    assert SFTJobConfig(**BASE, deepspeed="none").deepspeed_config() is None


def test_existing_run_needs_resume(tmp_path):
    cfg = SFTJobConfig(**BASE, storage_path=str(tmp_path))
    check_run_folder(cfg)  # nothing there yet
    (tmp_path / "run" / "checkpoint-0000004").mkdir(parents=True)
    with pytest.raises(RunExistsError, match="--resume") as err:
        check_run_folder(cfg)
    assert "checkpoint-0000004" in str(err.value)
    check_run_folder(cfg.model_copy(update={"resume": True}))


def test_freeze_and_moe_leaves_on_the_tiny_moe(tiny_moe_model):
    """ZeRO-3 leaf registration marks the sparse MoE block class (DeepSpeed sets `_z3_leaf` on it)."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_moe_model)
    cfg = SFTJobConfig(**BASE)
    frozen = freeze(model, cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert frozen > 0 and not any(".visual.blocks." in n for n in trainable)
    assert any(".visual.merger." in n for n in trainable)  # the projector trains unless frozen
    assert register_moe_leaves(model, None) == ["Qwen3VLMoeTextSparseMoeBlock"]
    leaves = [m for m in model.modules() if getattr(m, "_z3_leaf", False)]
    assert leaves and all(type(m).__name__ == "Qwen3VLMoeTextSparseMoeBlock" for m in leaves)
    with pytest.raises(ValueError, match="moe_leaf_modules"):
        register_moe_leaves(model, ["NoSuchBlock"])


def test_cli_reports_bad_config_and_missing_data(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**BASE, "deepspeed": "zero9"}))
    result = runner.invoke(app, ["train", "sft", "--config", str(bad)])
    assert result.exit_code == 2 and "deepspeed" in result.output

    result = runner.invoke(app, ["train", "sft", "--config", str(bad), "--set", "nonsense"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output

    good = tmp_path / "good.yaml"
    good.write_text(
        yaml.safe_dump({**BASE, "input": str(tmp_path / "nowhere"), "storage_path": str(tmp_path)})
    )
    result = runner.invoke(app, ["train", "sft", "--config", str(good), "--set", "workers.num_workers=3"])
    assert result.exit_code == 2 and "input: no SFT records at" in result.output

    result = runner.invoke(app, ["train", "dpo", "--config", str(good)])
    assert result.exit_code == 2 and "input: no preference pairs at" in result.output


def test_cli_dotted_overrides_keep_the_files_other_nested_values(tmp_path):
    from editcaption.training.cli import _load

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "workers": {"num_workers": 2, "cpus_per_worker": 3}}))
    cfg = _load(path, SFTJobConfig, ["workers.num_workers=4", "max_steps=7", "report_to=[tensorboard]"])
    assert (cfg.workers.num_workers, cfg.workers.cpus_per_worker, cfg.max_steps) == (4, 3, 7)
    assert cfg.report_to == ["tensorboard"]
    assert _load(path, SFTJobConfig, None, resume=True, name="other").name == "other"
    assert json.loads(cfg.model_dump_json())["workers"]["num_workers"] == 4


@pytest.mark.parametrize(("deepspeed", "expected"), [("none", "MULTI_CPU"), ("zero3", "DEEPSPEED")])
def test_accelerate_state_spans_the_cpu_ranks(deepspeed, expected):
    """In a process set up like a Ray Train CPU worker (rank env vars, gloo), accelerate's state is
    multi-process: DDP without DeepSpeed, DeepSpeed with it; never a lone process training alone."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env_vars = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    code = (
        "from editcaption.training.ray_train import configure_accelerate\n"
        "from editcaption.training.sft import SFTJobConfig\n"
        f"cfg = SFTJobConfig(**{BASE!r}, deepspeed={deepspeed!r})\n"
        "state = configure_accelerate(cfg)\n"
        "print(state.distributed_type.name, state.device.type)\n"
        "import torch.distributed as dist\n"
        "dist.destroy_process_group() if dist.is_initialized() else None\n"
    )
    env = {**os.environ, **env_vars, "MASTER_PORT": str(port)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == [expected, "cpu"]


def test_optimizer_settings_reach_the_trainer_arguments(tmp_path):
    import dataclasses

    from trl import SFTConfig

    from editcaption.training.model import trainer_kwargs

    cfg = SFTJobConfig(**BASE, deepspeed="none", adam_beta2=0.98, learning_rate=2e-3)
    kwargs = trainer_kwargs(cfg, str(tmp_path))
    assert (kwargs["adam_beta2"], kwargs["learning_rate"]) == (0.98, 2e-3)
    assert set(kwargs) <= {f.name for f in dataclasses.fields(SFTConfig)}  # every key is a real argument
    with pytest.raises(ValueError, match="adam_beta2"):
        SFTJobConfig(**BASE, adam_beta2=1.0)


@pytest.mark.parametrize("objective", ["sigmoid", "hae"])
def test_sft_loss_weight_adds_an_nll_term_on_the_chosen_answer(objective):
    """TRL's RPO-style `sft` loss rides along with either objective; weight 0 leaves plain sigmoid.
    (The combined loss is trained in test_hae_dpo.py and by the miniature demo.)"""
    cfg = DPOJobConfig(**BASE, objective=objective, sft_loss_weight=0.5, beta=0.2)
    args = objective_arguments(cfg)
    assert (args["loss_type"], args["loss_weights"], args["beta"]) == (["sigmoid", "sft"], [1.0, 0.5], 0.2)
    plain = objective_arguments(cfg.model_copy(update={"sft_loss_weight": 0.0}))
    assert (plain["loss_type"], plain["loss_weights"]) == (["sigmoid"], None)
    with pytest.raises(ValueError, match="sft_loss_weight"):
        trainer_classes(cfg.model_copy(update={"objective": "hae", "hae": {"loss_type": ["sigmoid", "sft"]}}))
