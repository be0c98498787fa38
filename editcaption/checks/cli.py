"""`editcaption checks …`: the model-free failure-mode checks on text and on SFT record files.

Flip consistency needs a captioner, so it runs inside `synthesize` and `eval`, not here.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Failure-mode checks that need no model: viewpoint lint, direction swap, attribute coverage, "
    "automatic hard negatives (DPO) and mirrored augmentation (SFT).",
    no_args_is_help=True,
)

Lang = Annotated[str, typer.Option(help="Lexicon language (`checks/lexicon/<lang>.yaml`).")]
InputFile = Annotated[
    Path,
    typer.Option(
        "--input",
        exists=True,
        dir_okay=False,
        help="SFT records: Parquet with pair_id, source, target, instruction (e.g. a synthesis run's sft.parquet).",
    ),
]
OutFile = Annotated[Path, typer.Option("--out", dir_okay=False, help="Parquet file to write.")]


@app.command("lint")
def lint(
    instructions: Annotated[list[str], typer.Argument(help="Instructions to lint.")],
    lang: Lang = "en",
) -> None:
    """Viewpoint lint: left/right/front/behind without a frame of reference, camera words for object
    motion and vice versa. Prints one JSON line per instruction; exits 1 when any has an issue."""
    from editcaption.checks.viewpoint import lint_viewpoint

    flagged = False
    for text in instructions:
        issues = lint_viewpoint(text, lang)
        flagged |= bool(issues)
        found = [{"kind": i.kind, "span": list(i.span), "message": i.message} for i in issues]
        typer.echo(json.dumps({"instruction": text, "issues": found}))
    if flagged:
        raise typer.Exit(1)


@app.command("swap")
def swap(
    instructions: Annotated[list[str], typer.Argument(help="Instructions to mirror.")],
    lang: Lang = "en",
) -> None:
    """Print each instruction with its directions swapped as a horizontal mirror swaps them
    (left↔right, clockwise↔counter-clockwise, frame-of-reference phrases kept)."""
    from editcaption.checks.directions import swap_directions

    for text in instructions:
        typer.echo(swap_directions(text, lang))


@app.command("coverage")
def coverage(
    candidate: Annotated[str, typer.Argument(help="The instruction to check.")],
    reference: Annotated[str, typer.Option(help="Reference instruction naming the changed attributes.")],
    lang: Lang = "en",
) -> None:
    """Attribute coverage of a candidate against a reference: covered, missing and wrong values per
    kind (colour, material, count, size, text, pose, position) and a 0-1 score, as JSON."""
    from editcaption.checks.attributes import attribute_coverage

    result = attribute_coverage(candidate, reference, lang)
    as_lists = {
        name: {kind: sorted(values) for kind, values in getattr(result, name).items()}
        for name in ("covered", "missing", "wrong")
    }
    typer.echo(json.dumps({**as_lists, "score": round(result.score, 4)}))


@app.command("hard-negatives")
def hard_negatives_command(
    input: InputFile,
    out: OutFile,
    seed: Annotated[int, typer.Option(help="Seeds the attribute replacements; same seed, same rows.")] = 0,
    lang: Lang = "en",
) -> None:
    """Write labelled rejected variants of each SFT instruction as preference pairs (origin
    `hard_negative`): swapped directions (orientation, critical), frame dropped or swapped (viewpoint,
    major), attribute removed or replaced (attribute, minor/major)."""
    from editcaption.checks.hard_negatives import hard_negatives
    from editcaption.schema import PreferencePair

    rows = [
        negative
        for record in _read_records(input)
        for negative in hard_negatives(
            record["pair_id"], record["source"], record["target"], record["instruction"], lang, seed
        )
    ]
    _write(rows, PreferencePair, out)
    kinds = Counter(f"{r['error_type']}/{r['severity']}" for r in rows)
    typer.echo(json.dumps({"preference_pairs": len(rows), "by_error": dict(sorted(kinds.items()))}))


@app.command("mirror")
def mirror(input: InputFile, out: OutFile, lang: Lang = "en") -> None:
    """Write the mirrored copy of every SFT record that states a horizontal direction and has no
    mirror-sensitive content (visible text): both images flipped, directions swapped, origin
    `augmentation`. Only the new records are written."""
    from editcaption.checks.augment import mirrored_record
    from editcaption.schema import SFTRecord

    records = _read_records(input)
    mirrored = [m for r in records if (m := mirrored_record(_as_sft(r), lang)) is not None]
    _write(mirrored, SFTRecord, out)
    typer.echo(json.dumps({"records": len(records), "mirrored": len(mirrored)}))


def _read_records(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise typer.BadParameter(f"{path} is not a readable Parquet file: {e}", param_hint="--input") from e
    missing = {"pair_id", "source", "target", "instruction"} - set(table.column_names)
    if missing:
        raise typer.BadParameter(f"{path} lacks column(s) {sorted(missing)}", param_hint="--input")
    return [r for r in table.to_pylist() if r["instruction"]]


def _as_sft(record: dict[str, Any]) -> dict[str, Any]:
    """A record with every SFTRecord field, so files with fewer columns still write the contract."""
    return {"origin": "synthesis", "model": None, "overall": None, **record}


def _write(rows: list[dict[str, Any]], record: type, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = record.arrow_schema()
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema), out)
