"""Training records from world pairs: clean or error-injected SFT records, ground-truth preference pairs.

The weak annotator is a captioner trained on labels where some instructions were replaced by one of the
pair's labelled wrong variants, by rules that make the paper's baseline mistakes systematically:
orientation flips, frames dropped or camera moves told as object motion, attributes left out.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from editcaption.demo.world import WorldPair, images
from editcaption.prompts.editscore import perceptual_quality_messages, semantic_consistency_messages
from editcaption.schema import PreferencePair, SFTRecord

# Systematic mistakes, as a strong VLM makes them: they depend on what the image shows, so a model
# trained on them learns to repeat them (random label noise would mostly average out). Keys are
# `<edit kind>/<variant kind>`, or `raise_arm[<facing>]/<variant kind>` for the figure; the first rule
# of a pair that fires replaces its label with that variant.
DEFAULT_RULES = {
    "raise_arm[viewer]/direction_flipped": 0.8,  # orientation: reads the arm's side in the viewer's frame
    "camera_pan/direction_flipped": 0.7,  # orientation: names the way the content slid
    "camera_zoom/camera_as_object": 0.7,  # viewpoint: camera zoom told as objects growing
    "move/frame_dropped": 0.7,  # viewpoint: bare left/right
    "add/frame_dropped": 0.7,
    "raise_arm[away]/frame_dropped": 0.7,
    "recolour/colour_removed": 0.6,  # attribute: the new colour left out
    "resize/size_removed": 0.6,  # attribute: bigger or smaller left out
}


# What the miniature scorer answers to the EditScore semantic-consistency prompt: edit success by the
# severity of the candidate's error (None: the canonical instruction), over-editing always full (a
# candidate instruction never changes what the target shows). The reasoning names the edit it sees.
SEVERITY_SCORES: dict[str | None, int] = {None: 25, "minor": 18, "major": 10, "critical": 3}
PERCEPTUAL_REPLY = json.dumps({"reasoning": "A clean render with no flaws.", "score": [25, 25]})


def semantic_reply(truth: str, severity: str | None) -> str:
    """The scorer's EditScore reply for a candidate of this severity on a pair whose edit is `truth`."""
    return json.dumps({"reasoning": truth, "score": [SEVERITY_SCORES[severity], 25]})


class NoiseConfig(BaseModel):
    """Label errors injected into the weak annotator's training data."""

    rules: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_RULES),
        description="Chance per `<kind>/<variant kind>` rule that a pair's label becomes that variant; "
        "the defaults are systematic orientation, viewpoint and attribute mistakes (see DEFAULT_RULES).",
    )
    seed: int = Field(0, description="Seed of the draws.")


def png_pair(pair: WorldPair) -> tuple[bytes, bytes]:
    out = []
    for image in images(pair):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out[0], out[1]


def _rule_kind(pair: WorldPair) -> str:
    return f"raise_arm[{pair.facts['facing']}]" if pair.kind == "raise_arm" else pair.kind


def noisy_instruction(pair: WorldPair, noise: NoiseConfig, rng: random.Random) -> tuple[str, str | None]:
    """(label, error type injected or None): the pair's rules are tried in order, at their rates."""
    for v in pair.variants:
        rate = noise.rules.get(f"{_rule_kind(pair)}/{v.kind}", 0.0)
        if rate and rng.random() < rate:
            return v.text, v.error_type
    return pair.instruction, None


def sft_records(
    pairs: list[WorldPair], noise: NoiseConfig | None = None, model: str = "ground-truth"
) -> tuple[list[dict], dict[str, float]]:
    """SFTRecord rows (clean, or with injected errors) and the injected rate of each error type."""
    rng = random.Random(noise.seed if noise else 0)
    rows, injected = [], {"orientation": 0, "viewpoint": 0, "attribute": 0, "other": 0}
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


def scorer_conversations(
    pairs: list[WorldPair], seed: int = 0, canonical_share: float = 0.4, perceptual_share: float = 0.15
) -> list[dict]:
    """TRL-export rows (`pair_id`, `images`, `messages`) that teach the EditScore prompts: a share of
    perceptual-quality questions on the target alone (a render is flawless), the rest
    semantic-consistency questions on the canonical instruction or one of its labelled variants,
    answered by `semantic_reply`."""
    rng = random.Random(seed)
    rows = []
    for pair in pairs:
        source, target = png_pair(pair)
        if rng.random() < perceptual_share:
            prompt, images, reply = perceptual_quality_messages(), [target], PERCEPTUAL_REPLY
        else:
            variant = (
                None if rng.random() < canonical_share or not pair.variants else rng.choice(pair.variants)
            )
            candidate = variant.text if variant else pair.instruction
            prompt, images = semantic_consistency_messages(candidate), [source, target]
            reply = semantic_reply(pair.instruction, variant.severity if variant else None)
        answer = {"role": "assistant", "content": [{"type": "text", "text": reply}]}
        rows.append(
            {
                "pair_id": pair.pair_id,
                "images": [{"bytes": im, "path": None} for im in images],
                "messages": [*prompt, answer],
            }
        )
    return rows


def write_conversations(rows: list[dict], path: str | Path) -> Path:
    """Rows in the project's TRL-export layout (what `train sft` reads with prompt `from_data`)."""
    from editcaption.io.exports import TRL_FEATURES

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=TRL_FEATURES.arrow_schema), path)
    return path


def write_records(rows: list[dict], record: type[SFTRecord] | type[PreferencePair], path: str | Path) -> Path:
    """Rows as one Parquet file with the record's Arrow schema (what the training jobs read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=record.arrow_schema()), path)
    return path
