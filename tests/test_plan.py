"""`editcaption plan`: the demands of every shipped config, the sizing arithmetic of
docs/training-sizing.md, and whether they fit the shipped cluster (KubeRay worker groups rendered with
cluster/params.env) or a running Ray cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from editcaption.cli import app
from editcaption.planning import (
    Cluster,
    NodeType,
    cluster_from_ray,
    fit,
    model_size,
    plan_config,
    shipped_cluster,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted([*(ROOT / "ray_jobs" / "configs").glob("*.yaml"), *(ROOT / "serve_configs").glob("*.yaml")])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_fits_the_shipped_cluster(path: Path):
    """Jobs against the RayCluster the RayJobs select, Serve configs against the RayService's cluster.
    Every model a GPU demand names has a known size, so its memory per GPU was checked."""
    plan = plan_config(path)
    assert plan.demands
    for demand in plan.demands:
        if demand.gpus:
            assert demand.gpu_memory_gb is not None and demand.basis, demand.component
    result = fit(plan, shipped_cluster(for_serve=plan.kind == "serve"))
    assert result.ok, result.problems
    assert sum(len(spots) for spots in result.placed.values()) == sum(d.replicas for d in plan.demands)


@pytest.mark.parametrize(
    ("config", "per_gpu"),
    [  # docs/training-sizing.md, "Per-GPU totals (DPO, the heavier stage)"
        ("train-dpo-qwen3vl-2b.yaml", 25),
        ("train-dpo-qwen3vl-8b.yaml", 39),
        ("train-dpo-qwen3vl-32b.yaml", 52),
        ("train-dpo-qwen3vl-235b-a22b.yaml", 47),
    ],
)
def test_training_memory_follows_the_sizing_document(config: str, per_gpu: float):
    (demand,) = plan_config(ROOT / "ray_jobs" / "configs" / config).demands
    assert demand.gpu_memory_gb == pytest.approx(per_gpu, abs=1.0), demand.basis


def test_the_235b_full_fine_tune_needs_64_gpus_and_host_memory_for_its_optimizer():
    plan = plan_config(ROOT / "ray_jobs" / "configs" / "train-sft-qwen3vl-235b-a22b.yaml")
    (workers,) = plan.demands
    assert (workers.replicas, workers.gpus) == (64, 1)
    assert workers.host_memory_gb == pytest.approx(16 * 236 / 64)  # offloaded fp32 master + Adam + grads
    result = fit(plan, shipped_cluster(for_serve=False))
    assert result.ok and len(set(result.placed[workers.component])) == 8  # eight 8-GPU nodes
    small = shipped_cluster(for_serve=False)
    half = Cluster(
        "half",
        "test",
        tuple(t if t.gpus != 8 else NodeType(**{**t.__dict__, "count": 4}) for t in small.node_types),
    )
    assert not fit(plan, half).ok and "32 of 64" in fit(plan, half).problems[0]


def test_vllm_memory_and_tensor_parallel_placement():
    plan = plan_config(ROOT / "ray_jobs" / "configs" / "synthesis-glm45v-editscore.yaml")
    annotator, scorer = plan.demands
    assert (annotator.replicas, annotator.gpus) == (2, 4)
    # GLM-4.5V: 106 B x 2 bytes / TP 4 = 53 GB of weights per GPU, + KV of one 16k sequence + runtime.
    assert 53 < annotator.gpu_memory_gb < 58 and plan.download_gb == pytest.approx(2 * 106 + 2 * 8.8)
    one_gpu_nodes = Cluster(
        "l40s", "test", (NodeType("gpu-1x", 8, 96, gpus=1, gpu_name="NVIDIA-L40S", count=16),)
    )
    result = fit(plan, one_gpu_nodes)
    assert result.ok is False
    assert "1 GPU(s) per node, a replica needs 4" in result.problems[0]
    small_gpus = Cluster("a10g", "test", (NodeType("g5", 192, 768, gpus=8, gpu_name="A10G", count=4),))
    assert "24 GB GPUs give 22 GB, a replica needs 56 GB" in fit(plan, small_gpus).problems[0]


def test_models_are_recognised_by_id_or_path_and_local_folders_are_measured(tiny_model: Path):
    assert model_size("Qwen/Qwen3-VL-8B-Instruct").params_b == 8.8
    assert model_size("/models/editcaption/qwen3-vl-8b-sft").id == "Qwen/Qwen3-VL-8B-Instruct"
    assert model_size("s3://b/models/sft-qwen3vl-235b-a22b").params_b == 236
    assert model_size("/models/editscore-qwen3-vl-8b").params_b == 8.8
    assert model_size("some/unknown-model") is None
    measured = model_size(str(tiny_model))
    assert 0 < measured.params_b < 0.01 and measured.download == 0 and "measured" in measured.source


def test_cli_prints_the_plan_and_exits_by_fit():
    runner = CliRunner()
    fits = runner.invoke(
        app, ["plan", "--config", str(ROOT / "serve_configs" / "captioner-qwen3vl-235b-a22b.yaml")]
    )
    assert fits.exit_code == 0, fits.output
    assert "total: 16 GPUs" in fits.output and "fits" in fits.output and "gpu-8x" in fits.output
    missing = runner.invoke(app, ["plan", "--config", "no/such.yaml"])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_cli_says_what_does_not_fit(tmp_path: Path):
    cluster = tmp_path / "small.yaml"
    cluster.write_text(
        "apiVersion: ray.io/v1\nkind: RayCluster\nmetadata: {name: small}\nspec:\n  headGroupSpec: {}\n"
        "  workerGroupSpecs:\n  - groupName: one-gpu\n    maxReplicas: 2\n    template:\n      spec:\n"
        "        nodeSelector: {nvidia.com/gpu.product: NVIDIA-L40S}\n        containers:\n"
        "        - resources: {limits: {cpu: '8', memory: 64Gi, nvidia.com/gpu: '1'}}\n"
    )
    config = ROOT / "ray_jobs" / "configs" / "train-dpo-qwen3vl-8b.yaml"
    result = CliRunner().invoke(app, ["plan", "--config", str(config), "--cluster", str(cluster)])
    assert result.exit_code == 1
    assert "does not fit" in result.output and "2 of 8 replicas" in result.output


@pytest.mark.slow
def test_a_running_ray_cluster_is_read_through_its_state(tmp_path: Path):
    """A local Ray declaring 4 GPUs (Ray schedules declared GPUs without touching a device): the 8B
    captioner fits, the TP-8 235B one does not, and the reason says so."""
    import ray

    ray.shutdown()  # the session's shared Ray, if running: this test declares other resources
    ray.init(num_cpus=8, num_gpus=4, resources={"accelerator_type:H100": 1}, include_dashboard=False)
    try:
        address = ray.get_runtime_context().gcs_address
        cluster = cluster_from_ray(address)
        assert cluster.gpus == 4 and cluster.node_types[0].gpu_memory_gb == 80
        ok = fit(plan_config(ROOT / "serve_configs" / "captioner-qwen3vl-8b.yaml"), cluster)
        assert ok.ok, ok.problems
        too_big = fit(plan_config(ROOT / "serve_configs" / "captioner-qwen3vl-235b-a22b.yaml"), cluster)
        assert not too_big.ok and "needs 8 on one node" in too_big.problems[0]
        result = CliRunner().invoke(
            app,
            [
                "plan",
                "--config",
                str(ROOT / "serve_configs" / "captioner-qwen3vl-8b.yaml"),
                "--address",
                address,
            ],
        )
        assert result.exit_code == 0 and "4 GPUs now" in result.output, result.output
    finally:
        ray.shutdown()
