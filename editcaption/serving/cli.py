"""`editcaption serve`: start a Serve config file's applications, like `serve run`, until interrupted."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import psutil
import typer
import yaml
from rich.console import Console

from editcaption.serving.config import MODEL_ENV, ServeConfig

console = Console(stderr=True)


def serve_command(
    config: Annotated[
        Path | None,
        typer.Option(help="Ray Serve config file (see serve_configs/); the same file `serve run` takes."),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Override http_options.host (127.0.0.1: this machine only).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Override http_options.port.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Override every application's captioner model (a path or hub id).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a field of every application's `args`, KEY=VALUE with a YAML value; dotted keys "
            "reach nested fields (--set limits.max_tokens=64); `model` is the captioner's model. Repeatable.",
        ),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Join this Ray cluster (default: RAY_ADDRESS, else start a local Ray).")
    ] = None,
    new_key: Annotated[
        bool, typer.Option("--new-key", help="Print a fresh API key and the sha256 line to store, then exit.")
    ] = False,
) -> None:
    """Serve the captioner: POST /v1/instructions, OpenAI-compatible /v1/chat/completions, health, metrics."""
    if new_key:
        from editcaption.serving.security import new_key as make_key

        key, digest = make_key()
        console.print(f"API key (give to the client, not stored anywhere): [bold]{key}[/bold]")
        typer.echo(digest)
        return
    if config is None:
        console.print("[red]--config is required[/red] (e.g. serve_configs/captioner.yaml)")
        raise typer.Exit(2)
    schema = _load(config, host, port, model, set_ or [])
    run_config(schema, address)


def _load(
    path: Path, host: str | None, port: int | None, model: str | None, sets: list[str] | None = None
) -> Any:
    """The file as Ray's own `ServeDeploySchema` (Ray validates it), with the command-line overrides and
    every local path in our applications' `args` made absolute here (replicas run elsewhere)."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    from editcaption.config import ConfigError, set_overrides
    from editcaption.paths import PathError, resolve_model, resolved_paths, set_dotted

    if not path.is_file():
        console.print(f"[red]config file not found: {path}[/red]")
        raise typer.Exit(2)
    data = yaml.safe_load(path.read_text()) or {}
    http = data.setdefault("http_options", {})
    if host:
        http["host"] = host
    if port:
        http["port"] = port
    sets = [*(sets or []), *([f"model={model}"] if model else [])]
    try:
        if any(item.startswith("model=") for item in sets):
            os.environ.pop(MODEL_ENV, None)  # the command line wins over the variable
        elif os.environ.get(MODEL_ENV):
            os.environ[MODEL_ENV] = resolve_model(os.environ[MODEL_ENV], MODEL_ENV)
        for application in data.get("applications") or []:
            if str(application.get("import_path", "")).startswith("editcaption.serving"):
                args = application.setdefault("args", {})
                args.update(set_overrides(args, sets, {"model": "captioner.engine.model"}))
        schema = ServeDeploySchema.model_validate(data)
        for application in schema.applications:
            if application.import_path.startswith("editcaption.serving"):
                config = ServeConfig.model_validate(application.args)  # our errors before Ray starts
                # every path as the config holds it (its validator may have resolved some already)
                for where, value in resolved_paths(config, changed_only=False).items():
                    set_dotted(application.args, where, value)
    except ValidationError as e:
        console.print(f"[red]{path}: {e}[/red]")
        raise typer.Exit(2) from e
    except (ConfigError, PathError) as e:
        console.print(f"[red]{path}: {e}[/red]")
        raise typer.Exit(2) from e
    return schema


def run_config(schema: Any, address: str | None = None) -> None:
    """Deploy every application of the config and wait; SIGINT/SIGTERM shut Serve and Ray down."""
    import ray
    from ray import serve
    from ray.serve._private import api as serve_private

    from editcaption.ray_setup import init_ray

    # Ray Serve's proxy runs uvicorn, which by default believes X-Forwarded-For from loopback peers;
    # client addresses are decided by the app's `trusted_proxies` instead (set before Ray starts, which
    # passes this environment to the proxy of a Ray we start; a cluster's nodes need it set themselves).
    os.environ.setdefault("FORWARDED_ALLOW_IPS", "")
    init_ray(address)
    # After Ray starts: its core worker installs a SIGTERM handler that kills the process on the spot.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so `finally` below runs on `kill` too
    try:
        # What `serve run CONFIG` does (Ray 2.60): start Serve with the file's options, deploy its apps.
        client = serve_private.serve_start(
            http_options=schema.http_options.model_dump(),
            proxy_location=schema.proxy_location,
        )
        client.deploy_apps(schema, _blocking=False)
        names = [a.name for a in schema.applications]
        with console.status(f"starting {', '.join(names)} (loading the model takes a while)"):
            _wait_running(names)
        http = schema.http_options
        console.print(f"[green]serving[/green] on http://{http.host}:{http.port} — Ctrl-C stops it")
        while True:
            time.sleep(5)
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        started = psutil.Process().children(recursive=True)
        serve.shutdown()
        ray.shutdown()
        reap(started)


def reap(processes: list[Any], timeout_s: float = 15) -> None:
    """Wait for the processes this command started, then kill the stragglers. A safety net: when the
    driver died without `ray.shutdown`, Ray 2.60 left the node's dashboard and runtime-env agents
    running, orphaned, and nothing else would ever stop them."""
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


def _wait_running(names: list[str]) -> None:
    from ray import serve

    while True:
        apps = serve.status().applications
        states = {name: apps[name].status if name in apps else "NOT_STARTED" for name in names}
        failed = {n: apps[n].message for n, s in states.items() if s in ("DEPLOY_FAILED", "UNHEALTHY")}
        if failed:
            for name, message in failed.items():
                console.print(f"[red]{name} failed:[/red] {message}")
            raise typer.Exit(1)
        if all(s == "RUNNING" for s in states.values()):
            return
        time.sleep(1)
