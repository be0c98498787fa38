"""Automatic hard negatives for DPO: rejected instructions that each carry one labelled error.

Human preference pairs are the scarce part of HAE-DPO. From one correct instruction the rules below
write the errors VLMs actually make, each a small edit of the correct text so the model has to learn
the difference rather than a style: directions swapped, the frame of reference dropped or moved
between viewer and subject, an attribute removed or replaced by a wrong one of the same kind.
A transformation that does not apply yields nothing; every row is a valid `PreferencePair`.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from editcaption.checks.directions import (
    Token,
    compile_senses,
    has_direction_words,
    has_sense,
    load_lexicon,
    swap_directions,
    tokenize,
)
from editcaption.schema import ErrorType, PreferencePair, Severity

# Whose-side phrases and how to drop or swap them, per language. The lexicon's `frames` patterns say
# which frame a text names; rewriting needs the exact span and a replacement, so the rules live here.
# `<side>` stands for the side spellings from the lexicon and `<viewer>` for the nouns below; each rule
# is (regex, frame kind).
_VIEWER_NOUNS = (
    "viewer|viewers|camera|observer|photographer|audience|spectator|onlooker|image|picture|photo|frame|screen"
)
FRAME_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "en": (
        (r"\bthe (?:<viewer>)['’]s\s+(?=<side>)", "viewer_side"),
        (r"\b(?:our|your|my)\s+(?=<side>)", "viewer_side"),
        (
            r",?\s*(?:as (?:seen|viewed|shown)|when viewed|seen) (?:by|from|in) (?:the (?:<viewer>)|us)\b",
            "viewer_clause",
        ),
        (r",?\s*from the (?:<viewer>)['’]s (?:perspective|point of view|viewpoint)", "viewer_clause"),
        (r"\b(?:the (?:[\w-]+ ){0,2}?[\w-]+['’]s|his|her|its|their) own\s+(?=<side>)", "subject_side"),
        (r"\bthe (?!(?:<viewer>)['’]s)(?:[\w-]+ ){0,2}?[\w-]+['’]s\s+(?=<side>)", "subject_side"),
        (r",?\s*from (?:his|her|its|their) own (?:perspective|point of view|viewpoint)", "subject_clause"),
    )
}

# Replacement values far enough apart that the swap is surely wrong: the lexicon also lists near
# synonyms (gold for yellow, navy for blue, steel for metal), which would make mislabelled negatives.
DISTINCT_VALUES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "colour": ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"),
        "material": ("wood", "metal", "glass", "plastic", "stone", "paper", "fabric", "leather", "rubber"),
    }
}

# What each frame phrase becomes: dropped (no frame left) or swapped to the other frame.
# `{subject}` is the edited subject's possessive with "own" ("the man's own", else "its own").
_DROP = {"viewer_side": "the ", "subject_side": "the ", "viewer_clause": "", "subject_clause": ""}
_SWAP = {
    "viewer_side": "{subject} ",
    "subject_side": "the viewer's ",
    "viewer_clause": " from {subject} point of view",
    "subject_clause": " from the viewer's point of view",
}


class LabelledVariant(Protocol):
    """A wrong instruction with the error it makes and the rule (`kind`) that wrote it."""

    kind: str
    error_type: ErrorType
    severity: Severity
    text: str


@dataclass(frozen=True)
class _Variant:
    kind: str
    error_type: ErrorType
    severity: Severity
    text: str | None


def hard_negatives(
    pair_id: str, source: bytes, target: bytes, instruction: str, lang: str = "en", seed: int = 0
) -> list[dict[str, Any]]:
    """`PreferencePair` rows (origin `hard_negative`), one per transformation that applies.

    Each row's `annotators` names the rule that wrote it (`rule:<kind>`). The same arguments give the
    same rows; every rejected text differs from the instruction and from the other variants.
    """

    def rng(kind: str) -> random.Random:
        return random.Random(f"{seed}:{kind}:{pair_id}:{instruction}")

    dropped, swapped = _frame_variants(instruction, lang)
    variants = [
        _Variant(
            "directions_swapped",
            "orientation",
            "critical",
            swap_directions(instruction, lang) if has_direction_words(instruction, lang) else None,
        ),
        _Variant("frame_dropped", "viewpoint", "major", dropped),
        _Variant("frame_swapped", "viewpoint", "major", swapped),
        _Variant(
            "attribute_removed", "attribute", "minor", _remove_attribute(instruction, lang, rng("remove"))
        ),
    ]
    for kind in ("colour", "material", "count"):
        variants.append(
            _Variant(
                f"{kind}_replaced",
                "attribute",
                "major",
                _replace_attribute(instruction, kind, lang, rng(kind)),
            )
        )
    written, seen = [], {_key(instruction)}
    for v in variants:
        if v.text is None or _key(v.text) in seen:
            continue
        seen.add(_key(v.text))
        written.append(v)
    return variant_pairs(pair_id, source, target, instruction, written, "hard_negative", "rule")


def variant_pairs(
    pair_id: str,
    source: bytes,
    target: bytes,
    chosen: str,
    variants: Iterable[LabelledVariant],
    origin: Literal["ground_truth", "hard_negative"],
    labeller: str,
) -> list[dict[str, Any]]:
    """`PreferencePair` rows, one per labelled wrong variant of the `chosen` instruction.

    The variant's error label becomes the pair's, and `annotators` names what wrote the variant
    (`<labeller>:<kind>`), so a rule-written or generated pair is never taken for a human one.
    """
    return [
        PreferencePair(
            pair_id=pair_id,
            source=source,
            target=target,
            chosen=chosen,
            rejected=v.text,
            error_type=v.error_type,
            severity=v.severity,
            origin=origin,
            annotators=[f"{labeller}:{v.kind}"],
        ).to_row()
        for v in variants
    ]


def mix_preferences(
    human: list[dict[str, Any]], negatives: list[dict[str, Any]], ratio: float, seed: int = 0
) -> list[dict[str, Any]]:
    """All human pairs plus `round(ratio * len(human))` negatives (fewer if there are fewer), shuffled.

    `ratio` is negatives per human pair, so the human signal keeps its weight however many negatives
    the rules wrote; the draw and the order depend only on `seed`.
    """
    if ratio < 0:
        raise ValueError(f"ratio must be >= 0, got {ratio}")
    rng = random.Random(seed)
    wanted = min(len(negatives), round(ratio * len(human)))
    mixed = list(human) + rng.sample(list(negatives), wanted)
    rng.shuffle(mixed)
    return mixed


def _key(text: str) -> str:
    return " ".join(text.lower().split())


# ---------------------------------------------------------------- viewpoint


@functools.cache
def _frame_regex(lang: str) -> tuple[re.Pattern[str], tuple[str, ...]] | None:
    rules = FRAME_RULES.get(lang)
    if not rules:
        return None
    spellings = [
        s
        for pair in load_lexicon(lang)["directions"]["sides"]
        for side in pair
        for s in (side if isinstance(side, list) else [side])
    ]
    body_parts = "|".join(map(re.escape, load_lexicon(lang)["viewpoint"]["sided_subjects"]["body_parts"]))
    # A body part's side is its owner's by nature ("her left hand"): moving it to the viewer is no error.
    side = (
        r"(?:far |extreme )?(?:"
        + "|".join(sorted(map(re.escape, spellings), key=len, reverse=True))
        + rf")\b(?![\s-]+(?:{body_parts})s?\b)"
    )
    combined = "|".join(
        f"(?P<r{i}>{pattern.replace('<side>', side).replace('<viewer>', _VIEWER_NOUNS)})"
        for i, (pattern, _) in enumerate(rules)
    )
    return re.compile(combined, re.IGNORECASE), tuple(kind for _, kind in rules)


def _frame_variants(text: str, lang: str) -> tuple[str | None, str | None]:
    """(every frame of reference dropped, every frame swapped viewer↔subject), None where none is named."""
    compiled = _frame_regex(lang)
    if compiled is None:
        return None, None
    regex, kinds = compiled
    matches = [(m, kinds[int(m.lastgroup[1:])]) for m in regex.finditer(text) if m.lastgroup]
    if not matches:
        return None, None
    subject = _subject_possessive(text, lang)

    def rewrite(table: dict[str, str]) -> str:
        pieces, position = [], 0
        for m, kind in matches:
            replacement = table[kind].format(subject=subject)
            if m.group()[:1].isupper():
                replacement = replacement[:1].upper() + replacement[1:]
            pieces += [text[position : m.start()], replacement]
            position = m.end()
        return _tidy("".join(pieces) + text[position:])

    return rewrite(_DROP), rewrite(_SWAP)


def _subject_possessive(text: str, lang: str) -> str:
    """ "the <noun>'s own" for the first thing with sides of its own that the text names, else "its own"."""
    lexicon = load_lexicon(lang)
    groups = lexicon["viewpoint"]["sided_subjects"]
    nouns = {str(w).lower() for name, words in groups.items() if name != "body_parts" for w in words}
    determiners = {str(w).lower() for w in lexicon["word_lists"]["determiners"]}
    tokens = tokenize(text)
    for before, token in zip(tokens, tokens[1:], strict=False):
        if before.text in determiners and token.text in nouns:
            return f"the {token.text}'s own"
    return "its own"


# ---------------------------------------------------------------- attributes


@functools.cache
def _attribute_words(lang: str, kind: str) -> dict[str, str]:
    """Single-word spellings of an attribute kind -> canonical value; materials exclude colour words."""
    kinds = load_lexicon(lang)["attributes"]["kinds"]
    words = {
        str(w).lower(): str(value)
        for value, spellings in kinds[kind]["values"].items()
        for w in spellings
        if re.fullmatch(r"[^\W\d_]+", str(w))
    }
    if kind == "material":
        words = {w: v for w, v in words.items() if w not in _attribute_words(lang, "colour")}
    return words


@functools.cache
def _count_senses(lang: str) -> tuple:
    lexicon = load_lexicon(lang)
    return compile_senses(lexicon["attributes"]["kinds"]["count"].get("senses", []), lexicon["word_lists"])


def _remove_attribute(text: str, lang: str, rng: random.Random) -> str | None:
    """One colour, material or size adjective removed ("the small red cup" -> "the small cup")."""
    lexicon = load_lexicon(lang)
    determiners = {str(w).lower() for w in lexicon["word_lists"]["determiners"]}
    stops = {str(w).lower() for w in lexicon["word_lists"]["phrase_stops"]}
    adjectives = {w for kind in ("colour", "material", "size") for w in _attribute_words(lang, kind)}
    numbers = set(_number_words(lang))
    tokens = tokenize(text)

    def modifies_a_noun(i: int) -> bool:
        before, after = tokens[i - 1].text, tokens[i + 1]
        opens_phrase = before in determiners | adjectives | numbers or before[0].isdigit()
        return opens_phrase and not after.is_mark and after.text not in stops | adjectives

    removable = [i for i in range(1, len(tokens) - 1) if tokens[i].text in adjectives and modifies_a_noun(i)]
    if not removable:
        return None
    token = tokens[rng.choice(removable)]
    return _tidy(text[: token.start] + text[token.end :])


def _replace_attribute(text: str, kind: str, lang: str, rng: random.Random) -> str | None:
    """One mention of a colour, material or count replaced by a clearly different value of its kind."""
    tokens = tokenize(text)
    if kind == "count":
        spots = [(t, _other_number(t.text, rng)) for t in tokens if t.text[0].isdigit()]
        spots += _number_word_spots(tokens, lang, rng)
    else:
        distinct = DISTINCT_VALUES.get(lang, {}).get(kind, ())
        words = _attribute_words(lang, kind)
        others = sorted(set(distinct) - {words[t.text] for t in tokens if t.text in words})
        spots = [(t, rng.choice(others)) for t in tokens if words.get(t.text) in distinct and others]
    if not spots:
        return None
    token, replacement = spots[rng.randrange(len(spots))]
    written = text[token.start : token.end]
    return text[: token.start] + _same_case(replacement, written) + text[token.end :]


@functools.cache
def _number_words(lang: str) -> dict[str, int]:
    """The plain number words of the lexicon's count values ("two" -> 2; not "pair of" or "dozen")."""
    values = load_lexicon(lang)["attributes"]["kinds"]["count"]["values"]
    return {str(v[0]).lower(): int(k) for k, v in values.items() if re.fullmatch(r"[^\W\d_]+", str(v[0]))}


