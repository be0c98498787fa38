"""`editcaption plan --config C [--address A | --cluster MANIFEST]`: a job's demands as a table, and
whether the cluster (the shipped KubeRay one by default, or a running Ray) has room for them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
errors = Console(stderr=True)


def _gb(value: float | None) -> str:
    return "?" if value is None else f"{value:,.1f}"


def plan_command(
    config: Annotated[Path, typer.Option(help="A job config (ray_jobs/configs/*.yaml) or Serve config.")],
    address: Annotated[
        str | None,
        typer.Option(
            help="Check against the nodes of this running Ray cluster (e.g. auto, ray://host:10001)."
        ),
    ] = None,
    cluster: Annotated[
        Path | None,
        typer.Option(
            help="Check against this RayCluster or RayService manifest (default: the shipped KubeRay one, "
            "rayservice.yaml for Serve configs, raycluster.yaml for jobs)."
        ),
    ] = None,
    params: Annotated[
        Path | None, typer.Option(help="Parameters to render manifests with (default: cluster/params.env).")
    ] = None,
) -> None:
    """What a job asks of a cluster (GPUs, CPUs, replicas x TP, memory per GPU, model downloads) and
    whether it fits. Exit code 0: it fits; 1: it does not; 2: the config or cluster cannot be read."""
    from editcaption.planning.plan import (
        PlanError,
        cluster_from_file,
        cluster_from_ray,
        fit,
        plan_config,
        shipped_cluster,
    )

    try:
        plan = plan_config(config)
        if address:
            target = cluster_from_ray(address)
        elif cluster:
            target = cluster_from_file(cluster, params)
        else:
            target = shipped_cluster(for_serve=plan.kind == "serve", params=params)
    except (PlanError, OSError) as e:
        errors.print(f"[red]{escape(str(e))}[/red]")
        raise typer.Exit(2) from e
    except Exception as e:  # Ray's connection errors have their own types
        errors.print(f"[red]cannot reach the Ray cluster at {address}: {type(e).__name__}: {e}[/red]")
        raise typer.Exit(2) from e

    table = Table(title=f"{config} ({plan.kind})")
    table.add_column("component")
    for column in ("replicas", "GPUs each", "CPUs each", "GB per GPU", "download GB"):
        table.add_column(column, justify="right")
    for d in plan.demands:
        table.add_row(
            d.component, str(d.replicas), f"{d.gpus:g}", f"{d.cpus:g}", _gb(d.gpu_memory_gb),
            "" if d.model is None else _gb(d.download_gb),
        )  # fmt: skip
    console.print(table)
    for d in plan.demands:
        sizing = "; ".join(part for part in [d.basis, *d.notes] if part)
        model = f" ({escape(d.model)})" if d.model else ""
        console.print(f"  [bold]{escape(d.component)}[/bold]{model}: {escape(sizing) or 'no GPU memory'}")
    download = plan.download_gb
    console.print(
        f"total: [bold]{plan.gpus:g} GPUs[/bold], {plan.cpus:g} CPUs; models to download: "
        + ("unknown (a model size is missing)" if download is None else f"{download:,.0f} GB")
    )
    for note in plan.notes:
        console.print(f"  {escape(note)}")

    result = fit(plan, target)
    console.print(f"\ncluster: {target.source}")
    for t in target.node_types:
        gpu = f", {t.gpus} x {t.gpu_name or 'GPU'} ({_gb(t.gpu_memory_gb)} GB)" if t.gpus else ""
        console.print(f"  {t.name}: up to {t.count} node(s) of {t.cpus:g} CPUs, {t.memory_gb:,.0f} GB{gpu}")
    if result.ok:
        used = sorted({spot.split("#")[0] for spots in result.placed.values() for spot in spots})
        nodes = len({spot for spots in result.placed.values() for spot in spots})
        console.print(f"[green]fits[/green]: {nodes} node(s) of {', '.join(used) or 'none'}")
        return
    for problem in result.problems:
        console.print(f"[red]does not fit[/red]: {escape(problem)}")
    raise typer.Exit(1)
