"""Cluster manifests: rendered with the default parameters, they match the KubeRay v1 fields they use
(a compact schema below), the cluster-launcher YAML passes Ray's own validator, and every command
they run exists: the `ray_jobs/*.py` files, the CLI options those scripts hand to `editcaption`, and
the config files.

The KubeRay schema lists only fields of `ray.io/v1` RayCluster, RayJob and RayService specs that
exist in every KubeRay 1.x release (names from the operator's `apis/ray/v1/*_types.go`); Kubernetes'
own pod template is checked only for what our manifests rely on.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "cluster"))

import render  # noqa: E402

# Entry points and job configs the cluster runs (stages written in parallel; a missing one fails).
PLANNED = [
    "ray_jobs/synthesize.py",
    "ray_jobs/train_sft.py",
    "ray_jobs/train_dpo.py",
    "ray_jobs/evaluate.py",
    "ray_jobs/configs/synthesis-glm45v-editscore.yaml",
    "ray_jobs/configs/train-sft-qwen3vl-8b.yaml",
    "ray_jobs/configs/train-dpo-qwen3vl-8b.yaml",
    "ray_jobs/configs/eval-paper-protocol.yaml",
]

_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_INT = {"type": "integer", "minimum": 0}
_RESOURCES = {
    "type": "object",
    "properties": {"requests": _STR_MAP, "limits": _STR_MAP},
    "additionalProperties": False,
}
_CONTAINER = {
    "type": "object",
    "required": ["name", "image"],
    "properties": {"name": {"type": "string"}, "image": {"type": "string"}, "resources": _RESOURCES},
}
_POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
                "nodeSelector": _STR_MAP,
            },
        }
    },
}
_HEAD = {
    "type": "object",
    "required": ["rayStartParams", "template"],
    "additionalProperties": False,
    "properties": {
        "serviceType": {"type": "string"},
        "headService": {"type": "object"},
        "enableIngress": {"type": "boolean"},
        "rayStartParams": _STR_MAP,
        "template": _POD_TEMPLATE,
    },
}
_WORKER = {
    "type": "object",
    "required": ["groupName", "rayStartParams", "template", "minReplicas", "maxReplicas"],
    "additionalProperties": False,
    "properties": {
        "groupName": {"type": "string"},
        "replicas": _INT,
        "minReplicas": _INT,
        "maxReplicas": _INT,
        "numOfHosts": _INT,
        "rayStartParams": _STR_MAP,
        "template": _POD_TEMPLATE,
        "scaleStrategy": {"type": "object"},
    },
}
RAY_CLUSTER_SPEC = {
    "type": "object",
    "required": ["headGroupSpec"],
    "additionalProperties": False,
    "properties": {
        "headGroupSpec": _HEAD,
        "workerGroupSpecs": {"type": "array", "items": _WORKER},
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "resources": _RESOURCES,
                "image": {"type": "string"},
                "imagePullPolicy": {"type": "string"},
                "env": {"type": "array"},
                "envFrom": {"type": "array"},
                "volumeMounts": {"type": "array"},
                "securityContext": {"type": "object"},
                "idleTimeoutSeconds": _INT,
                "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
            },
        },
        "headServiceAnnotations": _STR_MAP,
        "suspend": {"type": "boolean"},
    },
}
RAY_JOB_SPEC = {
    "type": "object",
    "required": ["entrypoint"],
    "additionalProperties": False,
    "properties": {
        "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
        "backoffLimit": _INT,
        "rayClusterSpec": RAY_CLUSTER_SPEC,
        "submitterPodTemplate": _POD_TEMPLATE,
        "metadata": _STR_MAP,
        "clusterSelector": _STR_MAP,
        "submitterConfig": {"type": "object"},
        "entrypoint": {"type": "string"},
        "runtimeEnvYAML": {"type": "string"},
        "jobId": {"type": "string"},
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
        "entrypointResources": {"type": "string"},
        "entrypointNumCpus": {"type": "number"},
        "entrypointNumGpus": {"type": "number"},
        "ttlSecondsAfterFinished": _INT,
        "shutdownAfterJobFinishes": {"type": "boolean"},
        "suspend": {"type": "boolean"},
    },
    "oneOf": [{"required": ["rayClusterSpec"]}, {"required": ["clusterSelector"]}],
}
RAY_SERVICE_SPEC = {
    "type": "object",
    "required": ["serveConfigV2", "rayClusterConfig"],
    "additionalProperties": False,
    "properties": {
        "serveConfigV2": {"type": "string"},
        "rayClusterConfig": RAY_CLUSTER_SPEC,
        "upgradeStrategy": {
            "type": "object",
            "properties": {"type": {"enum": ["NewCluster", "None"]}},
            "additionalProperties": False,
        },
        "serviceUnhealthySecondThreshold": _INT,
        "deploymentUnhealthySecondThreshold": _INT,
        "excludeHeadPodFromServeSvc": {"type": "boolean"},
    },
}
SPECS = {"RayCluster": RAY_CLUSTER_SPEC, "RayJob": RAY_JOB_SPEC, "RayService": RAY_SERVICE_SPEC}


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    params = render.read_params(ROOT / "cluster" / "params.env")
    return {
        str(t.relative_to(ROOT / "cluster")): yaml.safe_load(render.render(t.read_text(), params, t.name))
        for t in render.templates()
    }


def _manifests(rendered: dict[str, Any]) -> dict[str, Any]:
    """The KubeRay documents (the model cache's PersistentVolumeClaim is core Kubernetes)."""
    return {
        name: doc
        for name, doc in rendered.items()
        if name.startswith("kuberay/") and doc["kind"] != "PersistentVolumeClaim"
    }


def test_every_kind_is_there(rendered: dict[str, Any]) -> None:
    kinds = sorted(doc["kind"] for name, doc in rendered.items() if name.startswith("kuberay/"))
    assert kinds == [
        "PersistentVolumeClaim",
        "RayCluster",
        "RayJob",
        "RayJob",
        "RayJob",
        "RayJob",
        "RayService",
    ]
    assert "launcher/editcaption-aws.yaml" in rendered


def test_manifests_match_the_kuberay_v1_fields(rendered: dict[str, Any]) -> None:
    for name, doc in _manifests(rendered).items():
        assert doc["apiVersion"] == "ray.io/v1", name
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, name
        assert doc["metadata"]["name"] and doc["metadata"]["namespace"], name
        jsonschema.validate(doc["spec"], SPECS[doc["kind"]])


def test_the_schema_catches_a_misspelt_field(rendered: dict[str, Any]) -> None:
    spec = dict(rendered["kuberay/raycluster.yaml"]["spec"])
    spec["enableInTreeAutoscalling"] = True
    with pytest.raises(jsonschema.ValidationError, match="enableInTreeAutoscalling"):
        jsonschema.validate(spec, RAY_CLUSTER_SPEC)


def _clusters(rendered: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        rendered["kuberay/raycluster.yaml"]["spec"],
        rendered["kuberay/rayservice.yaml"]["spec"]["rayClusterConfig"],
    ]


def test_clusters_autoscale_gpu_groups(rendered: dict[str, Any]) -> None:
    for cluster in _clusters(rendered):
        assert cluster["enableInTreeAutoscaling"] is True
        assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        gpu_groups = 0
        for group in cluster["workerGroupSpecs"]:
            assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], group[
                "groupName"
            ]
            assert group["maxReplicas"] >= 1
            for container in group["template"]["spec"]["containers"]:
                resources = container["resources"]
                assert resources["requests"] == resources["limits"], group["groupName"]
                if "nvidia.com/gpu" in resources["limits"]:
                    gpu_groups += 1
                    assert group["template"]["spec"]["nodeSelector"], "GPU groups select GPU nodes"
        assert gpu_groups >= 1
    groups = {g["groupName"] for g in rendered["kuberay/raycluster.yaml"]["spec"]["workerGroupSpecs"]}
    assert groups == {"cpu", "gpu-1x", "gpu-8x"}


