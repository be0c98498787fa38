"""Flip consistency: caption the horizontally mirrored pair and check that the two instructions agree.

A captioner that really sees left and right writes, for the mirrored pair, the original instruction
with its directions swapped. One that guesses writes the same side twice, or swaps the wrong word.
The check needs no reference instruction, so it runs on unlabelled pairs (synthesis) and on any
model (evaluation). It does not apply where mirroring changes the content itself: visible text,
digits on signs, clock faces, logos read differently once mirrored.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from PIL import ImageOps

from editcaption.checks.directions import direction_words, load_lexicon, swap_directions, tokenize
from editcaption.engines.base import Engine, EngineRequest, EngineResult, SamplingSettings
from editcaption.images import ImagePolicy, ImageRejected, decode_image, encode_png
from editcaption.prompts.instruction import instruction_request, parse_instruction

if TYPE_CHECKING:
    import ray.data

FlipVerdict = Literal["consistent", "inconsistent", "not_applicable"]

# Mirror-sensitive words the lexicon's text cues (`attributes.kinds.text.cues`) lack: a mirrored
# clock face or digit reads differently, though nobody calls it "text".
MIRROR_SENSITIVE_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        {
            "clock",
            "clocks",
            "clockface",
            "watch",
            "wristwatch",
            "digit",
            "digits",
            "numeral",
            "numerals",
            "barcode",
            "qr",
            "licence",
            "license",
            "numberplate",
            "scoreboard",
            "calendar",
            "newspaper",
            "graffiti",
            "signature",
            "emblem",
            "trademark",
            "typography",
            "subtitle",
            "subtitles",
            "billboard",
            "placard",
            "monogram",
        }
    )
}


# Mirroring refuses only what cannot be decoded safely (bombs, truncated files): whether a pair's
# shape is acceptable was decided where it was read.
_MIRROR_POLICY = ImagePolicy(min_side=1, max_aspect=math.inf, reject_identical=False)


def mirror_pair(source: bytes, target: bytes) -> tuple[bytes, bytes]:
    """Both images flipped left-right, as PNG; EXIF orientation is applied first, because the flip
    must mirror what a viewer sees, not the stored pixel order."""
    return (
        encode_png(ImageOps.mirror(decode_image(source, _MIRROR_POLICY, role="source"))),
        encode_png(ImageOps.mirror(decode_image(target, _MIRROR_POLICY, role="target"))),
    )


@functools.cache
def _text_words(lang: str) -> frozenset[str]:
    cues = load_lexicon(lang)["attributes"]["kinds"]["text"]["cues"]
    return frozenset(str(w).lower() for w in cues) | MIRROR_SENSITIVE_WORDS.get(lang, frozenset())


def mirror_sensitive_words(text: str, lang: str = "en") -> list[str]:
    """Words in `text` saying the edit involves content a mirror changes (text, signs, clocks...)."""
    words = _text_words(lang)
    return [t.text for t in tokenize(text) if t.text in words]


def flip_applicable(
    instruction: str | None, reference: str | None = None, lang: str = "en"
) -> tuple[bool, str]:
    """Whether mirroring the pair should mirror its instruction, and why (not).

    Not applicable without an instruction, when the instruction or the reference mentions visible
    text or other mirror-sensitive content, or when neither has a horizontal direction word.
    """
    if not instruction:
        return False, "no instruction"
    texts = [instruction] + ([reference] if reference else [])
    sensitive = [w for t in texts for w in mirror_sensitive_words(t, lang)]
    if sensitive:
        return False, f"mirroring changes its content: {', '.join(dict.fromkeys(sensitive))}"
    directions = [w for t in texts for w in direction_words(t, lang)]
    if not directions:
        return False, "no horizontal direction words"
    return True, f"direction words: {', '.join(dict.fromkeys(d.lower() for d in directions))}"


@functools.cache
def _canonical(lang: str) -> dict[str, str]:
    """Spelling -> the first spelling of its side in its group (leftmost -> left, anticlockwise ->
    counter-clockwise), so the verdict compares sides, not word choice."""
    directions = load_lexicon(lang)["directions"]
    canonical: dict[str, str] = {}
    for group in ("sides", "rotations"):
        pairs = [[s if isinstance(s, list) else [s] for s in pair] for pair in directions[group]]
        names = [side[0] for side in pairs[0]]
        for pair in pairs:
            for name, spellings in zip(names, pair, strict=True):
                for spelling in spellings:
                    canonical[_normalise(spelling)] = name
    return canonical


def _normalise(word: str) -> str:
    return " ".join(word.lower().replace("’", "'").split())


def direction_sequence(text: str, lang: str = "en") -> list[str]:
    """The ordered horizontal directions `text` states, each as its canonical side."""
    canonical = _canonical(lang)
    return [canonical.get(_normalise(w), _normalise(w)) for w in direction_words(text, lang)]


def flip_verdict(original: str | None, mirrored: str | None, lang: str = "en") -> tuple[FlipVerdict, str]:
    """Compare the original instruction with the mirrored pair's instruction, swapped back.

    Only the sequence of sides is compared: a frame of reference said once and not the other time
    is a viewpoint matter, and wording around the directions is free.
    """
    if not original or not mirrored:
        return "not_applicable", "no original instruction" if not original else "no mirrored instruction"
    sensitive = mirror_sensitive_words(original, lang) + mirror_sensitive_words(mirrored, lang)
    if sensitive:
        return "not_applicable", f"mirroring changes its content: {', '.join(dict.fromkeys(sensitive))}"
    expected = direction_sequence(original, lang)
    found = direction_sequence(swap_directions(mirrored, lang), lang)
    if not expected and not found:
        return "not_applicable", "no horizontal direction words"
    if expected == found:
        return "consistent", f"directions agree after the swap: {', '.join(expected)}"
    return "inconsistent", (
        f"original says [{', '.join(expected)}]; the mirrored instruction, swapped back, "
        f"says [{', '.join(found)}]"
    )


# ---------------------------------------------------------------- as an engine stage


@dataclass(frozen=True)
class _Item:
    key: str
    instruction: str | None
    seed_offset: int
    applicable: bool
    reason: str


def _plan(row: dict[str, Any], lang: str) -> tuple[list[_Item], str | None]:
    """The instructions of a row to check, each with its applicability; or why the row has none.

    An `instruction` column wins; otherwise the parsed candidates, only the best one once a best
    was chosen. A candidate keeps its index so its mirror is sampled with the candidate's seed.
    """
    if row.get("quarantine_reason") is not None:
        return [], f"quarantined: {row['quarantine_reason']}"
    reference = row.get("reference_instruction")
    if "instruction" in row:
        originals = [(row["pair_id"], row["instruction"], 0)]
    elif row.get("candidates") is not None:
        best = row.get("best_candidate_id")
        originals = [
            (c["candidate_id"], c["instruction"], i)
            for i, c in enumerate(row["candidates"])
            if c.get("parsed") and (best is None or c["candidate_id"] == best)
        ]
    else:
        raise KeyError("a flip-consistency row needs an `instruction` or a `candidates` column")
    if not originals:
        return [], "no parsed instruction"
    items = [_Item(key, text, i, *flip_applicable(text, reference, lang)) for key, text, i in originals]
    return items, None


def flip_expand(
    row: dict[str, Any], sampling: SamplingSettings | None = None, lang: str = "en"
) -> list[EngineRequest]:
    """One request per applicable instruction: the mirrored pair, with the captioning prompt."""
    items, _ = _plan(row, lang)
    applicable = [item for item in items if item.applicable]
    if not applicable:
        return []
    try:
        source, target = mirror_pair(bytes(row["source"]), bytes(row["target"]))
    except ImageRejected:
        return []
    sampling = sampling or SamplingSettings()
    return [
        instruction_request(f"{item.key}:mirror", source, target, sampling, seed_offset=item.seed_offset)
        for item in applicable
    ]


def flip_merge(row: dict[str, Any], results: list[EngineResult], lang: str = "en") -> dict[str, Any]:
    """The row plus `flip_verdict`, `flip_reason` and `flip_details` (JSON, one entry per instruction).

    The row's verdict is inconsistent if any checked instruction is, consistent if any other is.
    """
    items, why_none = _plan(row, lang)
    applicable = [item for item in items if item.applicable]
    if applicable and len(results) != len(applicable):
        why_none = "the pair's images could not be mirrored"
    answers = iter(results)
    details = []
    for item in items if why_none is None else []:
        verdict: FlipVerdict = "not_applicable"
        reason, mirrored = item.reason, None
        if item.applicable:
            result = next(answers)
            mirrored = parse_instruction(result) if result.error is None else None
            if result.error is not None:
                reason = f"engine error on the mirrored pair: {result.error}"
            else:
                verdict, reason = flip_verdict(item.instruction, mirrored, lang)
        details.append({"id": item.key, "mirrored": mirrored, "verdict": verdict, "reason": reason})
    verdict, reason = _row_verdict(details, why_none)
    return {**row, "flip_verdict": verdict, "flip_reason": reason, "flip_details": json.dumps(details)}


def _row_verdict(details: list[dict[str, Any]], why_none: str | None) -> tuple[FlipVerdict, str]:
    for wanted in ("inconsistent", "consistent", "not_applicable"):
        hits = [d for d in details if d["verdict"] == wanted]
        if hits:
            prefix = f"{hits[0]['id']}: " if len(details) > 1 else ""
            return wanted, prefix + hits[0]["reason"]
    return "not_applicable", why_none or "nothing to check"


@dataclass
class FlipConsistencyCheck:
    """Adds `flip_verdict`, `flip_reason`, `flip_details` to pair rows by captioning each mirrored pair.

    Pass the captioner's own engine and sampling: the check asks the same model the same question.
    It costs one more captioning request per checked instruction.
    """

    engine: Engine
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    lang: str = "en"
    batch_size: int = 8
    replicas: int = 1

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        return self.engine.apply_grouped(
            ds,
            expand=functools.partial(flip_expand, sampling=self.sampling, lang=self.lang),
            merge=functools.partial(flip_merge, lang=self.lang),
            batch_size=self.batch_size,
            replicas=self.replicas,
        )


def flip_consistency_rate(verdicts: Iterable[str]) -> dict[str, Any]:
    """Counts per verdict and the consistent share of the applicable ones (None when none applied)."""
    counts = Counter(verdicts)
    unknown = set(counts) - {"consistent", "inconsistent", "not_applicable"}
    if unknown:
        raise ValueError(f"unknown flip verdicts: {sorted(unknown)}")
    applicable = counts["consistent"] + counts["inconsistent"]
    return {
        "consistent": counts["consistent"],
        "inconsistent": counts["inconsistent"],
        "not_applicable": counts["not_applicable"],
        "applicable": applicable,
        "rate": counts["consistent"] / applicable if applicable else None,
    }
