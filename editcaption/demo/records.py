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

from editcaption.checks.hard_negatives import variant_pairs
from editcaption.demo.world import WorldPair, describe, images, mirrored, render
from editcaption.prompts.editscore import perceptual_quality_messages, semantic_consistency_messages
from editcaption.prompts.instruction import instruction_messages
from editcaption.schema import PreferencePair, SFTRecord

# Systematic mistakes, as a strong VLM makes them: each is tied to what the image shows (the edit kind
# and which way the figure faces), and each fires on every pair it covers, so greedy decoding of a model
# that learned them repeats them, and the pairs they do not cover keep their right label. (Rates below
# 1 would be averaged away: greedy decoding says the majority label.) Keys are `<edit kind>/<variant
# kind>` or `<edit kind>[<facing>]/<variant kind>`; the first rule of a pair that fires replaces its
# label with that variant. About a third of the pairs get a wrong label (rates measured per run).
DEFAULT_RULES = {
    "raise_arm[viewer]/direction_flipped": 1.0,  # orientation: reads the arm's side in the viewer's frame
    "camera_pan[away]/direction_flipped": 1.0,  # orientation: names the way the content slid
    "move/frame_dropped": 1.0,  # viewpoint: bare left/right (moves up or down have no frame to drop)
    "raise_arm[away]/frame_dropped": 1.0,  # viewpoint: whose left?
    "camera_zoom[away]/camera_as_object": 1.0,  # viewpoint: camera zoom told as objects growing
    "recolour[viewer]/colour_removed": 1.0,  # attribute: the new colour left out
    "resize[away]/size_removed": 1.0,  # attribute: bigger or smaller left out
}


# What the miniature scorer answers to the EditScore semantic-consistency prompt: its reasoning says
# what the edit is (the pair's canonical instruction, with the word a candidate changed marked:
# `marked_edit`), then its verdict on the candidate; then edit
# success by the severity of the candidate's error (None: the canonical instruction) and over-editing
# always full (an instruction never changes what the target shows). Saying the edit first turns the
# verdict into a comparison of two texts: trained on the verdict alone, the scorer judged the words and
# passed reversed directions (docs/miniature.md). Every verdict starts with "The" because the world
# models' tokenizer knows no other capital after a space.
SEVERITY_SCORES: dict[str | None, int] = {None: 25, "minor": 18, "major": 10, "critical": 3}
VERDICTS: dict[str | None, str] = {
    None: "The instruction describes the edit.",
    "direction_flipped": "The direction is reversed.",
    "direction_removed": "The direction is missing.",
    "frame_dropped": "The instruction does not say whose left or right.",
    "frame_swapped": "The instruction names the wrong frame of reference.",
    "camera_as_object": "The instruction tells a camera move as objects moving.",
    "colour_replaced": "The instruction names the wrong colour.",
    "colour_removed": "The instruction leaves out the colour.",
    "size_replaced": "The instruction names the wrong size change.",
    "size_removed": "The instruction leaves out the size change.",
    "zoom_reversed": "The zoom is reversed.",
    "half_described": "The instruction describes only part of the edit.",
    "unrelated": "The instruction describes a different edit.",
}
UNRELATED_SEVERITY = "critical"  # another pair's instruction: nothing it says is this edit
PERCEPTUAL_REPLY = json.dumps({"reasoning": "A clean render with no flaws.", "score": [25, 25]})


def marked_edit(edit: str, candidate: str) -> str:
    """The edit as the images show it, with the one word a same-length candidate changed marked where it
    stands ("... left, not right."): the scorer compares word by word as it writes, instead of comparing
    two whole sentences at its verdict (which it did not learn: it wrote the right direction and still
    passed a reversed one)."""
    ours, theirs = edit.split(" "), candidate.split(" ")
    differ = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b]
    if len(ours) != len(theirs) or len(differ) != 1:
        return edit
    i = differ[0]
    end = "." if ours[i].endswith(".") and theirs[i].endswith(".") else ""
    ours[i] = f"{ours[i].removesuffix(end)}, not {theirs[i].removesuffix(end)}{end}"
    return " ".join(ours)


