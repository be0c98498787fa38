"""`editcaption plan`: what a job asks of a cluster (GPUs, CPUs, memory per GPU, downloads) and whether
a cluster has it. See `plan.py`."""

from editcaption.planning.plan import (
    Cluster,
    Demand,
    Fit,
    ModelSize,
    NodeType,
    Plan,
    PlanError,
    cluster_from_file,
    cluster_from_manifest,
    cluster_from_ray,
    fit,
    model_size,
    plan_config,
    shipped_cluster,
)

__all__ = [
    "Cluster",
    "Demand",
    "Fit",
    "ModelSize",
    "NodeType",
    "Plan",
    "PlanError",
    "cluster_from_file",
    "cluster_from_manifest",
    "cluster_from_ray",
    "fit",
    "model_size",
    "plan_config",
    "shipped_cluster",
]
