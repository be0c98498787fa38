"""Training records from world pairs: clean or error-injected SFT records, ground-truth preference pairs.

The weak annotator is a captioner trained on labels where a share of instructions was replaced by one
of the pair's labelled wrong variants; `NoiseConfig` sets that share per error type, as in the paper's
baseline annotator, which flips orientation, drops or swaps the frame and garbles attributes.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from editcaption.demo.world import WorldPair, images
from editcaption.schema import PreferencePair, SFTRecord


class NoiseConfig(BaseModel):
    """Chance that a pair's label is replaced by one of its wrong variants of that error type."""

    orientation: float = Field(0.3, ge=0, le=1, description="Left/right, turn or up/down flipped.")
    viewpoint: float = Field(0.3, ge=0, le=1, description="Frame dropped or swapped; camera as object.")
    attribute: float = Field(0.15, ge=0, le=1, description="Colour or size wrong or missing.")
    seed: int = Field(0, description="Seed of the draws.")


def png_pair(pair: WorldPair) -> tuple[bytes, bytes]:
    out = []
    for image in images(pair):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out[0], out[1]


def noisy_instruction(pair: WorldPair, noise: NoiseConfig, rng: random.Random) -> tuple[str, str | None]:
    """(label, error type injected or None): each error type is tried in turn at its rate."""
    for error_type in ("orientation", "viewpoint", "attribute"):
        options = [v for v in pair.variants if v.error_type == error_type]
        if options and rng.random() < getattr(noise, error_type):
            return rng.choice(options).text, error_type
    return pair.instruction, None


def sft_records(
    pairs: list[WorldPair], noise: NoiseConfig | None = None, model: str = "ground-truth"
) -> tuple[list[dict], dict[str, float]]:
    """SFTRecord rows (clean, or with injected errors) and the injected rate of each error type."""
    rng = random.Random(noise.seed if noise else 0)
    rows, injected = [], {"orientation": 0, "viewpoint": 0, "attribute": 0}
    for pair in pairs:
        text, error = noisy_instruction(pair, noise, rng) if noise else (pair.instruction, None)
        if error:
            injected[error] += 1
        source, target = png_pair(pair)
        rows.append(
            SFTRecord(
                pair_id=pair.pair_id,
                source=source,
                target=target,
                instruction=text,
                origin="synthesis",
                model=model,
            ).to_row()
        )
    return rows, {k: v / max(1, len(pairs)) for k, v in injected.items()}


def preference_records(pairs: list[WorldPair]) -> list[dict]:
    """One PreferencePair (origin ground_truth) per labelled wrong variant: chosen is the canonical text."""
    rows = []
    for pair in pairs:
        source, target = png_pair(pair)
        for v in pair.variants:
            rows.append(
                PreferencePair(
                    pair_id=pair.pair_id,
                    source=source,
                    target=target,
                    chosen=pair.instruction,
                    rejected=v.text,
                    error_type=v.error_type,
                    severity=v.severity,
                    origin="ground_truth",
                    annotators=[f"world:{v.kind}"],
                ).to_row()
            )
    return rows


def write_records(rows: list[dict], record: type[SFTRecord] | type[PreferencePair], path: str | Path) -> Path:
    """Rows as one Parquet file with the record's Arrow schema (what the training jobs read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=record.arrow_schema()), path)
    return path
