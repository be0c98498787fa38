"""`editcaption train sft|dpo|merge`: parse arguments, call the job; heavy imports stay inside commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

app = typer.Typer(help="SFT and HAE-DPO on Ray Train + DeepSpeed.", no_args_is_help=True)
console = Console(stderr=True)

_CONFIG = Annotated[Path, typer.Option(help="Job YAML (see ray_jobs/configs/train-*.yaml).")]
_RESUME = Annotated[
    bool,
    typer.Option(
        "--resume", help="Continue the run `name` from its latest checkpoint in storage_path (Ray Train)."
    ),
]
_SET = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a config field, KEY=VALUE with a YAML value; dotted keys reach nested fields "
        "(--set max_steps=10 --set workers.num_workers=4). Repeatable.",
    ),
]
_OUTPUT = Annotated[str | None, typer.Option(help="Override the folder or URI of the final model.")]
_NAME = Annotated[str | None, typer.Option(help="Override the run name (checkpoints: storage_path/name).")]
_VERBOSE = Annotated[
    bool,
    typer.Option("--verbose", help="Print everything Ray, DeepSpeed and TRL print (default: to a log file)."),
]


@app.command("sft")
def sft(
    config: _CONFIG,
    resume: _RESUME = False,
    output: _OUTPUT = None,
    name: _NAME = None,
    set_: _SET = None,
    verbose: _VERBOSE = False,
) -> None:
    """Supervised fine-tuning: a synthesis run (folder or sft.parquet), a TRL export, or reference pairs."""
    from editcaption.training.sft import SFTJobConfig, run_sft

    cfg = _load(config, SFTJobConfig, set_, resume=resume, output=output, name=name)
    _run(run_sft, cfg, "sft", verbose)


@app.command("dpo")
def dpo(
    config: _CONFIG,
    resume: _RESUME = False,
    output: _OUTPUT = None,
    name: _NAME = None,
    set_: _SET = None,
    verbose: _VERBOSE = False,
) -> None:
    """Preference training (PreferencePair Parquet, or reference pairs' hard negatives): HAE-DPO or plain DPO."""
    from editcaption.training.dpo import DPOJobConfig, run_dpo

    cfg = _load(config, DPOJobConfig, set_, resume=resume, output=output, name=name)
    _run(run_dpo, cfg, "dpo", verbose)


@app.command("merge")
def merge(
    base: Annotated[str, typer.Option(help="The base model the adapter was trained on (hub id or folder).")],
    adapter: Annotated[Path, typer.Option(help="The LoRA adapter folder (a run's output/adapter).")],
    out: Annotated[Path, typer.Option(help="Where the merged Hugging Face model is written.")],
    bf16: Annotated[bool, typer.Option(help="Write bfloat16 weights; --no-bf16 writes float32.")] = True,
) -> None:
    """Merge a LoRA adapter into its base model, for vLLM (which cannot apply it to the vision tower)."""
    from editcaption.training.export import merge_lora

    if not adapter.is_dir():
        console.print(f"[red]adapter: no adapter folder at {adapter}[/red]")
        raise typer.Exit(2)
    console.print(f"[green]merged model written to[/green] {merge_lora(base, str(adapter), out, bf16=bf16)}")


def _run(job: Any, cfg: Any, kind: str, verbose: bool) -> None:
    from editcaption.joblog import log_path_for, run_job
    from editcaption.training.data import TrainingDataError
    from editcaption.training.ray_train import RunExistsError, run_uri

    clear_errors = (TrainingDataError, RunExistsError, FileNotFoundError)
    log_path = log_path_for(run_uri(cfg), f"train-{kind}")
    status = f"train {kind} {cfg.name!r}: {cfg.workers.num_workers} Ray Train worker(s)"
    try:
        summary, log = run_job(lambda: job(cfg), log_path, verbose, status, expected=clear_errors)
    except clear_errors as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    console.print_json(json.dumps(summary, default=str))
    if log is not None:
        console.print(f"log: {log}")


def _load(path: Path, model: type, sets: list[str] | None, **top: Any) -> Any:
    import yaml

    from editcaption.config import ConfigError, load_config, set_overrides

    try:
        base = yaml.safe_load(path.read_text()) if path.is_file() else {}
        base = base if isinstance(base, dict) else {}
        overrides = set_overrides(base, sets or [])
        overrides |= {k: v for k, v in top.items() if v not in (None, False)}
        return load_config(path, model, overrides, resolve_paths=True)
    except (ConfigError, ValueError, yaml.YAMLError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
