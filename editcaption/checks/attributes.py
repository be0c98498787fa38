"""Attribute coverage: does an instruction name the colour, material, count, size, text, pose and position
that changed, and name them right?

VLM instructions often get the object right and an attribute wrong ("green" for blue) or leave it out.
Against a reference instruction (benchmarks) or another model's structured list of changes, this says
which attribute values the candidate misses, which it contradicts, and a 0-1 score. Vocabularies and
which values exclude one another are the lexicon's `attributes` section.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from editcaption.checks.directions import (
    Pattern,
    Token,
    compile_pattern,
    compile_senses,
    find_directions,
    has_sense,
    load_lexicon,
    sentences,
    tokenize,
)

# Text in double quotes, curly quotes, or single quotes that are not apostrophes.
_QUOTED = re.compile(r'"([^"\n]+)"|“([^”\n]+)”|(?<!\w)\'([^\'\n]+)\'(?!\w)')
_STRIP = " \t.,;:!?\"'“”‘’()[]"


@dataclass(frozen=True)
class AttributeCoverage:
    """How a candidate's attribute values compare with a reference's, by kind (colour, size, ...).

    `covered`: reference values the candidate names; `missing`: reference values it does not;
    `wrong`: values the candidate names instead of a missing one of the same kind (green for blue);
    `score`: covered / (reference values + wrong values), 1.0 when the reference names none.
    """

    missing: dict[str, set[str]]
    wrong: dict[str, set[str]]
    covered: dict[str, set[str]]
    score: float


@dataclass(frozen=True)
class _Kind:
    name: str
    phrases: dict[str, tuple[tuple[str, Pattern], ...]]  # first word -> (value, phrase) starting with it
    senses: tuple[tuple[bool, Pattern], ...]
    groups: dict[str, frozenset[str]]  # value -> the groups of values it excludes others in
    digits: bool  # numbers are values ("3 cups")
    cues: frozenset[str]  # words after which quoted or capitalised text is a value


@dataclass(frozen=True)
class _Attributes:
    kinds: tuple[_Kind, ...]
    aliases: dict[str, str]


@functools.cache
def _attributes(lang: str) -> _Attributes:
    lexicon = load_lexicon(lang)
    lists = lexicon["word_lists"]
    spec = lexicon["attributes"]
    kinds = []
    for name, kind in spec["kinds"].items():
        phrases: dict[str, list[tuple[str, Pattern]]] = {}
        for value, entries in kind.get("values", {}).items():
            for entry in entries:
                pattern = compile_pattern(str(entry), lists)
                if not pattern.after or pattern.after[0][0] != "word":
                    raise ValueError(f"{lang} attribute {name}.{value}: {entry!r} must start with a word")
                for word in pattern.after[0][1]:
                    phrases.setdefault(word, []).append((str(value), pattern))
        groups: dict[str, set[str]] = {}
        for group, values in kind.get("groups", {}).items():
            for value in values:
                groups.setdefault(str(value), set()).add(group)
        kinds.append(
            _Kind(
                name=name,
                phrases={word: tuple(found) for word, found in phrases.items()},
                senses=compile_senses(kind.get("senses", []), lists),
                groups={value: frozenset(g) for value, g in groups.items()} if groups else {},
                digits=bool(kind.get("digits", False)),
                cues=frozenset(str(w).lower() for w in kind.get("cues", [])),
            )
        )
    aliases = {str(k).lower(): str(v) for k, v in spec.get("aliases", {}).items()}
    return _Attributes(tuple(kinds), aliases | {k.name: k.name for k in kinds})


def attribute_mentions(text: str, lang: str = "en") -> dict[str, set[str]]:
    """The attribute values `text` names, by kind; kinds it names none of are left out.

    Values are canonical ("grey" → gray, "two" → 2, "bigger" → larger); text values are the quoted
    or capitalised words after a text cue ("reads 'OPEN'" → open). left/right count as positions only
    where they are directions ("left unchanged" is not).
    """
    spec = _attributes(lang)
    tokens = tokenize(text)
    idioms = [(m.start, m.end) for m in find_directions(text, lang) if not m.directional]
    found = {}
    for kind in spec.kinds:
        values = _phrase_values(kind, tokens, idioms)
        if kind.digits:
            values |= {
                str(int(t.text))
                for i, t in enumerate(tokens)
                if t.text.isdigit() and has_sense(kind.senses, tokens, i, i + 1, t.text)
            }
        if kind.cues:
            values |= _text_values(text, tokens, kind.cues)
        if values:
            found[kind.name] = values
    return found


def attribute_coverage(
    candidate: str, reference: str | list[dict[str, object]], lang: str = "en"
) -> AttributeCoverage:
    """Compare the candidate's attribute values with the reference's.

    `reference` is an instruction, or a list of changes such as `[{"attribute": "colour", "value": "blue"}]`
    (attribute names may be aliases such as "color"; values are canonicalised like mentions). A text
    reference counts every value it names, including a before-state ("from red to blue" names both);
    a structured list names only what it lists.
    """
    spec = _attributes(lang)
    wanted = (
        attribute_mentions(reference, lang)
        if isinstance(reference, str)
        else _structured(reference, spec, lang)
    )
    named = attribute_mentions(candidate, lang)
    kinds = {k.name: k for k in spec.kinds}
    covered: dict[str, set[str]] = {}
    missing: dict[str, set[str]] = {}
    wrong: dict[str, set[str]] = {}
    for name, values in wanted.items():
        got = named.get(name, set())
        absent = values - got
        instead = {
            v for v in got - values if any(_groups(kinds[name], v) & _groups(kinds[name], a) for a in absent)
        }
        for result, chosen in ((covered, values & got), (missing, absent), (wrong, instead)):
            if chosen:
                result[name] = chosen
    total = sum(map(len, wanted.values()))
    hits = sum(map(len, covered.values()))
    score = 1.0 if total == 0 else hits / (total + sum(map(len, wrong.values())))
    return AttributeCoverage(missing=missing, wrong=wrong, covered=covered, score=score)


def _structured(changes: list[dict[str, object]], spec: _Attributes, lang: str) -> dict[str, set[str]]:
    values: dict[str, set[str]] = {}
    for change in changes:
        if "attribute" not in change or "value" not in change:
            raise ValueError(f"reference change {change!r} needs 'attribute' and 'value'")
        name = spec.aliases.get(str(change["attribute"]).strip().lower())
        if name is None:
            raise ValueError(
                f"unknown attribute {change['attribute']!r}; known: {', '.join(sorted(spec.aliases))}"
            )
        value = str(change["value"])
        values.setdefault(name, set()).update(
            attribute_mentions(value, lang).get(name) or {_normalise(value)}
        )
    return values


def _phrase_values(kind: _Kind, tokens: list[Token], idioms: list[tuple[int, int]]) -> set[str]:
    """Values of the kind's longest phrases, left to right, skipping words that are not directions here."""
    values = set()
    i = 0
    while i < len(tokens):
        matches = [
            (end, value)
            for value, p in kind.phrases.get(tokens[i].text, ())
            if (end := p.match_at(tokens, i))
        ]
        if not matches:
            i += 1
            continue
        end, value = max(matches, key=lambda m: m[0])
        start, stop = tokens[i].start, tokens[end - 1].end
        word = " ".join(t.text for t in tokens[i:end])
        if has_sense(kind.senses, tokens, i, end, word) and not any(
            s < stop and start < e for s, e in idioms
        ):
            values.add(value)
        i = end
    return values