def seen_facts(pair: WorldPair) -> str:
    """What the scorer reads off the images before it names the edit, for the two kinds whose answer is a
    relation between facts: a rotation's sense from the triangle's two headings, a raised arm's own side
    from the figure's facing and the side the arm is seen on. The world models read each fact (headings
    named right on 100 of 104 scenes) but not the relation within one step (rotations ranked at chance,
    docs/miniature.md); written out first, the relation is a lookup between tokens of the reply. Ends in
    a colon the edit follows without a space: the world models' word-level tokenizer has no capitalised
    verb after a space. Empty for the other kinds."""
    source, target = pair.source_scene(), pair.target_scene()
    if pair.kind == "rotate":
        before, after = next(
            (a, b) for a, b in zip(source.things, target.things, strict=True) if a.heading != b.heading
        )
        return f"The {before.name} turns from pointing {before.heading} to pointing {after.heading}:"
    if pair.kind == "raise_arm":
        fig = target.figure
        (own,) = fig.raised - source.figure.raised
        seen = {"left": "right", "right": "left"}[own] if fig.facing == "viewer" else own
        facing = "the viewer" if fig.facing == "viewer" else "away"
        return (
            f"The figure is facing {facing} with the arm on the viewer's {seen} raised in the target image:"
        )
    return ""


def semantic_reply(
    edit: str | None,
    variant_kind: str | None,
    severity: str | None,
    candidate: str | None = None,
    facts: str = "",
) -> str:
    """The scorer's EditScore reply, given the edit the images show (`edit`, the canonical instruction;
    None: the verdict alone) and what it reads off them first (`seen_facts`), for a `candidate` that is
    the canonical instruction (None, None), a labelled variant of that kind and severity, or another
    pair's instruction (`unrelated`)."""
    if edit is None:
        reasoning = VERDICTS[variant_kind]
    else:
        seen = marked_edit(edit, candidate) if candidate else edit
        reasoning = f"{facts}{seen} {VERDICTS[variant_kind]}"
    return json.dumps({"reasoning": reasoning, "score": [SEVERITY_SCORES[severity], 25]})


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


def _rule_kinds(pair: WorldPair) -> tuple[str, str]:
    """The rule keys' left halves that match a pair: its kind with the figure's facing, and its kind."""
    return f"{pair.kind}[{pair.source['figure']['facing']}]", pair.kind


def noisy_instruction(pair: WorldPair, noise: NoiseConfig, rng: random.Random) -> tuple[str, str | None]:
    """(label, error type injected or None): the pair's rules are tried in order, at their rates."""
    for v in pair.variants:
        for kind in _rule_kinds(pair):
            rate = noise.rules.get(f"{kind}/{v.kind}", 0.0)
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
        rows += variant_pairs(
            pair.pair_id, source, target, pair.instruction, pair.variants, "ground_truth", "world"
        )
    return rows


def scorer_conversations(
    pairs: list[WorldPair],
    seed: int = 0,
    canonical_share: float = 0.35,
    unrelated_share: float = 0.15,
    perceptual_share: float = 0.15,
) -> list[dict]:
    """TRL-export rows (`pair_id`, `images`, `messages`) that teach the EditScore prompts: a share of
    perceptual-quality questions on the target alone (a render is flawless), the rest
    semantic-consistency questions on the canonical instruction, on another pair's instruction (so
    the scorer learns to reject a garbled or unrelated draft, not only the labelled mistakes), or on
    one of the pair's labelled variants, answered by `semantic_reply`."""
    rng = random.Random(seed)
    rows = []
    for pair in pairs:
        source, target = png_pair(pair)
        draw = rng.random()
        if draw < perceptual_share:
            prompt, images, reply = perceptual_quality_messages(), [target], PERCEPTUAL_REPLY
        else:
            facts = seen_facts(pair)
            if draw < perceptual_share + canonical_share or not pair.variants:
                candidate = pair.instruction
                reply = semantic_reply(pair.instruction, None, None, facts=facts)
            elif draw < perceptual_share + canonical_share + unrelated_share:
                candidate = _unrelated(pair, pairs, rng)
                reply = semantic_reply(pair.instruction, "unrelated", UNRELATED_SEVERITY, candidate, facts)
            else:
                variant = rng.choice(pair.variants)
                candidate = variant.text
                reply = semantic_reply(pair.instruction, variant.kind, variant.severity, candidate, facts)
            prompt, images = semantic_consistency_messages(candidate), [source, target]
        rows.append(_scorer_row(pair.pair_id, images, prompt, reply))
    return rows


def _scorer_row(pair_id: str, images: list[bytes], prompt: list[dict], reply: str) -> dict:
    """One TRL-export row: the images, the EditScore prompt and the scorer's reply as the answer."""
    answer = {"role": "assistant", "content": [{"type": "text", "text": reply}]}
    return {
        "pair_id": pair_id,
        "images": [{"bytes": im, "path": None} for im in images],
        "messages": [*prompt, answer],
    }


