"""Fast checks of what the cluster tests rely on, without starting Ray: engine configs turn `resources`
into the Ray options of their replicas, the laptop-cluster job configs ask for the node type the docs'
`ray start` lines offer, and `LocalCluster.stop()` ends its own processes and no others."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from editcaption.config import load_config
from editcaption.engines import OpenAIEngineConfig, TransformersEngineConfig, VLLMEngineConfig, make_engine
from editcaption.evaluation.job import EvalConfig
from editcaption.local_cluster import MARKER_ENV, LocalCluster
from editcaption.synthesis.config import SynthesisConfig
from editcaption.training.sft import SFTJobConfig

ROOT = Path(__file__).resolve().parents[1]
NODE_TYPE = {"gpu-1x": 1.0}


@pytest.mark.parametrize(
    "config",
    [
        VLLMEngineConfig(model="/m", device="cpu", resources=NODE_TYPE),
        VLLMEngineConfig(model="/m", device="gpu", resources=NODE_TYPE),
        TransformersEngineConfig(model="/m", resources=NODE_TYPE),
        OpenAIEngineConfig(
            model="m", base_url="http://127.0.0.1:1/v1", api_key_env=None, resources=NODE_TYPE
        ),
    ],
    ids=["vllm-cpu", "vllm-gpu", "transformers", "openai"],
)
def test_engine_replicas_reserve_the_custom_resources(config) -> None:
    _, _, options = make_engine(config).predictor()  # the grouped actors' and Serve replicas' options
    assert options["resources"] == NODE_TYPE
    plain = make_engine(config.model_copy(update={"resources": {}})).predictor()[2]
    assert "resources" not in plain  # nothing asked for, nothing passed to Ray


def test_ray_data_llm_bundles_share_a_replicas_resources() -> None:
    """A tensor-parallel replica's bundles each carry their share, so every bundle lands on such a node."""
    config = VLLMEngineConfig(model="/m", device="gpu", tensor_parallel_size=4, resources={"gpu-8x": 1})
    bundles = config.processor_config().placement_group_config["bundles"]
    assert [b["gpu-8x"] for b in bundles] == [0.25] * 4 and all(b["GPU"] == 1 for b in bundles)


def test_serve_engine_replicas_get_the_resources() -> None:
    from editcaption.serving.app import engine_deployment
    from editcaption.serving.config import EngineDeploymentConfig

    deployment = engine_deployment(
        "Captioner",
        EngineDeploymentConfig(engine=VLLMEngineConfig(model="/m", device="cpu", resources=NODE_TYPE)),
    )
    assert deployment._bound_deployment.ray_actor_options["resources"] == NODE_TYPE


def test_resources_must_be_numbers() -> None:
    with pytest.raises(ValueError, match="resources"):
        TransformersEngineConfig(model="/m", resources={"gpu-1x": "one"})


def _offered_resources() -> set[str]:
    """Custom resources the docs' laptop walk-through starts its worker nodes with."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    offered = set()
    for line in re.findall(r"^ray start .*$", text, re.MULTILINE):
        argv = shlex.split(line)
        if "--resources" in argv:
            offered |= set(json.loads(argv[argv.index("--resources") + 1]))
    return offered


def test_laptop_configs_ask_for_the_node_type_the_walkthrough_starts() -> None:
    offered = _offered_resources()
    assert offered == {"gpu-1x"}
    configs = ROOT / "ray_jobs" / "configs"
    synthesis = load_config(configs / "synthesis-laptop-cluster.yaml", SynthesisConfig)
    evaluation = load_config(configs / "eval-laptop-cluster.yaml", EvalConfig)
    sft = load_config(configs / "train-sft-laptop-cluster.yaml", SFTJobConfig)
    engines = [synthesis.annotator, synthesis.scorer, *(c.engine for c in evaluation.captioners)]
    assert all(set(e.resources) == offered for e in engines)
    assert set(sft.workers.resources_per_worker) == offered and sft.workers.max_failures > 0
    text = (ROOT / "docs" / "cluster.md").read_text()
    for name in ("synthesis-laptop-cluster", "eval-laptop-cluster", "train-sft-laptop-cluster"):
        assert f"ray_jobs/configs/{name}.yaml" in text


def test_stop_ends_the_clusters_processes_and_no_other(tmp_path: Path) -> None:
    """Processes are told apart by a marker in their environment, which children inherit: a process
    of this cluster (and its child) is ended, one of another cluster and an unmarked one are not."""
    ours, theirs = LocalCluster(), LocalCluster()
    sleep = [
        sys.executable,
        "-c",
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)",
    ]
    procs = {
        "ours": subprocess.Popen(sleep, env={**os.environ, MARKER_ENV: ours.id}),
        "theirs": subprocess.Popen(sleep, env={**os.environ, MARKER_ENV: theirs.id}),
        "unmarked": subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            env={k: v for k, v in os.environ.items() if k != MARKER_ENV},
        ),
    }
    try:
        deadline = time.time() + 60
        while len(ours.pids()) < 2 and time.time() < deadline:  # the child, too
            time.sleep(0.2)
        assert len(ours.pids()) == 2 and procs["ours"].pid in ours.pids()
        ours.stop(grace_s=5)
        assert procs["ours"].wait(timeout=30) is not None and ours.pids() == []
        assert procs["theirs"].poll() is None and procs["unmarked"].poll() is None
        assert len(theirs.pids()) == 2
    finally:
        theirs.stop(grace_s=5)
        procs["unmarked"].kill()
        for proc in procs.values():
            proc.wait(timeout=30)
