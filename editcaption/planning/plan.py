"""What a job asks of a cluster, and whether a cluster has it (`editcaption plan`).

A job config (synthesis, caption, eval, SFT/DPO training) or a Serve config becomes a list of
`Demand`s: so many replicas of (GPUs on one node, CPUs, memory per GPU, host memory), each with the
arithmetic that gave the memory. GPU memory follows `docs/training-sizing.md` for training (bytes per
parameter under each DeepSpeed strategy, the DPO reference, ZeRO-3 buffers, activations per sequence)
and, for vLLM, weights / tensor-parallel size + one full-length sequence of KV cache + 2 GB of
runtime, inside `gpu_memory_utilization` of the GPU. Model sizes come from `data/model_sizes.yaml`
(with the source of each number) or, for a local checkpoint folder, from its files.

A `Cluster` is a set of node types with a most-nodes count: the worker groups of a KubeRay manifest
(rendered with `cluster/params.env`), or the nodes of a running Ray cluster. `fit` places every
demand on a node (first fit, largest demands first, smallest node type that takes it) and says
what does not fit and why.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

# CUDA context, vLLM's activations and sampler scratch, per GPU.
VLLM_RUNTIME_GB = 2.0
# A vLLM engine actor in a grouped stage (synthesis, eval) or a Serve replica reserves one CPU; the
# `ray.data.llm` stage (caption job) reserves one CPU per tensor-parallel bundle.
ENGINE_CPUS = 1.0
OPENAI_CPUS = 0.25
_QUANTITY = re.compile(r"^([0-9.]+)([A-Za-z]*)$")
_UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


class PlanError(ValueError):
    """A config or cluster description that cannot be planned; the message says which and why."""


# ---------------------------------------------------------------------- model sizes


@dataclass(frozen=True)
class ModelSize:
    """What the plan needs of a model; `source` says where the numbers come from."""

    id: str
    params_b: float
    source: str
    active_params_b: float | None = None
    kv_kib_per_token: float | None = None
    activation_gb_per_sequence: float = 4.0
    zero3_buffer_gb: float = 5.0
    match: tuple[str, ...] = ()
    download_gb: float | None = None

    @property
    def weights_gb(self) -> float:
        """bf16 weights: 2 bytes per parameter."""
        return 2 * self.params_b

    @property
    def download(self) -> float:
        return self.weights_gb if self.download_gb is None else self.download_gb


@cache
def _table() -> dict[str, Any]:
    text = resources.files("editcaption").joinpath("data/model_sizes.yaml").read_text()
    return yaml.safe_load(text)


def _norm(text: str) -> str:
    return re.sub(r"[-_\s]", "", text.lower())


def known_models() -> list[ModelSize]:
    out = []
    for entry in _table()["models"]:
        entry = dict(entry)
        entry["match"] = tuple(entry.get("match") or ())
        out.append(ModelSize(**entry))
    return out


def gpu_memory_gb(name: str | None) -> float | None:
    """Memory of one GPU of the named product (node label value or Ray accelerator type)."""
    if not name:
        return None
    entry = _table()["gpus"].get(name)
    return None if entry is None else float(entry["memory_gb"])


def model_size(model: str) -> ModelSize | None:
    """The size of `model`: a local checkpoint folder is measured (parameters from its safetensors
    header sizes at their dtype), anything else is looked up by id or `match` string."""
    folder = Path(model)
    if folder.is_dir() and (folder / "config.json").is_file():
        return _measured(folder)
    wanted = _norm(model)
    for size in known_models():
        if any(_norm(m) in wanted for m in (size.id, *size.match)):
            return size
    return None


def _measured(folder: Path) -> ModelSize:
    """A local checkpoint: parameters counted from its safetensors headers; nothing to download."""
    from safetensors import safe_open

    params = 0
    files = sorted(folder.glob("*.safetensors"))
    for path in files:
        with safe_open(path, "pt") as f:
            params += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())  # noqa: SIM118
    return ModelSize(
        id=str(folder),
        params_b=params / 1e9,
        source=f"measured: {len(files)} safetensors file(s) in {folder}",
        download_gb=0.0,
    )


# ---------------------------------------------------------------------- demands


@dataclass
class Demand:
    """One kind of schedulable unit: `replicas` copies of (GPUs on one node, CPUs, memory)."""

    component: str
    replicas: int
    gpus: float = 0.0
    cpus: float = 0.0
    gpu_memory_gb: float | None = None  # needed on each of its GPUs; None: unknown
    host_memory_gb: float = 0.0  # per replica, beyond what a process needs anyway
    basis: str = ""  # the arithmetic behind gpu_memory_gb
    model: str | None = None
    download_gb: float | None = None
    gpu_budget_fraction: float = 1.0  # vLLM may use gpu_memory_utilization of each GPU
    pack: bool = False  # replicas form one group (training workers): place them on as few nodes as can be
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """What one config asks for."""

    config: str
    kind: str
    demands: list[Demand]
    notes: list[str] = field(default_factory=list)

    @property
    def gpus(self) -> float:
        return sum(d.replicas * d.gpus for d in self.demands)

    @property
    def cpus(self) -> float:
        return sum(d.replicas * d.cpus for d in self.demands)

    @property
    def download_gb(self) -> float | None:
        sizes = {d.model: d.download_gb for d in self.demands if d.model}
        return None if None in sizes.values() else sum(sizes.values())  # type: ignore[arg-type]


def _vllm_demand(name: str, engine: Any, cpus_per_bundle: bool, replicas: int | None = None) -> Demand:
    tp = engine.tensor_parallel_size
    replicas = engine.replicas if replicas is None else replicas
    size = model_size(engine.model)
    cpus = float(tp) if cpus_per_bundle else ENGINE_CPUS
    if engine.device == "cpu":
        return Demand(
            f"{name} (vLLM, CPU)",
            replicas,
            cpus=cpus,
            model=engine.model,
            download_gb=None if size is None else size.download,
            basis="CPU engine: weights and KV cache in host memory",
        )
    demand = Demand(
        f"{name} (vLLM, TP {tp})",
        replicas,
        gpus=float(tp),
        cpus=cpus,
        model=engine.model,
        gpu_budget_fraction=engine.gpu_memory_utilization,
    )
    if size is None:
        demand.notes.append(f"model size unknown: add {engine.model!r} to editcaption/data/model_sizes.yaml")
        return demand
    weight_bytes = 4 if engine.dtype == "float32" else 2
    weights = weight_bytes / 2 * size.weights_gb / tp
    kv = (size.kv_kib_per_token or 0) * 1024 * engine.max_model_len / 1e9 / tp
    demand.gpu_memory_gb = weights + kv + VLLM_RUNTIME_GB
    demand.download_gb = size.download
    demand.basis = (
        f"weights {size.params_b:g} B x {weight_bytes} B / TP {tp} = {weights:.1f} GB"
        f" + KV of one {engine.max_model_len}-token sequence {kv:.1f} GB + runtime {VLLM_RUNTIME_GB:g} GB"
        f"; vLLM takes {engine.gpu_memory_utilization:.0%} of each GPU"
    )
    return demand


def _engine_demands(name: str, engine: Any, cpus_per_bundle: bool = False) -> list[Demand]:
    backend = engine.backend
    if backend == "vllm":
        return [_vllm_demand(name, engine, cpus_per_bundle)]
    if backend == "openai":
        key = f"; key from ${engine.api_key_env}" if engine.api_key_env else ""
        return [
            Demand(
                f"{name} (API {engine.model})",
                engine.replicas,
                cpus=OPENAI_CPUS,
                basis=f"HTTP client actors, {engine.max_concurrency} requests in flight each{key}",
            )
        ]
    size = model_size(engine.model)
    return [
        Demand(
            f"{name} (transformers)",
            engine.replicas,
            gpus=engine.gpus_per_replica,
            cpus=engine.cpus_per_replica,
            model=engine.model,
            download_gb=None if size is None else size.download,
            gpu_memory_gb=None if size is None or not engine.gpus_per_replica else size.weights_gb + 2,
            basis="" if size is None else f"weights {size.weights_gb:.1f} GB + 2 GB of activations",
        )
    ]


def _synthesis(config: Any) -> list[Demand]:
    if config.scorer == config.annotator:
        return _engine_demands("annotator + scorer", config.annotator)
    return _engine_demands("annotator", config.annotator) + _engine_demands("scorer", config.scorer)


def _caption(config: Any) -> list[Demand]:
    return _engine_demands("captioner", config.engine, cpus_per_bundle=True)


def _eval(config: Any) -> list[Demand]:
    demands = []
    for captioner in config.captioners:
        demands += _engine_demands(f"captioner {captioner.name}", captioner.engine)
    if config.judge is not None and all(c.engine != config.judge.engine for c in config.captioners):
        demands += _engine_demands(f"judge {config.judge.name}", config.judge.engine)
    return demands


def _training(config: Any, dpo: bool) -> list[Demand]:
    """docs/training-sizing.md: bytes per trained parameter under the DeepSpeed strategy, the DPO
    reference, ZeRO-3 buffers and activations per sequence (SFT: batch; DPO: 2 x batch)."""
    workers = config.workers
    n = workers.num_workers
    size = model_size(config.model)
    demand = Demand(
        f"{'DPO' if dpo else 'SFT'} worker ({config.finetune}, {config.deepspeed})",
        n,
        gpus=workers.gpus_per_worker,
        cpus=workers.cpus_per_worker,
        model=config.model,
        pack=True,
    )
    if size is None:
        demand.notes.append(f"model size unknown: add {config.model!r} to editcaption/data/model_sizes.yaml")
        return [demand]
    demand.download_gb = size.download
    if not workers.gpus_per_worker:
        demand.basis = "CPU training (gloo): states in host memory"
        return [demand]
    psi = size.params_b
    stage = config.deepspeed
    parts: list[tuple[str, float]] = []
    host = 0.0
    if config.finetune == "lora":
        parts.append(("frozen bf16 base 2Ψ" + ("/N" if stage.startswith("zero3") else ""),
                      2 * psi / (n if stage.startswith("zero3") else 1)))  # fmt: skip
    elif stage == "zero2":
        parts.append(("2Ψ + 14Ψ/N", 2 * psi + 14 * psi / n))
    elif stage == "zero3_offload":
        parts.append(("4Ψ/N", 4 * psi / n))
        host = 16 * psi / n
    elif stage.startswith("zero3"):
        parts.append(("16Ψ/N", 16 * psi / n))
    else:  # none, or a custom file: plain data parallel
        parts.append(("16Ψ (no sharding)", 16 * psi))
    if dpo and config.finetune == "full":
        sharded = stage.startswith("zero3")
        parts.append(("reference 2Ψ" + ("/N" if sharded else ""), 2 * psi / (n if sharded else 1)))
    if stage.startswith("zero3"):
        parts.append(("ZeRO-3 buffers", size.zero3_buffer_gb))
    else:
        parts.append(("buckets", 1.0))
    sequences = config.per_device_train_batch_size * (2 if dpo else 1)
    parts.append((f"activations {sequences} seq", sequences * size.activation_gb_per_sequence))
    demand.gpu_memory_gb = sum(v for _, v in parts)
    demand.host_memory_gb = host
    demand.basis = f"Ψ = {psi:g} B, N = {n}: " + " + ".join(f"{label} {v:.1f}" for label, v in parts)
    if host:
        demand.basis += f"; host RAM per worker 16Ψ/N = {host:.0f} GB (offloaded optimizer)"
    return [demand]


def _serve(data: dict[str, Any]) -> list[Demand]:
    from editcaption.serving.config import ServeConfig

    demands = []
    for app in data.get("applications") or []:
        if not str(app.get("import_path", "")).startswith("editcaption.serving"):
            continue
        config = ServeConfig.model_validate(app.get("args") or {})
        deployments = {d["name"]: d for d in app.get("deployments") or []}
        for name, deployment in (("Captioner", config.captioner), ("Scorer", config.scorer)):
            if deployment is None:
                continue
            scaling = (deployments.get(name) or {}).get("autoscaling_config") or {}
            replicas = int(
                scaling.get("max_replicas") or (deployments.get(name) or {}).get("num_replicas") or 1
            )
            demand = _vllm_demand(f"{app['name']}/{name}", deployment.engine, False, replicas=replicas)
            if scaling:
                demand.notes.append(
                    f"autoscales {scaling.get('min_replicas', 1)}..{replicas} replicas; planned at the most"
                )
            demands.append(demand)
        ingress = deployments.get("CaptionerAPI") or {}
        scaling = ingress.get("autoscaling_config") or {}
        cpus = float((ingress.get("ray_actor_options") or {}).get("num_cpus", OPENAI_CPUS))
        replicas = int(scaling.get("max_replicas") or ingress.get("num_replicas") or 1)
        demands.append(
            Demand(f"{app['name']}/CaptionerAPI (HTTP)", replicas, cpus=cpus, basis="FastAPI ingress")
        )
    if not demands:
        raise PlanError("no editcaption application in this Serve config")
    return demands


def config_kind(data: dict[str, Any], path: Path) -> str:
    """serve, synthesis, caption, eval, sft or dpo, from the config's keys (and name for training)."""
    if "applications" in data:
        return "serve"
    if "captioners" in data:
        return "eval"
    if "annotator" in data:
        return "synthesis"
    if "engine" in data:
        return "caption"
    if "workers" in data or "deepspeed" in data or "finetune" in data:
        dpo_keys = {"objective", "beta", "hae", "hard_negatives"}
        return "dpo" if dpo_keys & set(data) or "dpo" in path.name else "sft"
    raise PlanError(
        f"{path}: not a job or Serve config (no applications, captioners, annotator, engine or workers)"
    )


