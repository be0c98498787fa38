"""Judge prompts and reply parsers: realistic replies parse to exactly what was written, or to a reason."""

from __future__ import annotations

import json

import pytest

from editcaption.prompts.judge import (
    DIMENSIONS,
    JUDGE_ERRORS,
    JUDGE_PROMPT_VERSION,
    PAIRWISE_ERRORS,
    JudgeReply,
    PairwiseReply,
    judge_messages,
    pairwise_messages,
    parse_judgment,
    parse_preference,
)
from editcaption.schema import ERROR_TYPES, VERDICTS


def _text(messages: list[dict]) -> str:
    return "\n".join(p["text"] for m in messages for p in m["content"] if p.get("type") == "text")


def test_prompt_version() -> None:
    assert JUDGE_PROMPT_VERSION == "judge-v1"


def test_judge_prompt_has_images_instruction_rubric_and_format() -> None:
    messages = judge_messages("  Rotate the mug so its handle points to the viewer's left. ")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert [p["type"] for p in messages[1]["content"]] == ["image", "image", "text"]
    text = _text(messages)
    assert "<instruction>Rotate the mug so its handle points to the viewer's left.</instruction>" in text
    for word in (*DIMENSIONS, *VERDICTS, *ERROR_TYPES, '"overall"', '"reasoning"', "1 to 5"):
        assert word in text
    assert "<reference>" not in text


def test_judge_prompt_includes_a_reference_only_when_there_is_one() -> None:
    text = _text(judge_messages("Make the car blue.", reference="Paint the car blue."))
    assert "<reference>Paint the car blue.</reference>" in text
    assert "<reference>" not in _text(judge_messages("Make the car blue.", reference="  "))


def test_pairwise_prompt_has_both_instructions_and_its_own_format() -> None:
    messages = pairwise_messages("Pan the camera left.", "Move the tree right.", reference="Pan left.")
    assert [p["type"] for p in messages[1]["content"]] == ["image", "image", "text"]
    text = _text(messages)
    assert "<instruction_a>Pan the camera left.</instruction_a>" in text
    assert "<instruction_b>Move the tree right.</instruction_b>" in text
    assert "<reference>Pan left.</reference>" in text
    assert '"preferred": "A" | "B" | "tie"' in text and '"verdict"' not in text


def test_prompts_reject_empty_instructions() -> None:
    with pytest.raises(ValueError):
        judge_messages("  ")
    with pytest.raises(ValueError):
        pairwise_messages("Make it red.", "")


def _reply(**fields: object) -> str:
    body = {
        "reasoning": "The mug turned, but the instruction names the wrong side.",
        "scores": {"correctness": 4, "orientation": 2, "viewpoint": 3, "attributes": 5, "conciseness": 4},
        "overall": 3,
        "verdict": "critical_error",
        "error_types": ["orientation"],
    }
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not ...})


SCORES = {"correctness": 4, "orientation": 2, "viewpoint": 3, "attributes": 5, "conciseness": 4}
CRITICAL = (SCORES, 3, "critical_error", ("orientation",))
CORRECT = ({d: 5 for d in DIMENSIONS}, 5, "correct", ())

PARSED = {
    "clean": (_reply(), CRITICAL),
    "fenced": ("```json\n" + _reply() + "\n```", CRITICAL),
    "think_block": ("<think>The handle was on the right {so}... </think>\n" + _reply(), CRITICAL),
    "dangling_think_close": ("the handle moved...</think>" + _reply(), CRITICAL),
    "prose_around": ("Here is my assessment of the instruction:\n" + _reply() + "\nLet me know!", CRITICAL),
    "single_quotes_trailing_commas": (
        "{'scores': {'correctness': 5, 'orientation': 5, 'viewpoint': 5, 'attributes': 5, "
        "'conciseness': 5,}, 'overall': 5, 'verdict': 'correct', 'error_types': [],}",
        CORRECT,
    ),
    "top_level_dimensions_spelled_loosely": (
        '{"Correctness": 4, "orientation": "2", "View-point": 3, "Attribute Completeness": 5.0, '
        '"conciseness": 4, "Overall Score": "3", "Verdict": "Critical Error", "Error Types": "Orientation"}',
        CRITICAL,
    ),
    "overall_inside_scores": (
        _reply(scores={**SCORES, "overall": 3}, overall=...),
        CRITICAL,
    ),
    "plural_and_suffixed_error_types": (
        _reply(verdict="minor-error", error_types=["Attributes", "orientation error", "attribute"]),
        (SCORES, 3, "minor_error", ("orientation", "attribute")),
    ),
    "comma_separated_error_types": (
        _reply(error_types="viewpoint, other"),
        (SCORES, 3, "critical_error", ("viewpoint", "other")),
    ),
    "correct_without_error_types": (
        _reply(scores={d: 5 for d in DIMENSIONS}, overall=5, verdict="correct", error_types=...),
        CORRECT,
    ),
    "correct_with_none_string": (
        _reply(scores={d: 5 for d in DIMENSIONS}, overall=5, verdict="correct", error_types="none"),
        CORRECT,
    ),
    "last_answer_wins": (
        "First pass: " + _reply(verdict="correct", error_types=[]) + "\nOn reflection: " + _reply(),
        CRITICAL,
    ),
    "format_echo_then_answer": (
        'The format is {"verdict": ...}. My answer:\n' + _reply(),
        CRITICAL,
    ),
}


