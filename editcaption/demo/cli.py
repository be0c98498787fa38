"""`editcaption demo`: the miniature world end to end (or, with --retrain, its models from scratch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from editcaption.demo.retrain import COMMITTED


def demo_command(
    out: Annotated[Path, typer.Option(help="Run folder: data, models, report.")] = Path("runs/miniature"),
    seed: Annotated[
        int,
        typer.Option(
            help="Seed of the SFT and DPO stages (the pool and evaluation pairs are fixed splits); "
            "with --retrain: of the training streams, label noise and initial weights."
        ),
    ] = 0,
    retrain: Annotated[
        bool,
        typer.Option(
            help="Train the weak annotator and the scorer from scratch into the parent of --annotator "
            "instead of running the demo (the one command that rebuilds the committed weights)."
        ),
    ] = False,
    annotator: Annotated[
        Path, typer.Option(help="The weak annotator's model folder (the committed one by default).")
    ] = COMMITTED / "annotator",
    scorer: Annotated[
        Path, typer.Option(help="The EditScore scorer's model folder (the committed one by default).")
    ] = COMMITTED / "scorer",
    pool: Annotated[int, typer.Option(min=8, help="Pairs the annotator drafts instructions for.")] = 512,
    heldout: Annotated[
        int, typer.Option(min=10, help="Pairs of the evaluation split (and their mirrors).")
    ] = 200,
    split: Annotated[
        str,
        typer.Option(
            help="Evaluation split: test (reported, never used to choose) or dev (to choose settings)."
        ),
    ] = "test",
    review_share: Annotated[
        float, typer.Option(min=0, max=1, help="Share of the pool routed to review and refined.")
    ] = 0.25,
    sft_steps: Annotated[int, typer.Option(min=1, help="SFT steps from the annotator's weights.")] = 200,
    dpo_steps: Annotated[int, typer.Option(min=1, help="DPO steps from the SFT model, per objective.")] = 100,
    curriculum: Annotated[
        bool,
        typer.Option(
            help="With --retrain: start with 400 steps of camera pans alone, then 200 of pans and moves "
            "(without it the models answer left/right by coin toss)."
        ),
    ] = True,
    world_steps: Annotated[
        int,
        typer.Option(
            min=0,
            help="With --retrain: then steps on every kind (clean labels and scene descriptions), in "
            "chunks of 600 measured on the dev split; the last 600 decay the learning rate.",
        ),
    ] = 3000,
    train_steps: Annotated[
        int, typer.Option(min=1, help="With --retrain: then steps on the error-injected labels.")
    ] = 600,
    scorer_steps: Annotated[
        int, typer.Option(min=1, help="With --retrain: scorer steps from the world model.")
    ] = 900,
    start_from: Annotated[
        Path | None,
        typer.Option(
            help="With --retrain: continue the world stage from this model folder (e.g. the committed "
            "world model) instead of a fresh model and its curriculum."
        ),
    ] = None,
    world_stream: Annotated[
        int,
        typer.Option(
            min=0,
            max=999,
            help="With --retrain: world stream of the world stage's first chunk; a continuation takes "
            "streams its start model has not seen (the from-scratch run used 201-205).",
        ),
    ] = 201,
    world_kind: Annotated[
        list[str] | None,
        typer.Option(
            help="With --retrain: an edit kind of the world stage, drawn round-robin (repeat a kind to "
            "weight it; every kind once by default).",
        ),
    ] = None,
    image_pixels: Annotated[
        int,
        typer.Option(
            min=32 * 32,
            help="With --retrain: pixels every image is scaled to in training and in the saved "
            "processors (16384: the 128x128 renders, 16 vision tokens; 65536: upscaled to 256x256, 64).",
        ),
    ] = 128 * 128,
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="With --retrain: a model to train (world, annotator, scorer; repeat the option for "
            "several); the others are read from the --annotator folder's parent. Default: all three.",
        ),
    ] = None,
) -> None:
    """Annotator drafts → scorer filters → ground-truth 'review' → SFT → HAE-DPO (and plain DPO) → held-out table."""
    if retrain:
        from editcaption.demo import retrain as retraining

        try:
            config = retraining.RetrainConfig(
                out=str(annotator.parent),
                seed=seed,
                world_steps=world_steps,
                **({} if curriculum else {"curriculum": []}),
                max_steps=train_steps,
                scorer_steps=scorer_steps,
                start_from=str(start_from) if start_from else None,
                world_stream=world_stream,
                world_kinds=world_kind or None,
                image_pixels=image_pixels,
                **({"models": model} if model else {}),
            )
            retraining.check_folders(config)
        except ValueError as error:  # a pydantic ValidationError is one too
            typer.echo(f"--retrain: {error}", err=True)
            raise typer.Exit(2) from error
        cards = retraining.retrain(config)
        typer.echo(json.dumps({name: card["test_measured"] for name, card in cards.items()}, indent=1))
        return
    if split not in ("dev", "test"):
        typer.echo(f"--split: {split!r} is not a split; use test or dev", err=True)
        raise typer.Exit(2)
    for option, folder in (("--annotator", annotator), ("--scorer", scorer)):
        if not (folder / "config.json").is_file():
            typer.echo(
                f"{option}: no model at {folder} (config.json missing); "
                "train the models with `editcaption demo --retrain`",
                err=True,
            )
            raise typer.Exit(2)
    from editcaption.demo.pipeline import DemoConfig, run_demo

    report = run_demo(
        DemoConfig(
            out=str(out),
            annotator=str(annotator),
            scorer=str(scorer),
            seed=seed,
            pool=pool,
            heldout=heldout,
            split=split,
            review_share=review_share,
            sft_steps=sft_steps,
            dpo_steps=dpo_steps,
        )
    )
    typer.echo((out / "report.md").read_text())
    typer.echo(f"seconds: {report['seconds']}")
