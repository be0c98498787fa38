"""Viewpoint lint: "left" of whom, and is it the camera or the object that moves?

A person, animal, car or sofa has its own left, right, front and back, so "move the man's arm to the
left" is ambiguous unless it says whose left; and "pan the cup left" or "move the whole scene left" mix
up camera moves with object moves. These are the viewpoint errors VLM instructions make. Every word
list and phrase comes from the lexicon's `frames` and `viewpoint` sections.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from editcaption.checks.directions import (
    Pattern,
    Token,
    compile_pattern,
    compile_senses,
    find_directions,
    has_sense,
    load_lexicon,
    sentences,
    token_range,
    tokenize,
)

IssueKind = Literal["missing_frame", "camera_as_object", "object_as_camera"]


@dataclass(frozen=True)
class ViewpointIssue:
    """One finding: what kind, where in the instruction (character span) and how to fix it."""

    kind: IssueKind
    span: tuple[int, int]
    message: str


@dataclass(frozen=True)
class _Viewpoint:
    frames: tuple[tuple[str, tuple[Pattern, ...]], ...]
    side_senses: tuple[tuple[bool, Pattern], ...]
    depth_terms: tuple[Pattern, ...]
    depth_senses: tuple[tuple[bool, Pattern], ...]
    sided: frozenset[str]
    plural_endings: tuple[tuple[str, str], ...]
    words: dict[str, frozenset[str]]


@functools.cache
def _viewpoint(lang: str) -> _Viewpoint:
    lexicon = load_lexicon(lang)
    lists = lexicon["word_lists"]
    spec = lexicon["viewpoint"]
    return _Viewpoint(
        frames=tuple(
            (kind, tuple(compile_pattern(p, lists) for p in patterns))
            for kind, patterns in lexicon["frames"].items()
        ),
        side_senses=compile_senses(spec["side_senses"], lists),
        depth_terms=tuple(compile_pattern(p, lists) for p in spec["depth_terms"]),
        depth_senses=compile_senses(spec["depth_senses"], lists),
        sided=frozenset(w.lower() for words in spec["sided_subjects"].values() for w in words),
        plural_endings=tuple((str(k), str(v or "")) for k, v in spec["plural_endings"].items()),
        words={name: frozenset(str(w).lower() for w in words) for name, words in lists.items()},
    )


def reference_frames(text: str, lang: str = "en") -> set[str]:
    """Which frames of reference `text` names: "viewer" (image, camera) and/or "subject" (its own sides)."""
    return _frames(tokenize(text), _viewpoint(lang))


def lint_viewpoint(instruction: str, lang: str = "en") -> list[ViewpointIssue]:
    """Viewpoint problems of an instruction, in text order.

    - missing_frame: a sentence places something left/right/in front/behind, mentions something with
      sides of its own, and names no frame of reference (one issue per sentence, at the first such word);
    - camera_as_object: a camera-only verb (pan, zoom, dolly) moving a thing, not the camera, somewhere
      ("pan the cup to the left"; "pan the room" is a camera sweep and passes);
    - object_as_camera: an object verb moving the whole scene in a direction, which reads as a camera move.
    """
    spec = _viewpoint(lang)
    sides = [m for m in find_directions(instruction, lang) if m.directional and m.kind == "sides"]
    issues: list[ViewpointIssue] = []
    for sentence in sentences(instruction, tokenize(instruction)):
        start, end = sentence[0].start, sentence[-1].end
        placements = [
            (m.text, m.start, m.end)
            for m in sides
            if start <= m.start < end and _needs_frame(m.text, m.start, m.end, sentence, spec)
        ]
        placements += _depth_terms(instruction, sentence, spec)
        issues += _missing_frame(sorted(placements, key=lambda p: p[1]), sentence, spec)
        issues += _camera_as_object(sentence, spec)
        issues += _object_as_camera(instruction, sentence, spec)
    return sorted(issues, key=lambda issue: issue.span)


def _missing_frame(
    placements: list[tuple[str, int, int]], sentence: list[Token], spec: _Viewpoint
) -> list[ViewpointIssue]:
    if not placements or _frames(sentence, spec):
        return []
    subject = next((t.text for t in sentence if _forms(t.text, spec) & spec.sided), None)
    if subject is None:
        return []
    word, start, end = placements[0]
    message = (
        f'"{word}" has no frame of reference, and "{subject}" has sides of its own: say whose, '
        f"the viewer's (as the image shows it) or the subject's own"
    )
    return [ViewpointIssue("missing_frame", (start, end), message)]


def _needs_frame(word: str, start: int, end: int, sentence: list[Token], spec: _Viewpoint) -> bool:
    """Whether this left/right could be the viewer's or the subject's ("on the left" alone cannot)."""
    return has_sense(spec.side_senses, sentence, *token_range(sentence, start, end), word.lower())


def _camera_as_object(sentence: list[Token], spec: _Viewpoint) -> list[ViewpointIssue]:
    issues = []
    for i, token in enumerate(sentence):
        if token.text not in spec.words["camera_verbs"] or (
            i and sentence[i - 1].text in spec.words["determiners"]
        ):
            continue  # "the pan" is a noun
        if i + 1 >= len(sentence) or sentence[i + 1].text not in spec.words["determiners"]:
            continue  # "pan left", "zoom in on the dog": the camera moves
        if any(_forms(t.text, spec) & spec.words["camera_nouns"] for t in sentence[:i]):
            continue  # "the camera pans the room": the camera is what moves
        phrase = _object_phrase(sentence, i + 1, spec)
        moved = any(t.text in spec.words["motion_complements"] for t in sentence[i + 1 + len(phrase) :])
        if phrase and moved and not any(_forms(t.text, spec) & spec.words["camera_nouns"] for t in phrase):
            thing = " ".join(t.text for t in phrase)
            issues.append(
                ViewpointIssue(
                    "camera_as_object",
                    (token.start, token.end),
                    f'"{token.text}" is a camera move but here it moves "{thing}": use an object verb '
                    "(move, slide, turn) for the object, or say what the camera does",
                )
            )
    return issues


def _object_as_camera(text: str, sentence: list[Token], spec: _Viewpoint) -> list[ViewpointIssue]:
    words = spec.words
    verbs = words["motion_verbs"] - words["camera_verbs"]
    issues = []
    for i, token in enumerate(sentence):
        if token.text not in verbs:
            continue
        phrase = _object_phrase(sentence, i + 1, spec)
        stems = set().union(*(_forms(t.text, spec) for t in phrase))
        whole_scene = stems & words["scene_nouns"] or (
            stems & words["whole"] and stems & words["camera_nouns"]
        )
        if whole_scene and any(t.text in words["motion_complements"] for t in sentence[i + 1 :]):
            span = (token.start, phrase[-1].end)
            issues.append(
                ViewpointIssue(
                    "object_as_camera",
                    span,
                    f'"{text[span[0] : span[1]]}" moves the whole picture, which reads as a camera change: '
                    'say "pan the camera" or "rotate the view" instead',
                )
            )
    return issues


def _object_phrase(sentence: list[Token], i: int, spec: _Viewpoint) -> list[Token]:
    """The words after a verb up to the first that ends its object (a preposition, direction, number, mark)."""
    phrase = []
    for token in sentence[i:]:
        if token.is_mark or token.text[0].isdigit() or token.text in spec.words["phrase_stops"]:
            break
        phrase.append(token)
    return phrase


def _depth_terms(text: str, sentence: list[Token], spec: _Viewpoint) -> list[tuple[str, int, int]]:
    found = []
    for i in range(len(sentence)):
        for pattern in spec.depth_terms:
            j = pattern.match_at(sentence, i)
            if j is not None and j > i and has_sense(spec.depth_senses, sentence, i, j, sentence[i].text):
                start, end = sentence[i].start, sentence[j - 1].end
                found.append((text[start:end], start, end))
                break
    return found


def _frames(tokens: list[Token], spec: _Viewpoint) -> set[str]:
    """Frame kinds named in `tokens`; a phrase claimed by an earlier kind is not counted again."""
    claimed: set[int] = set()
    kinds = set()
    for kind, patterns in spec.frames:
        for i in range(len(tokens)):
            for pattern in patterns:
                j = pattern.match_at(tokens, i)
                if j is not None and j > i and not claimed & set(range(i, j)):
                    claimed.update(range(i, j))
                    kinds.add(kind)
    return kinds


def _forms(word: str, spec: _Viewpoint) -> set[str]:
    """`word` and what it could be the plural or possessive of ("dogs" → dog, "buses" → bus, "man's" → man)."""
    word = word.removesuffix("'s")
    forms = {word}
    for ending, singular in spec.plural_endings:
        if word.endswith(ending):
            forms.add(word[: -len(ending)] + singular)
    return forms
