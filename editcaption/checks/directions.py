"""Horizontal direction words: find them, tell the side from the idiom, and mirror them for a flip.

A horizontally mirrored pair is described by the same instruction with left and right (and clockwise
and counter-clockwise) exchanged, so flip consistency, mirrored augmentation and orientation hard
negatives all rest on `swap_directions`. The hard part is what not to swap: "left unchanged", "the man
left", "right now", "the right answer". Those senses are decided by ordered rules in the lexicon.

This module also loads the lexicon and holds the token patterns its rules are written in; the
viewpoint and attribute checks read the same words the same way.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

LEXICON_KEYS: tuple[str, ...] = ("word_lists", "directions", "frames", "viewpoint", "attributes")
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W_]+(?:['’][^\W_]+)*|[°%]|[.,;:!?()\[\]{}\"“”]")
_MARKS = frozenset('.,;:!?()[]{}"“”')
_SENTENCE_ENDS = frozenset(".!?;")
_WORD_CHAR = r"[^\W_]"


def load_lexicon(lang: str = "en") -> dict[str, Any]:
    """The parsed `lexicon/<lang>.yaml`, shared between callers (treat it as read-only)."""
    return _load_lexicon(lang)


@functools.cache
def _load_lexicon(lang: str) -> dict[str, Any]:
    folder = resources.files(__package__) / "lexicon"
    available = sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
    if lang not in available:
        raise ValueError(f"no lexicon for language {lang!r}; available: {', '.join(available)}")
    data = yaml.safe_load((folder / f"{lang}.yaml").read_text(encoding="utf-8"))
    missing = [key for key in LEXICON_KEYS if key not in data]
    if missing:
        raise ValueError(f"lexicon {lang!r} lacks {', '.join(missing)}")
    return data


@dataclass(frozen=True)
class Token:
    """A word, number or clause mark of a text: lower-cased, curly apostrophe straightened, with its span."""

    text: str
    start: int
    end: int

    @property
    def is_mark(self) -> bool:
        return self.text in _MARKS


def tokenize(text: str) -> list[Token]:
    """Words, numbers and clause marks; hyphens and other symbols only separate words."""
    return [Token(m.group().lower().replace("’", "'"), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def sentences(text: str, tokens: list[Token]) -> list[list[Token]]:
    """Tokens split at sentence ends and line breaks; marks stay with their sentence."""
    parts: list[list[Token]] = [[]]
    for token in tokens:
        if parts[-1] and "\n" in text[parts[-1][-1].end : token.start]:
            parts.append([])
        parts[-1].append(token)
        if token.text in _SENTENCE_ENDS:
            parts.append([])
    return [part for part in parts if part]


# A pattern element: ("word", words) | ("any", ∅) | ("poss", ∅) | ("gap", ∅) | ("edge", ∅).
_Element = tuple[str, frozenset[str]]
_SPECIAL = {"*": "any", "*'s": "poss", "...": "gap", "^": "edge", "$": "edge"}


@dataclass(frozen=True)
class Pattern:
    """A compiled token pattern (syntax at the top of the lexicon file).

    `target` is None for a phrase; for a sense rule it holds the words it judges (empty: any word),
    and `before` is stored nearest-first because it is read leftwards from the judged word.
    """

    before: tuple[_Element, ...]
    target: frozenset[str] | None
    after: tuple[_Element, ...]

    def match_at(self, tokens: list[Token], i: int) -> int | None:
        """For a phrase: the index after it when it starts at tokens[i], else None."""
        return _match(self.after, tokens, i, 1)

    def judges(self, tokens: list[Token], start: int, end: int, word: str) -> bool:
        """For a sense rule: whether it applies to `word`, which is tokens[start:end]."""
        if self.target and word not in self.target:
            return False
        return _match(self.before, tokens, start - 1, -1) is not None and (
            _match(self.after, tokens, end, 1) is not None
        )


def compile_pattern(source: str, word_lists: dict[str, list[str]]) -> Pattern:
    """Compile one pattern; `@name` expands to word_lists[name]."""
    before: list[_Element] = []
    target: frozenset[str] | None = None
    after: list[_Element] = []
    for part in source.replace("-", " ").split():
        if part.startswith("[") and part.endswith("]"):
            if target is not None:
                raise ValueError(f"pattern {source!r} judges two words")
            inner = part[1:-1]
            target = frozenset() if inner == "*" else _words(inner, word_lists)
            continue
        element = (_SPECIAL[part], frozenset()) if part in _SPECIAL else ("word", _words(part, word_lists))
        (after if target is not None else before).append(element)
    if target is None:
        return Pattern((), None, tuple(before))
    return Pattern(tuple(reversed(before)), target, tuple(after))


def compile_senses(
    rules: list[dict[str, str]], word_lists: dict[str, list[str]]
) -> tuple[tuple[bool, Pattern], ...]:
    """Ordered sense rules: each is {"is": pattern} or {"not": pattern}."""
    compiled = []
    for rule in rules:
        ((verdict, source),) = rule.items()
        if verdict not in ("is", "not"):
            raise ValueError(f"sense rule {rule!r}: use 'is' or 'not'")
        pattern = compile_pattern(source, word_lists)
        if pattern.target is None:
            raise ValueError(f"sense rule {rule!r} marks no word to judge: put it in [brackets]")
        compiled.append((verdict == "is", pattern))
    return tuple(compiled)


def has_sense(
    rules: tuple[tuple[bool, Pattern], ...], tokens: list[Token], start: int, end: int, word: str
) -> bool:
    """The verdict of the first rule that applies to tokens[start:end]; the sense holds if none does."""
    return next((verdict for verdict, rule in rules if rule.judges(tokens, start, end, word)), True)


def token_range(tokens: list[Token], start: int, end: int) -> tuple[int, int]:
    """Indices [i, j) of the tokens inside the character span [start, end)."""
    starts = [t.start for t in tokens]
    return bisect.bisect_left(starts, start), bisect.bisect_left(starts, end)


@dataclass(frozen=True)
class DirectionMention:
    """One occurrence of a mirrorable word, and whether it is used as a direction here."""

    text: str
    start: int
    end: int
    kind: str  # the lexicon group: "sides" (left, rightmost, ...) or "rotations" (clockwise, ...)
    directional: bool


@dataclass(frozen=True)
class _Directions:
    finder: re.Pattern[str]
    # normalised spelling -> (group, the spellings of its own side, the spellings of the other side)
    spellings: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]]
    senses: tuple[tuple[bool, Pattern], ...]


@functools.cache
def _directions(lang: str) -> _Directions:
    lexicon = load_lexicon(lang)
    spec = lexicon["directions"]
    spellings: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
    for group in ("sides", "rotations"):
        for pair in spec[group]:
            one, other = (tuple(s) if isinstance(s, list) else (s,) for s in pair)
            for own, partner in ((one, other), (other, one)):
                for spelling in own:
                    spellings[_normalise(spelling)] = (group, own, partner)
    # Longest first, so "counter-clockwise" is found whole rather than as "clockwise".
    alternatives = "|".join(
        re.escape(s).replace(r"\ ", r"\s+") for s in sorted(spellings, key=len, reverse=True)
    )
    finder = re.compile(rf"(?<!{_WORD_CHAR})(?:{alternatives})(?!{_WORD_CHAR})", re.IGNORECASE)
    return _Directions(finder, spellings, compile_senses(spec["senses"], lexicon["word_lists"]))


def find_directions(text: str, lang: str = "en") -> list[DirectionMention]:
    """Every mirrorable word in `text`, in order, each judged directional or not by the sense rules."""
    spec = _directions(lang)
    tokens = tokenize(text)
    mentions = []
    for m in spec.finder.finditer(text):
        word = _normalise(m.group())
        start, end = token_range(tokens, m.start(), m.end())
        mentions.append(
            DirectionMention(
                m.group(),
                m.start(),
                m.end(),
                spec.spellings[word][0],
                has_sense(spec.senses, tokens, start, end, word),
            )
        )
    return mentions


def direction_words(text: str, lang: str = "en") -> list[str]:
    """The horizontal direction words used as directions, as written (up/down are not: a flip keeps them)."""
    return [m.text for m in find_directions(text, lang) if m.directional]


def has_direction_words(text: str, lang: str = "en") -> bool:
    """Whether a horizontal flip changes what `text` says."""
    return bool(direction_words(text, lang))


def swap_directions(text: str, lang: str = "en") -> str:
    """`text` as it would describe the horizontally mirrored images: each direction replaced by its opposite.

    Capitalisation is carried over (Left → Right, LEFT → RIGHT). Where a side has several spellings
    (counter-clockwise, anticlockwise, ...) the one the text already uses is written, else the first.
    """
    spec = _directions(lang)
    mentions = [m for m in find_directions(text, lang) if m.directional]
    used = {_normalise(m.text) for m in mentions}
    pieces, position = [], 0
    for m in mentions:
        partner = spec.spellings[_normalise(m.text)][2]
        replacement = next((s for s in partner if _normalise(s) in used), partner[0])
        pieces += [text[position : m.start], _same_case(replacement, m.text)]
        position = m.end
    return "".join(pieces) + text[position:]


def _same_case(word: str, model: str) -> str:
    letters = [c for c in model if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return word.upper()
    if model[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _normalise(spelling: str) -> str:
    return " ".join(spelling.lower().split())


def _words(alternatives: str, word_lists: dict[str, list[str]]) -> frozenset[str]:
    words: set[str] = set()
    for alternative in alternatives.split("|"):
        if alternative.startswith("@"):
            words.update(str(w).lower() for w in word_lists[alternative[1:]])
        else:
            words.add(alternative.lower())
    return frozenset(words)


def _match(elements: tuple[_Element, ...], tokens: list[Token], i: int, step: int) -> int | None:
    """The index after `elements` matched from tokens[i] in direction `step` (±1), or None."""
    if not elements:
        return i
    (kind, words), rest = elements[0], elements[1:]
    inside = 0 <= i < len(tokens)
    if kind == "edge":
        return _match(rest, tokens, i, step) if not inside or tokens[i].is_mark else None
    if kind == "gap":
        while True:
            found = _match(rest, tokens, i, step)
            if found is not None or not (0 <= i < len(tokens)) or tokens[i].is_mark:
                return found
            i += step
    if not inside or tokens[i].is_mark:
        return None
    word = tokens[i].text
    if kind == "word" and word not in words or kind == "poss" and not word.endswith("'s"):
        return None
    return _match(rest, tokens, i + step, step)