def scorer_contrast_conversations(
    pairs: list[WorldPair], seed: int = 0, regular_share: float = 0.25
) -> list[dict]:
    """EditScore rows in which only the images tell right from wrong: for a pair with a critical variant
    (a reversed direction or zoom), a quarter each of the canonical instruction and the variant, asked of
    the pair and of its mirror image, where a left/right flip is the mirror's own instruction (right) and
    the canonical one its reversal (wrong); a reversed zoom stays wrong and the canonical zoom right.
    Trained from mixed rows alone, the scorer judged the words and passed reversed directions (canonical
    ranked above critical variants on 0.19 of pairs). Asked two times in three with its direction right,
    it copied the candidate's direction into the edit it says it sees, even below headings it had read
    right (rotations ranked 0.00); asked half the time, the candidate's words say nothing of the answer.
    `regular_share` of the rows (and every pair without a critical variant) are `scorer_conversations`
    rows, so the other verdicts are not forgotten."""
    rng = random.Random(seed)
    contrast, regular = [], []
    for pair in pairs:
        critical = [v for v in pair.variants if v.severity == "critical"]
        (contrast if critical and rng.random() >= regular_share else regular).append(pair)
    rows = scorer_conversations(regular, seed=seed) if regular else []
    for pair in contrast:
        variant = rng.choice([v for v in pair.variants if v.severity == "critical"])
        draw = rng.randrange(4)
        shown = mirrored(pair) if draw >= 2 else pair
        candidate = variant.text if draw % 2 else pair.instruction
        # In the mirror the canonical text of a flip is the mirror's own flipped variant.
        wrong = next((v for v in shown.variants if v.text == candidate), None)
        reply = semantic_reply(
            shown.instruction,
            wrong.kind if wrong else None,
            wrong.severity if wrong else None,
            candidate,
            seen_facts(shown),
        )
        rows.append(
            _scorer_row(shown.pair_id, list(png_pair(shown)), semantic_consistency_messages(candidate), reply)
        )
    rng.shuffle(rows)
    return rows


DESCRIBE_PROMPT = "Describe the image: the figure and every shape, left to right."


def describe_messages() -> list[dict]:
    """The miniature's single-image question, answered by `world.describe`."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": DESCRIBE_PROMPT}]}]


def world_conversations(
    pairs: list[WorldPair],
    described: list[WorldPair],
    noise: NoiseConfig | None = None,
    seed: int = 0,
) -> tuple[list[dict], dict[str, float]]:
    """TRL-export rows for the world models: one instruction conversation per pair of `pairs` (the
    project's instruction prompt; clean labels, or with `noise` injected) and one description of the
    source or the target of each pair of `described` (`describe_messages`). Dense descriptions teach a
    from-scratch model to name every object, which the instruction alone teaches only for the object
    that changed (measured in docs/miniature.md). Returns (rows, injected rate per error type)."""
    records, injected = sft_records(pairs, noise)
    rng = random.Random(seed)
    rows = []
    for record in records:
        answer = {"role": "assistant", "content": [{"type": "text", "text": record["instruction"]}]}
        rows.append(
            {
                "pair_id": record["pair_id"],
                "images": [
                    {"bytes": record["source"], "path": None},
                    {"bytes": record["target"], "path": None},
                ],
                "messages": [*instruction_messages(), answer],
            }
        )
    for pair in described:
        side = rng.randrange(2)
        scene = pair.target_scene() if side else pair.source_scene()
        answer = {"role": "assistant", "content": [{"type": "text", "text": describe(scene)}]}
        buf = io.BytesIO()
        render(scene).save(buf, format="PNG")
        rows.append(
            {
                "pair_id": f"{pair.pair_id}-{'target' if side else 'source'}",
                "images": [{"bytes": buf.getvalue(), "path": None}],
                "messages": [*describe_messages(), answer],
            }
        )
    rng.shuffle(rows)
    return rows, injected


def _unrelated(pair: WorldPair, pairs: list[WorldPair], rng: random.Random) -> str:
    """Another pair's instruction that is neither this pair's instruction nor one of its variants."""
    taken = {pair.instruction, *(v.text for v in pair.variants)}
    while True:
        text = rng.choice(pairs).instruction
        if text not in taken:
            return text


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