def plan_config(path: str | Path) -> Plan:
    """The demands of the config at `path` (validated by its own model first)."""
    from editcaption.config import ConfigError, load_config

    path = Path(path)
    if not path.is_file():
        raise PlanError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise PlanError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise PlanError(f"{path} must hold a mapping")
    kind = config_kind(data, path)
    if kind == "serve":
        try:
            return Plan(str(path), kind, _serve(data))
        except ValueError as e:
            raise PlanError(f"{path}: {e}") from e
    models = _config_models()
    try:
        config = load_config(path, models[kind])
    except ConfigError as e:
        raise PlanError(str(e)) from e
    demands = {
        "synthesis": _synthesis,
        "caption": _caption,
        "eval": _eval,
        "sft": lambda c: _training(c, dpo=False),
        "dpo": lambda c: _training(c, dpo=True),
    }[kind](config)
    notes = []
    if kind in ("synthesis", "caption", "eval"):
        notes.append("plus Ray Data's reading and request-building tasks, 0.25 CPU each, on any node")
    return Plan(str(path), kind, demands, notes)


def _config_models() -> dict[str, type]:
    from editcaption.evaluation.job import EvalConfig
    from editcaption.synthesis.caption import CaptionJobConfig
    from editcaption.synthesis.config import SynthesisConfig
    from editcaption.training.dpo import DPOJobConfig
    from editcaption.training.sft import SFTJobConfig

    return {
        "synthesis": SynthesisConfig,
        "caption": CaptionJobConfig,
        "eval": EvalConfig,
        "sft": SFTJobConfig,
        "dpo": DPOJobConfig,
    }