@pytest.mark.parametrize("text, expected", PARSED.values(), ids=PARSED.keys())
def test_parses_realistic_replies(text: str, expected: tuple) -> None:
    scores, overall, verdict, error_types = expected
    reply = parse_judgment(text)
    assert reply.error is None, reply
    assert (reply.scores, reply.overall, reply.verdict, reply.error_types) == (
        scores,
        overall,
        verdict,
        error_types,
    )
    assert list(reply.scores) == list(DIMENSIONS)
    assert all(type(v) is int for v in [*reply.scores.values(), reply.overall])


def test_reasoning_is_kept() -> None:
    assert parse_judgment(_reply()).reasoning.startswith("The mug turned")
    assert parse_judgment(_reply(reasoning=...)).reasoning is None


FAILED = {
    "none": (None, "no_json"),
    "empty": ("  \n", "no_json"),
    "prose_only": ("Verdict: critical error. Overall 2/5, the direction is reversed.", "no_json"),
    "truncated": (_reply()[:60], "no_json"),
    "think_only": ("<think>" + _reply() + " hmm, let me reconsider", "truncated"),  # cut inside its reasoning
    "no_judgment_keys": ('{"reasoning": "The edit looks fine."}', "missing_field"),
    "missing_verdict": (_reply(verdict=...), "missing_field"),
    "missing_overall": (_reply(overall=...), "missing_field"),
    "missing_dimension": (
        _reply(scores={k: v for k, v in SCORES.items() if k != "viewpoint"}),
        "missing_field",
    ),
    "error_verdict_without_types": (_reply(error_types=...), "missing_field"),
    "six_of_five": (_reply(overall=6), "out_of_range"),
    "zero": (_reply(scores={**SCORES, "conciseness": 0}), "out_of_range"),
    "ten_point_scale": (_reply(scores={d: 8 for d in DIMENSIONS}, overall=7), "out_of_range"),
    "half_point": (_reply(overall=3.5), "not_an_integer"),
    "word_score": (_reply(overall="three"), "not_a_number"),
    "fraction_string": (_reply(overall="3/5"), "not_a_number"),
    "null_score": (_reply(scores={**SCORES, "orientation": None}), "not_a_number"),
    "bool_score": (_reply(overall=True), "not_a_number"),
    "null_overall": (_reply(overall=None), "not_a_number"),
    "null_verdict": (_reply(verdict=None), "bad_verdict"),
    "unknown_verdict": (_reply(verdict="partially correct"), "bad_verdict"),
    "bare_critical": (_reply(verdict="critical"), "bad_verdict"),
    "verdict_not_a_string": (_reply(verdict=2), "bad_verdict"),
    "error_type_outside_vocabulary": (_reply(error_types=["orientation", "grammar"]), "bad_error_type"),
    "error_type_synonym": (_reply(error_types=["direction"]), "bad_error_type"),
    "error_types_not_a_list": (_reply(error_types=3), "bad_error_type"),
    "correct_with_errors": (_reply(verdict="correct"), "inconsistent"),
    "error_without_types": (_reply(error_types=[]), "inconsistent"),
}


@pytest.mark.parametrize("text, error", FAILED.values(), ids=FAILED.keys())
def test_unusable_replies_give_a_reason_and_no_value(text: str | None, error: str) -> None:
    reply = parse_judgment(text)
    assert reply == JudgeReply(scores=None, overall=None, verdict=None, error=error)
    assert error in JUDGE_ERRORS


def test_judge_reply_is_complete_or_an_error() -> None:
    with pytest.raises(ValueError):
        JudgeReply(scores=None, overall=None, verdict=None)
    with pytest.raises(ValueError):
        JudgeReply(scores=dict(SCORES), overall=3, verdict="correct", error="no_json")


PREFERENCES = {
    "clean": (
        '{"reason": "A names the viewer\'s left.", "preferred": "A"}',
        "A",
        "A names the viewer's left.",
    ),
    "lower_case": ('{"reasoning": "B is right.", "preferred": "b"}', "B", "B is right."),
    "instruction_label": ('{"preferred": "Instruction B"}', "B", None),
    "tie": (
        '```json\n{"reason": "Both reverse the turn.", "preferred": "Tie"}\n```',
        "tie",
        "Both reverse the turn.",
    ),
    "think_and_prose": (
        '<think>A? {B?}</think>My choice: {"preference": "A", "reason": "exact"}',
        "A",
        "exact",
    ),
    "last_answer_wins": ('{"preferred": "A"} Wait, A reverses it: {"preferred": "B"}', "B", None),
}


@pytest.mark.parametrize("text, preferred, reason", PREFERENCES.values(), ids=PREFERENCES.keys())
def test_parses_preferences(text: str, preferred: str, reason: str | None) -> None:
    assert parse_preference(text) == PairwiseReply(preferred, reason=reason)


@pytest.mark.parametrize(
    "text, error",
    [
        (None, "no_json"),
        ("I prefer A.", "no_json"),
        ('{"reason": "hard to say"}', "missing_field"),
        ('{"preferred": "both"}', "bad_preference"),
        ('{"preferred": "C"}', "bad_preference"),
        ('{"preferred": null}', "bad_preference"),
    ],
)
def test_unusable_preferences_give_a_reason(text: str | None, error: str) -> None:
    assert parse_preference(text) == PairwiseReply(None, error=error)
    assert error in PAIRWISE_ERRORS