def test_launcher_passes_rays_validator(rendered: dict[str, Any]) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = rendered["launcher/editcaption-aws.yaml"]
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu_types = {name for name, t in types.items() if t["node_config"]["InstanceType"].startswith(("g", "p"))}
    assert gpu_types == {"gpu-1x", "gpu-8x"} and all(
        types[t]["max_workers"] > types[t]["min_workers"] for t in gpu_types
    )


def test_launcher_validator_refuses_an_unknown_key(rendered: dict[str, Any]) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = {**rendered["launcher/editcaption-aws.yaml"], "idle_timeout_minute": 3}
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


def test_planned_entry_points_and_configs_exist() -> None:
    missing = [path for path in PLANNED if not (ROOT / path).is_file()]
    assert not missing, f"the cluster runs these, but they do not exist yet: {missing}"


def _command_for_script(script: Path) -> Any:
    """The click command a `ray_jobs/*.py` script hands its arguments to (`app(["train", "sft", ...])`)."""
    import typer.main

    from editcaption.cli import app

    match = re.search(r"app\(\[((?:\"[a-z-]+\",\s*)+)\*sys\.argv", script.read_text())
    assert match, f"{script} does not call the editcaption app"
    names = re.findall(r"\"([a-z-]+)\"", match.group(1))
    command = typer.main.get_command(app)
    for name in names:
        command = command.commands[name]
    return command