# ---------------------------------------------------------------------- clusters


@dataclass(frozen=True)
class NodeType:
    """Nodes of one shape; `count` is how many the cluster can have (a worker group's maxReplicas)."""

    name: str
    cpus: float
    memory_gb: float
    gpus: int = 0
    gpu_name: str | None = None
    count: int = 1

    @property
    def gpu_memory_gb(self) -> float | None:
        return gpu_memory_gb(self.gpu_name)


@dataclass(frozen=True)
class Cluster:
    name: str
    source: str
    node_types: tuple[NodeType, ...]

    @property
    def gpus(self) -> int:
        return sum(t.gpus * t.count for t in self.node_types)


def quantity(value: Any) -> float:
    """A Kubernetes quantity ("8", "500m", "96Gi") as a number (bytes for memory)."""
    text = str(value).strip()
    if text.endswith("m") and text[:-1].replace(".", "").isdigit():
        return float(text[:-1]) / 1000
    match = _QUANTITY.match(text)
    if not match or match.group(2) not in _UNITS:
        raise PlanError(f"not a Kubernetes quantity: {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def cluster_from_manifest(doc: dict[str, Any], source: str) -> Cluster:
    """The worker groups of a RayCluster (or a RayService's cluster) manifest, already rendered."""
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "RayService":
        spec = spec.get("rayClusterConfig") or {}
    elif kind != "RayCluster":
        raise PlanError(f"{source}: a {kind} has no worker groups (use the RayCluster or RayService)")
    types = []
    for group in spec.get("workerGroupSpecs") or []:
        pod = group["template"]["spec"]
        limits = pod["containers"][0].get("resources", {}).get("limits", {})
        gpus = int(quantity(limits.get("nvidia.com/gpu", 0)))
        selector = pod.get("nodeSelector") or {}
        gpu_name = next((v for k, v in selector.items() if "gpu" in k), None) if gpus else None
        types.append(
            NodeType(
                name=group["groupName"],
                cpus=quantity(limits.get("cpu", 0)),
                memory_gb=quantity(limits.get("memory", 0)) / 1e9,
                gpus=gpus,
                gpu_name=gpu_name,
                count=int(group.get("maxReplicas", group.get("replicas", 1))),
            )
        )
    name = (doc.get("metadata") or {}).get("name", "cluster")
    return Cluster(name, source, tuple(types))


CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"


def _render(path: Path, params: Path | None) -> dict[str, Any]:
    """A manifest with its ${NAME} placeholders filled by `cluster/render.py` (the same renderer
    `python cluster/render.py` runs) from `params` (default: cluster/params.env)."""
    import importlib.util

    renderer = CLUSTER_DIR / "render.py"
    if not renderer.is_file():
        raise PlanError(f"no cluster/render.py beside the package ({CLUSTER_DIR}) to fill {path}")
    spec = importlib.util.spec_from_file_location("editcaption_cluster_render", renderer)
    render = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(render)  # type: ignore[union-attr]
    values = render.read_params(params or CLUSTER_DIR / "params.env")
    return yaml.safe_load(render.render(path.read_text(), values, path.name))


def shipped_cluster(for_serve: bool, params: Path | None = None) -> Cluster:
    """The shipped KubeRay cluster a config runs on: the RayService's for Serve configs, else the
    RayCluster the RayJobs select; both rendered with `cluster/params.env` (or `params`)."""
    manifest = CLUSTER_DIR / "kuberay" / ("rayservice.yaml" if for_serve else "raycluster.yaml")
    if not manifest.is_file():
        raise PlanError(f"no shipped manifest at {manifest}; pass --cluster MANIFEST")
    source = f"cluster/kuberay/{manifest.name} with {params or 'cluster/params.env'}"
    return cluster_from_manifest(_render(manifest, params), source)


def cluster_from_file(path: Path, params: Path | None = None) -> Cluster:
    """A RayCluster or RayService manifest; a template (with ${NAME}) is rendered with the params."""
    if not path.is_file():
        raise PlanError(f"cluster manifest not found: {path}")
    text = path.read_text()
    doc = _render(path, params) if "${" in text else yaml.safe_load(text)
    return cluster_from_manifest(doc, str(path))


def cluster_from_ray(address: str) -> Cluster:
    """The nodes a running Ray cluster has now (Ray's state: `ray.nodes()`), one type per node."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources()
    finally:
        if started:
            ray.shutdown()
    types = []
    for node in nodes:
        res = node.get("Resources") or {}
        accelerator = next((k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:")), None)
        types.append(
            NodeType(
                name=node.get("NodeManagerAddress", "node")
                + ("" if not res.get("GPU") else f" ({accelerator or 'GPU'})"),
                cpus=float(res.get("CPU", 0)),
                memory_gb=float(res.get("memory", 0)) / 1e9,
                gpus=int(res.get("GPU", 0)),
                gpu_name=accelerator,
                count=1,
            )
        )
    source = f"Ray at {address}: {len(nodes)} node(s), {total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs now"
    return Cluster(address, source, tuple(types))


# ---------------------------------------------------------------------- fit


@dataclass
class Fit:
    """Where each replica went (node type and index), and what did not fit, with the reason."""

    cluster: Cluster
    placed: dict[str, list[str]]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Node:
    kind: NodeType
    index: int
    cpus: float
    gpus: int
    memory_gb: float
    used: bool = False

    @property
    def label(self) -> str:
        return f"{self.kind.name}#{self.index}"


def _why_not(d: Demand, t: NodeType) -> str | None:
    """Why no node of type `t` could ever hold one replica of `d` (None: one could)."""
    if d.gpus > t.gpus:
        return f"{t.name} has {t.gpus} GPU(s) per node, a replica needs {d.gpus:g} on one node"
    if d.gpus and d.gpu_memory_gb is not None and t.gpu_memory_gb is not None:
        budget = d.gpu_budget_fraction * t.gpu_memory_gb
        if d.gpu_memory_gb > budget:
            return f"{t.name}'s {t.gpu_memory_gb:g} GB GPUs give {budget:.0f} GB, a replica needs {d.gpu_memory_gb:.0f} GB"
    if d.cpus > t.cpus:
        return f"{t.name} has {t.cpus:g} CPUs per node, a replica needs {d.cpus:g}"
    if d.host_memory_gb > t.memory_gb:
        return f"{t.name} has {t.memory_gb:.0f} GB of memory, a replica needs {d.host_memory_gb:.0f} GB"
    return None


def fit(plan: Plan, cluster: Cluster) -> Fit:
    """Place every replica of every demand, largest demands first. All replicas of a demand go to nodes
    of one type: for engines the smallest type that holds them (replicas are independent), for training
    workers the type with the most GPUs per node (a data-parallel group wants few, fast-linked nodes).
    GPU demands go to GPU nodes only; CPU demands prefer CPU nodes. Nodes already in use fill first."""
    nodes: list[_Node] = []
    for t in cluster.node_types:
        nodes += [_Node(t, i, t.cpus, t.gpus, t.memory_gb) for i in range(t.count)]
    placed: dict[str, list[str]] = {}
    problems: list[str] = []
    for d in sorted(plan.demands, key=lambda d: (d.gpus, d.cpus, d.host_memory_gb), reverse=True):
        types = [t for t in cluster.node_types if _why_not(d, t) is None and (t.gpus > 0) == (d.gpus > 0)]
        if not types and not d.gpus:
            types = [t for t in cluster.node_types if _why_not(d, t) is None]
        if not types:
            reasons = [r for t in cluster.node_types if (r := _why_not(d, t))]
            problems.append(f"{d.component}: no node can hold a replica ({'; '.join(reasons) or 'no nodes'})")
            continue
        order = (lambda t: (-t.gpus, -t.cpus)) if d.pack else (lambda t: (t.gpus, t.cpus))
        best: list[_Node] = []
        for t in sorted(types, key=order):
            spots = _place(d, [n for n in nodes if n.kind is t])
            if len(spots) == d.replicas:
                best = spots
                break
            best = max(best, spots, key=len)
        for node in best:
            node.gpus -= int(d.gpus)
            node.cpus -= d.cpus
            node.memory_gb -= d.host_memory_gb
            node.used = True
        placed[d.component] = [n.label for n in best]
        if len(best) < d.replicas:
            problems.append(
                f"{d.component}: only {len(best)} of {d.replicas} replicas fit on nodes of one type "
                f"({d.gpus:g} GPU, {d.cpus:g} CPU, {d.host_memory_gb:.0f} GB each; "
                f"node types that could hold one: {', '.join(t.name for t in types)})"
            )
    return Fit(cluster, placed, problems)


def _place(d: Demand, nodes: list[_Node]) -> list[_Node]:
    """Nodes (repeated per replica) that take the demand's replicas, in use first; nothing is reserved."""
    free = {id(n): [n.gpus, n.cpus, n.memory_gb] for n in nodes}
    spots: list[_Node] = []
    for _ in range(d.replicas):
        room = [
            n for n in nodes
            if free[id(n)][0] >= d.gpus and free[id(n)][1] >= d.cpus - 1e-9 and free[id(n)][2] >= d.host_memory_gb
        ]  # fmt: skip
        if not room:
            break
        node = min(room, key=lambda n: (not (n.used or n in spots), n.index))
        free[id(node)][0] -= int(d.gpus)
        free[id(node)][1] -= d.cpus
        free[id(node)][2] -= d.host_memory_gb
        spots.append(node)
    return spots