def _number_word_spots(tokens: list[Token], lang: str, rng: random.Random) -> list[tuple[Token, str]]:
    """Counts of two or more written as words ("two cups", not "one of them"), each with a nearby
    other count: far-off or singular replacements would give the negative away by grammar."""
    numbers = _number_words(lang)
    senses = _count_senses(lang)
    spots = []
    for i, t in enumerate(tokens):
        value = numbers.get(t.text, 0)
        if value >= 2 and has_sense(senses, tokens, i, i + 1, t.text):
            near = sorted(w for w, v in numbers.items() if v >= 2 and 0 < abs(v - value) <= 3)
            spots.append((t, rng.choice(near)))
    return spots


def _other_number(written: str, rng: random.Random) -> str:
    """A clearly different number in the same notation: 25 -> 50, 12 or 35; 1.6 -> 3.2, 0.8 or 2.2."""
    normal = written.replace(",", "")
    decimals = len(normal.split(".")[1]) if "." in normal else 0
    value = float(normal)
    step = max(abs(value) * 0.4, 10.0**-decimals)
    unit = 10.0 ** math.floor(math.log10(step))
    step = max(round(step / unit) * unit, 10.0**-decimals)  # a round step: 90 -> 130, not 126
    choices = [f"{c:.{decimals}f}" for c in (value * 2 or 2.0, value / 2, value + step)]
    return rng.choice([c for c in choices if float(c) != value and float(c) > 0])


def _same_case(word: str, model: str) -> str:
    if len(model) > 1 and model.isupper():
        return word.upper()
    return word[:1].upper() + word[1:] if model[:1].isupper() else word


def _tidy(text: str) -> str:
    """Spaces left by a removal: no doubles, none before punctuation, none inside brackets."""
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r" +([,.;:!?)])", r"\1", text)
    text = re.sub(r"\( +", "(", text)
    return text.strip()