def _check_command_line(argv: list[str], where: str) -> None:
    """`python <app dir>/ray_jobs/X.py --opt value ...` or `editcaption sub ... --opt value`: the script
    or command exists, each option is one of its options, and `--config` names an existing file."""
    import typer.main

    from editcaption.cli import app

    if argv[0] == "python":
        script = ROOT / re.sub(r"^(/app/|\./)", "", argv[1])
        assert script.is_file(), f"{where}: {argv[1]} does not exist"
        command, rest = _command_for_script(script), argv[2:]
    else:
        assert argv[0] == "editcaption", where
        command, rest = typer.main.get_command(app), argv[1:]
        while rest and hasattr(command, "commands") and not rest[0].startswith("-"):
            assert rest[0] in command.commands, f"{where}: no command `{rest[0]}` in {command.name}"
            command, rest = command.commands[rest[0]], rest[1:]
    known = {opt for param in command.params for opt in param.opts + param.secondary_opts}
    for i, arg in enumerate(rest):
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            assert name in known, f"{where}: {command.name} has no option {name} (it has {sorted(known)})"
            if name == "--config":
                path = ROOT / re.sub(r"^/app/", "", rest[i + 1])
                assert path.is_file(), f"{where}: config {rest[i + 1]} does not exist"


def test_every_job_command_exists(rendered: dict[str, Any]) -> None:
    jobs = {n: d for n, d in _manifests(rendered).items() if d["kind"] == "RayJob"}
    assert len(jobs) == 4
    for name, doc in jobs.items():
        _check_command_line(shlex.split(doc["spec"]["entrypoint"]), name)


def test_the_endpoint_serves_a_valid_serve_config(rendered: dict[str, Any]) -> None:
    from ray.serve.schema import ServeDeploySchema

    from editcaption.serving.config import ServeConfig

    service = rendered["kuberay/rayservice.yaml"]["spec"]
    serve_config = ServeDeploySchema.model_validate(yaml.safe_load(service["serveConfigV2"]))
    assert serve_config.http_options.port == 8000 and serve_config.http_options.host == "0.0.0.0"
    args = ServeConfig.model_validate(serve_config.applications[0].args)
    assert args.auth.mode == "required"
    mounts = [
        m["mountPath"]
        for group in [
            service["rayClusterConfig"]["headGroupSpec"],
            *service["rayClusterConfig"]["workerGroupSpecs"],
        ]
        for c in group["template"]["spec"]["containers"]
        for m in c.get("volumeMounts", [])
    ]
    pods = 1 + len(service["rayClusterConfig"]["workerGroupSpecs"])
    assert mounts.count(str(Path(args.auth.key_hashes_file).parent)) == pods, (
        "every node can read the key digests"
    )


def test_render_refuses_a_missing_parameter() -> None:
    with pytest.raises(ValueError, match="NOT_A_PARAM"):
        render.render("image: ${IMAGE}\nx: ${NOT_A_PARAM}\n", {"IMAGE": "i"})


def test_render_cli_writes_every_manifest(tmp_path: Path) -> None:
    assert render.main(["--out", str(tmp_path)]) == 0
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.yaml"))
    assert written == sorted(str(t.relative_to(ROOT / "cluster")) for t in render.templates())
    assert "${" not in "".join(p.read_text() for p in tmp_path.rglob("*.yaml")).replace("$RAY_HEAD_IP", "")


