"""`editcaption`: one command per stage. Commands only parse arguments and call a stage's function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

app = typer.Typer(
    help="Manufacture precise editing instructions for (source, target) image pairs, on Ray.\n\n"
    "Stages: caption → synthesize (caption, score, filter, route) → review (humans) → "
    "train (SFT, HAE-DPO) → eval → serve. `fixtures` builds the offline tiny models the tests use.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
fixtures_app = typer.Typer(help="Build offline test fixtures: tiny Qwen3-VL models, sample image pairs.")
app.add_typer(fixtures_app, name="fixtures")
console = Console(stderr=True)


@fixtures_app.command("build")
def fixtures_build(
    out: Annotated[Path, typer.Option(help="Folder to write the model, tokenizer and processor to.")],
    moe: Annotated[bool, typer.Option("--moe", help="Build the tiny Qwen3-VL-MoE instead.")] = False,
    family: Annotated[
        str | None,
        typer.Option(
            help="Another production architecture: qwen3vl, qwen3vl-moe, qwen2.5vl (EditScore-7B's base), "
            "glm4.1v or glm4.5v (the annotators)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same files.")] = 0,
) -> None:
    """Write a tiny random-weight checkpoint (tokenizer trained locally; no network needed): Qwen3-VL by
    default, or the architecture, tokens and chat-template format of another production model."""
    from editcaption.demo.tiny_families import FAMILIES, build_tiny_model

    name = family or ("qwen3vl-moe" if moe else "qwen3vl")
    if name not in FAMILIES or (family and moe):
        console.print(
            f"[red]--family {family}{' with --moe' if moe else ''}: choose one of {', '.join(FAMILIES)}[/red]"
        )
        raise typer.Exit(2)
    path = build_tiny_model(name, out, seed=seed)
    console.print(f"[green]wrote[/green] tiny {name} ({FAMILIES[name].architecture}) to {path}")


@fixtures_app.command("sample-pairs")
def fixtures_sample_pairs(
    out: Annotated[Path, typer.Option(help="Folder to write `<id>/source.png`, `target.png`, `meta.json`.")],
    seed: Annotated[int, typer.Option(help="Same seed, same pairs.")] = 0,
) -> None:
    """Draw the sample (source, target, instruction) pairs that ship with the package."""
    from editcaption.demo.sample_pairs import generate_sample_pairs

    ids = generate_sample_pairs(out, seed=seed)
    console.print(f"[green]wrote[/green] {len(ids)} pairs to {out}")


_SET = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a config field, KEY=VALUE with a YAML value; dotted keys reach nested fields "
        "(--set annotator.model=PATH --set annotator.tensor_parallel_size=8). Repeatable.",
    ),
]


@app.command()
def caption(
    config: Annotated[Path, typer.Option(help="Job YAML (see ray_jobs/configs/caption-demo.yaml).")],
    input: Annotated[str | None, typer.Option(help="Override the config's input URI.")] = None,
    output: Annotated[str | None, typer.Option(help="Override the config's output folder.")] = None,
    limit: Annotated[int | None, typer.Option(help="Read at most this many pairs.")] = None,
    set_: _SET = None,
) -> None:
    """Write instruction candidates for image pairs with one engine (no scoring); quarantine bad pairs."""
    from editcaption.ray_setup import shutdown_if_started
    from editcaption.synthesis.caption import CaptionJobConfig, run_caption_job

    cfg = _load(config, CaptionJobConfig, {"input": input, "output": output, "limit": limit}, set_)
    with shutdown_if_started():
        summary = run_caption_job(cfg)
    console.print_json(json.dumps(summary))


@app.command()
def synthesize(
    config: Annotated[Path, typer.Option(help="Job YAML (see ray_jobs/configs/demo.yaml).")],
    input: Annotated[str | None, typer.Option(help="Override the config's input URI.")] = None,
    output: Annotated[
        str | None, typer.Option(help="Override the output folder; rerunning into the same one resumes.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Read at most this many pairs.")] = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", help="Print everything Ray and vLLM print instead of one progress line."),
    ] = False,
    set_: _SET = None,
) -> None:
    """Stage 1: caption → EditScore → filter → route → SFT dataset, exports, review queue and report."""
    from editcaption.progress import run_synthesis_job
    from editcaption.synthesis.config import SynthesisConfig
    from editcaption.synthesis.shards import ShardFormatError

    cfg = _load(config, SynthesisConfig, {"input": input, "output": output, "limit": limit}, set_)
    try:
        summary, log_path = run_synthesis_job(cfg, verbose=verbose)
    except ShardFormatError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    keys = ("pairs", "kept", "filtered", "quarantined", "routed_to_review", "seconds", "pairs_per_s")
    console.print_json(json.dumps({k: summary[k] for k in keys}))
    console.print(f"outputs and report.md in {cfg.output}" + (f"; log: {log_path}" if log_path else ""))


def _load(path: Path, model: type, overrides: dict, sets: list[str] | None = None) -> Any:
    """The config with `--set` items applied first, then the named options (which win)."""
    import yaml

    from editcaption.config import ConfigError, load_config, set_overrides

    try:
        if sets:
            base = yaml.safe_load(path.read_text()) if path.is_file() else {}
            named = {k: v for k, v in overrides.items() if v is not None}
            overrides = {**set_overrides(base if isinstance(base, dict) else {}, sets), **named}
        return load_config(path, model, overrides, resolve_paths=True)
    except (ConfigError, yaml.YAMLError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e


# Each stage package owns its commands; their modules import heavy libraries only inside commands.
from editcaption.checks.cli import app as checks_app  # noqa: E402
from editcaption.demo.cli import demo_command  # noqa: E402
from editcaption.demo.quickstart import quickstart_command  # noqa: E402
from editcaption.doctor import doctor_command  # noqa: E402
from editcaption.evaluation.cli import eval_command  # noqa: E402
from editcaption.planning.cli import plan_command  # noqa: E402
from editcaption.review.cli import app as review_app  # noqa: E402
from editcaption.serving.cli import serve_command  # noqa: E402
from editcaption.synthesis.calibrate import calibrate_command  # noqa: E402
from editcaption.training.cli import app as train_app  # noqa: E402

app.add_typer(review_app, name="review")
app.add_typer(train_app, name="train")
app.add_typer(checks_app, name="checks")
app.command("eval")(eval_command)
app.command("serve")(serve_command)
app.command("plan")(plan_command)
app.command("calibrate")(calibrate_command)
app.command("demo")(demo_command)
app.command("quickstart")(quickstart_command)
app.command("doctor")(doctor_command)
