"""`benchmarks/gpu_check.py`: refuses without a GPU, and its CPU-sized dry run goes through every section
(model, vLLM vs transformers captions, HAE-DPO steps with on-the-fly and stored reference, Serve) and
writes the JSON a GPU run writes. No GPU here: the dry run stands in for the real one, which only a GPU
machine can run.

The dry run starts vLLM twice, transformers and two DPO trainings: 10-20 minutes on a shared 2-core
machine, beyond what the CI suite can spend, so it runs when EDITCAPTION_GPU_CHECK_REHEARSAL=1 is set
(do so before taking the check to a GPU machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU, so the check would run instead of refusing")
def test_refuses_on_cpu_with_a_clear_message(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr and "--dry-run" in proc.stderr
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.timeout(1860)
@pytest.mark.skipif(
    not os.environ.get("EDITCAPTION_GPU_CHECK_REHEARSAL"),
    reason="10-20 min on 2 cores; set EDITCAPTION_GPU_CHECK_REHEARSAL=1 to rehearse the GPU check",
)
def test_dry_run_runs_every_section_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    # The 480 s budget is the GPU run's; a loaded 2-core machine needs more for the CPU rehearsal.
    argv = [sys.executable, str(SCRIPT), "--dry-run", "--budget-s", "1740", "--out", str(out)]
    proc = subprocess.run(
        [*argv, "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=1800
    )
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert proc.returncode == 0, json.dumps(sections, indent=1)[-4000:]
    assert report["dry_run"] is True and report["device"] == "cpu"
    assert list(sections) == ["model", "captions", "dpo_on_the_fly", "dpo_precomputed", "serve"]
    assert all(s["status"] == "ok" for s in sections.values())
    captions = sections["captions"]
    assert (
        captions["vllm"]["captions"] == report["sizes"]["captions"] and captions["vllm"]["captions_per_s"] > 0
    )
    assert (
        captions["transformers"]["captions_per_s"] > 0
        and captions["vllm_over_transformers_captions_per_s"] > 0
    )
    for variant in ("dpo_on_the_fly", "dpo_precomputed"):
        dpo = sections[variant]
        assert dpo["steps"] == report["sizes"]["dpo_steps"] and dpo["first_step_s"] > 0
        assert all(loss == loss for loss in dpo["loss"])  # finite, not NaN
    assert sections["dpo_precomputed"]["reference_pass_s"] > 0
    assert sections["dpo_on_the_fly"]["reference_pass_s"] is None
    serve = sections["serve"]
    assert serve["failed"] == 0 and serve["requests_per_s"] > 0
    assert all(v["p50_latency_s"] > 0 for v in serve["by_max_tokens"].values())