def _text_values(text: str, tokens: list[Token], cues: frozenset[str]) -> set[str]:
    """Quoted strings in a sentence with a text cue, and capitalised words right after a cue."""
    values = set()
    cued = [s for s in sentences(text, tokens) if any(t.text in cues for t in s)]
    for m in _QUOTED.finditer(text):
        if any(s[0].start <= m.start() <= s[-1].end for s in cued):
            values.add(_normalise(next(g for g in m.groups() if g is not None)))
    for sentence in cued:
        for i, token in enumerate(sentence):
            first = next(
                (j for j in (i + 1, i + 2) if j < len(sentence) and _capitals(text, sentence[j])), None
            )
            if token.text not in cues or first is None:
                continue
            end = first
            while end < len(sentence) and _capitals(text, sentence[end]):
                end += 1
            values.add(" ".join(t.text for t in sentence[first:end]))
    return {v for v in values if v}


def _capitals(text: str, token: Token) -> bool:
    word = text[token.start : token.end]
    return len(word) > 1 and word.isalpha() and word.isupper()


def _groups(kind: _Kind, value: str) -> frozenset[str]:
    """The groups a value excludes others in: one for the whole kind unless the lexicon groups it."""
    if not kind.groups:
        return frozenset({kind.name})
    return kind.groups.get(value, frozenset({value}))


def _normalise(value: str) -> str:
    return " ".join(value.lower().strip(_STRIP).split())