def _doc_commands() -> list[tuple[str, list[str]]]:
    """Command lines in docs/cluster.md's shell blocks that run our code."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            argv = shlex.split(line) if line else []
            if "--" in argv and argv[:3] == ["ray", "job", "submit"]:
                argv = argv[argv.index("--") + 1 :]
            if argv and (argv[0] == "editcaption" or (argv[0] == "python" and "ray_jobs/" in argv[1])):
                out.append((line, argv))
    return out


def test_commands_in_the_cluster_docs_exist() -> None:
    commands = _doc_commands()
    assert len(commands) >= 6
    for line, argv in commands:
        _check_command_line(argv, f"docs/cluster.md: {line}")


def _pods(cluster: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    groups = [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
    return [(name, group["template"]["spec"]) for name, group in groups]


def test_model_cache_is_a_shared_volume_at_hf_home_in_every_pod(rendered: dict[str, Any]) -> None:
    """Weights land once in the ReadWriteMany claim, mounted where HF_HOME points in every Ray pod, never
    on a container's own disk; the RayJobs' runtime env points there too."""
    params = render.read_params(ROOT / "cluster" / "params.env")
    claim = rendered["kuberay/model-cache.yaml"]
    assert claim["apiVersion"] == "v1" and claim["metadata"]["name"] == params["MODEL_CACHE_PVC"]
    assert (
        claim["spec"]["accessModes"] == ["ReadWriteMany"]
        and claim["spec"]["resources"]["requests"]["storage"]
    )
    path = params["MODEL_CACHE_PATH"]
    assert not path.startswith("/tmp")
    for cluster in _clusters(rendered):
        for name, pod in _pods(cluster):
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for container in pod["containers"]:
                env = {e["name"]: e for e in container.get("env", [])}
                assert env["HF_HOME"].get("value") == path, name
                mounted = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                volume = volumes[mounted[path]]
                assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"], name
    for name, doc in _manifests(rendered).items():
        if doc["kind"] == "RayJob":
            assert yaml.safe_load(doc["spec"]["runtimeEnvYAML"])["env_vars"]["HF_HOME"] == path, name
    options = rendered["launcher/editcaption-aws.yaml"]["docker"]["run_options"]
    assert f"--env HF_HOME={path}" in options and any(o.endswith(f":{path}") for o in options)


def _api_key_envs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["api_key_env"]} if isinstance(node.get("api_key_env"), str) else set()
        return found.union(*(_api_key_envs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_api_key_envs(v) for v in node))
    return set()


def test_api_keys_come_from_a_secret_in_every_pod(rendered: dict[str, Any]) -> None:
    """Every API key a shipped job config reads (the GLM annotator's, the eval judge's) reaches the head,
    where a RayJob's driver checks it, and every worker, where the HTTP actors send it, through a
    `secretKeyRef` to the Secret named in params.env; no key is written into a manifest."""
    params = render.read_params(ROOT / "cluster" / "params.env")
    configs = sorted((ROOT / "ray_jobs" / "configs").glob("*.yaml"))
    needed = set().union(*(_api_key_envs(yaml.safe_load(c.read_text())) for c in configs)) - {
        "OPENAI_API_KEY"
    }
    assert {"GLM_API_KEY", "GEMINI_API_KEY"} <= needed
    eval_job = rendered["kuberay/rayjob-eval.yaml"]["spec"]["entrypoint"]
    eval_config = yaml.safe_load((ROOT / re.search(r"ray_jobs/configs/\S+", eval_job).group(0)).read_text())
    assert _api_key_envs(eval_config["judge"]) == {"GEMINI_API_KEY"}, "the eval RayJob's judge key"
    for cluster in _clusters(rendered):
        for name, pod in _pods(cluster):
            for container in pod["containers"]:
                env = {e["name"]: e for e in container.get("env", [])}
                for key in needed:
                    assert "value" not in env[key], f"{name}: {key} must not be written into the manifest"
                    ref = env[key]["valueFrom"]["secretKeyRef"]
                    assert (ref["name"], ref["key"]) == (params["MODEL_API_SECRET"], key), name


def test_every_job_and_the_endpoint_fit_a_worker_group(rendered: dict[str, Any]) -> None:
    """`editcaption plan`'s arithmetic on each RayJob's config against the RayCluster, and on both GPU
    Serve configs against the RayService's cluster (its TP-8 config needs the gpu-8x group)."""
    from editcaption.planning import cluster_from_manifest, fit, plan_config

    batch = cluster_from_manifest(rendered["kuberay/raycluster.yaml"], "raycluster.yaml")
    for name, doc in _manifests(rendered).items():
        if doc["kind"] != "RayJob":
            continue
        config = ROOT / re.search(r"ray_jobs/configs/\S+", doc["spec"]["entrypoint"]).group(0)
        result = fit(plan_config(config), batch)
        assert result.ok, (name, result.problems)
    serving = cluster_from_manifest(rendered["kuberay/rayservice.yaml"], "rayservice.yaml")
    for config in ("captioner-qwen3vl-8b.yaml", "captioner-qwen3vl-235b-a22b.yaml"):
        result = fit(plan_config(ROOT / "serve_configs" / config), serving)
        assert result.ok, (config, result.problems)
    assert any(g.gpus == 8 for g in serving.node_types)
