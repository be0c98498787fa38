"""EditScore prompts, reply parser and aggregation: pure functions, no model and no Ray."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from editcaption.prompts.editscore import (
    EDITSCORE_PROMPT_VERSION,
    PARSE_ERRORS,
    PQ_FIELDS,
    SC_FIELDS,
    ScoreReply,
    parse_score_reply,
    perceptual_quality_messages,
    semantic_consistency_messages,
)
from editcaption.prompts.scoring import EditScoreConfig, aggregate_editscore
from editcaption.schema import Candidate


def _image_parts(messages: list[dict]) -> int:
    return sum(p.get("type") == "image" for m in messages for p in m["content"])


def _text(messages: list[dict]) -> str:
    return "\n".join(p["text"] for m in messages for p in m["content"] if p.get("type") == "text")


def _reply(a: object, b: object) -> str:
    return f'{{"reasoning": "ok", "score": [{a}, {b}]}}'


def test_prompt_version() -> None:
    assert EDITSCORE_PROMPT_VERSION == "editscore-v1"


def test_semantic_consistency_prompt_has_two_images_instruction_range_and_format() -> None:
    messages = semantic_consistency_messages("Turn the red car blue.", score_range=10)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert _image_parts(messages) == 2
    user = messages[1]["content"]
    assert [p["type"] for p in user[:2]] == ["image", "image"]
    text = _text(messages)
    assert "Turn the red car blue." in text
    assert "0 to 10" in text and "25" not in text
    assert '"score": [a, b]' in text and '"reasoning"' in text
    assert "edit_success" in text and "over_editing" in text


def test_perceptual_quality_prompt_has_one_image_range_and_format() -> None:
    messages = perceptual_quality_messages()
    assert [m["role"] for m in messages] == ["system", "user"]
    assert _image_parts(messages) == 1
    text = _text(messages)
    assert "0 to 25" in text
    assert '"score": [a, b]' in text and '"reasoning"' in text
    assert "naturalness" in text and "artifacts" in text


def test_prompts_reject_bad_arguments() -> None:
    with pytest.raises(ValueError):
        semantic_consistency_messages("   ")
    with pytest.raises(ValueError):
        perceptual_quality_messages(score_range=0)


THINK = "<think>The car is blue now, but the wheels changed too. {not json}</think>\n"

PARSED = {
    "clean": ('{"reasoning": "The car is blue; nothing else changed.", "score": [23, 21]}', (23, 21)),
    "fenced": ('```json\n{\n  "reasoning": "Done well.",\n  "score": [20, 18]\n}\n```', (20, 18)),
    "think_then_json": (THINK + '{"reasoning": "Mostly right.", "score": [19, 12]}', (19, 12)),
    "dangling_think_close": ('weighing it up...</think>{"score": [10, 11]}', (10, 11)),
    "prose_around": (
        'Here is my evaluation:\n{"reasoning": "Edit applied.", "score": [22, 24]}\nHope this helps!',
        (22, 24),
    ),
    "trailing_comma": ('{"reasoning": "Fine.", "score": [17, 16,],}', (17, 16)),
    "single_quotes": ("{'reasoning': \"The dog's collar is red.\", 'score': [25, 20]}", (25, 20)),
    "named_sc_top_level": ('{"reasoning": "ok", "edit_success": 20, "over_editing": 18}', (20, 18)),
    "named_pq_in_score": ('{"reasoning": "ok", "score": {"naturalness": 21, "artifacts": 9}}', (21, 9)),
    "named_spaced_keys": ('{"Edit Success": 5, "Over-Editing": 7}', (5, 7)),
    "numbers_as_strings": ('{"reasoning": "ok", "score": ["20", " 18.5 "]}', (20, 18.5)),
    "bounds_inclusive": (_reply(0, 25), (0, 25)),
    "last_answer_wins": ('Draft: {"score": [3, 4]}\nCorrected: {"score": [13, 14]}', (13, 14)),
    "unparsable_braces_first": ("Here's {my take}: {'score': [5, 6],}", (5, 6)),
    "braces_inside_strings": ('{"reasoning": "kept the {logo} and } brace", "score": [8, 9]}', (8, 9)),
}


@pytest.mark.parametrize("text, expected", PARSED.values(), ids=PARSED.keys())
def test_parses_realistic_replies(text: str, expected: tuple[float, float]) -> None:
    reply = parse_score_reply(text, 25)
    assert reply == ScoreReply(scores=expected, error=None)
    assert all(isinstance(x, float) for x in reply.scores)


FAILED = {
    "none": (None, "no_json"),
    "empty": ("", "no_json"),
    "whitespace": ("  \n ", "no_json"),
    "prose_only": ("I'd give it 20 out of 25 for success and 18 for preservation.", "no_json"),
    "truncated": (
        '{"reasoning": "The edit changes the sky and',
        "missing_field",
    ),  # json-repair closes it: no score
    "degenerate_repetition": ("{" * 20000, "no_json"),
    "think_only": ('<think>maybe {"score": [20, 20]} is right', "truncated"),  # cut inside its reasoning
    "missing_score": ('{"reasoning": "Looks good."}', "missing_field"),
    "one_named_field": ('{"edit_success": 20}', "missing_field"),
    "three_scores": (_reply(20, "18, 15"), "wrong_count"),
    "one_score": ('{"score": 20}', "wrong_count"),
    "above_range": (_reply(26, 20), "out_of_range"),
    "negative": (_reply(20, -1), "out_of_range"),
    "ten_point_scale_by_mistake": ('{"score": [80, 90]}', "out_of_range"),
    "word": ('{"score": ["twenty", 18]}', "not_a_number"),
    "null": ('{"score": [20, null]}', "not_a_number"),
    "bool": ('{"score": [true, 18]}', "not_a_number"),
    "fraction_string": ('{"score": ["20/25", 18]}', "not_a_number"),
    "nan": ('{"score": [NaN, 18]}', "not_a_number"),
}


@pytest.mark.parametrize("text, error", FAILED.values(), ids=FAILED.keys())
def test_unparsable_replies_give_a_reason_and_no_number(text: str | None, error: str) -> None:
    assert parse_score_reply(text, 25) == ScoreReply(scores=None, error=error)
    assert error in PARSE_ERRORS


def test_field_names_pin_the_asking_prompt() -> None:
    pq_keys = '{"naturalness": 20, "artifacts": 18}'
    assert parse_score_reply(pq_keys, 25, PQ_FIELDS).scores == (20, 18)
    assert parse_score_reply(pq_keys, 25, SC_FIELDS).error == "missing_field"


def test_range_is_the_callers() -> None:
    assert parse_score_reply(_reply(9, 10), 10).scores == (9, 10)
    assert parse_score_reply(_reply(9, 11), 10).error == "out_of_range"


def test_score_reply_holds_exactly_one_of_scores_and_error() -> None:
    with pytest.raises(ValueError):
        ScoreReply(scores=None, error=None)
    with pytest.raises(ValueError):
        ScoreReply(scores=(1.0, 2.0), error="no_json")


def test_aggregate_single_pass_math() -> None:
    score = aggregate_editscore("p", "p:0", "editscore", [_reply(20, 25)], [_reply(25, 15)], 25)
    assert score.semantic_consistency == pytest.approx(8.0)
    assert score.perceptual_quality == pytest.approx(6.0)
    assert score.overall == pytest.approx(math.sqrt(48))
    assert (score.num_pass, score.num_parsed) == (1, 1)
    assert score.raw_replies == [_reply(20, 25), _reply(25, 15)]
    assert (score.pair_id, score.candidate_id, score.scorer) == ("p", "p:0", "editscore")


def test_aggregate_averages_passes_and_overall_per_pass() -> None:
    sc = [_reply(25, 25), _reply(10, 20)]  # SC 10, 4
    pq = [_reply(10, 15), _reply(25, 25)]  # PQ 4, 10
    score = aggregate_editscore("p", "p:0", "s", sc, pq, 25)
    assert score.semantic_consistency == pytest.approx(7.0)
    assert score.perceptual_quality == pytest.approx(7.0)
    assert score.overall == pytest.approx((math.sqrt(40) + math.sqrt(40)) / 2)
    assert score.overall < math.sqrt(7.0 * 7.0)
    assert (score.num_pass, score.num_parsed) == (2, 2)


def test_aggregate_uses_the_prompts_field_names() -> None:
    sc = ['{"edit_success": 20, "over_editing": 25}']
    pq = ['{"score": {"naturalness": 25, "artifacts": 15}}']
    assert aggregate_editscore("p", "c", "s", sc, pq, 25).overall == pytest.approx(math.sqrt(48))
    swapped = aggregate_editscore("p", "c", "s", pq, sc, 25)
    assert swapped.num_parsed == 0


def test_aggregate_excludes_a_pass_with_one_unparsed_reply() -> None:
    sc = [_reply(20, 25), _reply(5, 5), None]
    pq = [_reply(25, 15), "I'd say 20 out of 25", _reply(10, 10)]
    score = aggregate_editscore("p", "p:0", "s", sc, pq, 25)
    assert (score.num_pass, score.num_parsed) == (3, 1)
    assert score.semantic_consistency == pytest.approx(8.0)
    assert score.perceptual_quality == pytest.approx(6.0)
    assert score.overall == pytest.approx(math.sqrt(48))
    assert score.raw_replies == [sc[0], pq[0], sc[1], pq[1], "", pq[2]]


def test_aggregate_all_unparsed_gives_no_scores() -> None:
    score = aggregate_editscore("p", "p:0", "s", [_reply(30, 1), ""], [_reply(5, 5), None], 25)
    assert score.semantic_consistency is None
    assert score.perceptual_quality is None
    assert score.overall is None
    assert (score.num_pass, score.num_parsed) == (2, 0)
    assert score.raw_replies == [_reply(30, 1), _reply(5, 5), "", ""]


def test_aggregate_rejects_mismatched_passes() -> None:
    with pytest.raises(ValueError):
        aggregate_editscore("p", "c", "s", [_reply(1, 1)], [], 25)


def test_config_defaults_and_validation() -> None:
    config = EditScoreConfig()  # EditScore's own protocol (editscore 0.2: Qwen3VL/Qwen25VL inference)
    assert config.prompt == "upstream" and config.resize_to_source
    assert (config.score_range, config.num_pass) == (25, 1)
    assert (config.temperature, config.top_p, config.top_k, config.max_tokens) == (0.7, 0.9, 20, 512)
    assert config.sampling(2).model_dump() == {
        "max_tokens": 512, "temperature": 0.7, "top_p": 0.9, "top_k": 20, "seed": 2, "logprobs": False
    }  # fmt: skip
    assert all(f.description for f in EditScoreConfig.model_fields.values())
    with pytest.raises(ValidationError):
        EditScoreConfig(num_pass=0)
    with pytest.raises(ValidationError):
        EditScoreConfig(passes=2)


# ---------------------------------------------------------------- EditScore's own prompts (editscore 0.2)


def _vie_prompts() -> dict[str, str]:
    """The package's prompt file, read here independently as plain text assignments."""
    import ast
    import importlib.util
    from pathlib import Path

    folder = Path(next(iter(importlib.util.find_spec("editscore").submodule_search_locations)))
    tree = ast.parse((folder / "vie_prompts.py").read_text())
    return {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)}


def test_upstream_prompts_are_the_package_texts_composed_as_its_class_does() -> None:
    import sys

    from editcaption.prompts.editscore import editscore_messages

    texts = _vie_prompts()
    sc = editscore_messages("sc", "upstream", 25, "Turn the red car blue.")
    pq = editscore_messages("pq", "upstream", 25)
    assert [m["role"] for m in sc] == [m["role"] for m in pq] == ["user"]  # no system message
    assert [p["type"] for p in sc[0]["content"]] == ["image", "image", "text"]
    assert [p["type"] for p in pq[0]["content"]] == ["image", "text"]
    sc_text, pq_text = _text(sc), _text(pq)
    assert sc_text.startswith(texts["_context_no_delimit_reasoning_first"])
    assert texts["_prompts_0shot_two_image_edit_rule"] in sc_text
    assert sc_text.endswith("Editing instruction: Turn the red car blue.\n")
    assert "From scale 0 to 25" in sc_text and " 10" not in sc_text  # EditScore puts the range for every 10
    assert pq_text == "\n".join(
        [texts["_context_no_delimit_reasoning_first"], texts["_prompts_0shot_rule_PQ"].replace("10", "25")]
    )
    assert "editscore" not in sys.modules and "editscore" not in sys.path  # the package __init__ never ran


def test_upstream_qwen25vl_layout_labels_each_image() -> None:
    from editcaption.engines.families import family_of
    from editcaption.prompts.editscore import editscore_messages

    label = family_of("EditScore/EditScore-7B").image_label
    parts = editscore_messages("sc", "upstream", 25, "Make it red.", image_label=label)[0]["content"]
    assert [p.get("text") if p["type"] == "text" else "IMG" for p in parts[:4]] == [
        "<img1>: ",
        "IMG",
        "<img2>: ",
        "IMG",
    ]
    assert family_of("/models/editscore-qwen3-vl-8b").image_label is None


def test_our_prompts_stay_available_by_name() -> None:
    from editcaption.prompts.editscore import editscore_messages

    assert editscore_messages("sc", "editcaption", 25, "Make it red.") == semantic_consistency_messages(
        "Make it red."
    )
    assert editscore_messages("pq", "editcaption", 25) == perceptual_quality_messages()
    with pytest.raises(ValueError, match="needs the instruction"):
        editscore_messages("sc", "upstream", 25)


def test_missing_package_names_the_install(monkeypatch) -> None:
    import importlib.util

    from editcaption.prompts import editscore as module

    module.upstream_prompt_texts.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    try:
        with pytest.raises(ModuleNotFoundError, match="pip install --no-deps editscore==0.2"):
            module.upstream_perceptual_quality_text()
    finally:
        monkeypatch.undo()
        module.upstream_prompt_texts.cache_clear()


def _png(size: tuple[int, int], colour: str) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_edited_image_is_resized_to_the_source_size_before_scoring() -> None:
    import io

    from PIL import Image

    from editcaption.prompts.scoring import edited_for_scoring, score_expand

    source, edited = _png((64, 48), "red"), _png((128, 100), "blue")
    assert Image.open(io.BytesIO(edited_for_scoring(source, edited))).size == (64, 48)
    same = _png((64, 48), "blue")
    assert edited_for_scoring(source, same) is same  # already equal: sent as is
    assert edited_for_scoring(source, b"not an image") == b"not an image"  # the engine reports it
    row = {
        "pair_id": "p",
        "source": source,
        "target": edited,
        "quarantine_reason": None,
        "candidates": [
            Candidate(
                pair_id="p",
                candidate_id="p:0",
                instruction="Make it blue.",
                raw_text="Make it blue.",
                model="annotator",
                prompt_version="v",
                parsed=True,
            ).to_row()
        ],
    }
    sc, pq = score_expand(row, EditScoreConfig())
    assert all(Image.open(io.BytesIO(r.images[-1])).size == (64, 48) for r in (sc, pq))
    assert (sc.sampling.temperature, sc.sampling.top_p, sc.sampling.top_k, sc.sampling.max_tokens) == (
        0.7,
        0.9,
        20,
        512,
    )
    assert "Editing instruction: Make it blue." in _text(sc.messages)
    as_is = score_expand(row, EditScoreConfig(resize_to_source=False))
    assert as_is[0].images[-1] == edited


def test_best_score_takes_the_highest_overall_then_semantic_consistency() -> None:
    from editcaption.prompts.scoring import best_score

    rows = [
        {"candidate_id": "a", "overall": 7.0, "semantic_consistency": 6.0},
        {"candidate_id": "b", "overall": 7.0, "semantic_consistency": 8.0},
        {"candidate_id": "c", "overall": None, "semantic_consistency": None},
        {"candidate_id": "d", "overall": 6.9, "semantic_consistency": 10.0},
    ]
    assert best_score(rows)["candidate_id"] == "b"
    assert best_score(rows[:1] + rows[2:])["candidate_id"] == "a"
    assert best_score([rows[2]]) is None and best_score([]) is None


def test_equal_scores_go_to_the_instruction_more_candidates_wrote() -> None:
    """A scorer that cannot see a rotation's sense scores both readings alike: the one the annotator
    sampled more often wins the tie, not the first in file order. A higher score still beats votes."""
    from editcaption.prompts.scoring import best_score, instruction_votes

    candidates = [
        {"candidate_id": "a", "instruction": "Rotate the triangle clockwise."},
        {"candidate_id": "b", "instruction": "rotate the  triangle counter-clockwise"},
        {"candidate_id": "c", "instruction": "Rotate the triangle counter-clockwise."},
        {"candidate_id": "d", "instruction": None},
    ]
    votes = instruction_votes(candidates)
    assert votes == {"a": 1, "b": 2, "c": 2, "d": 0}
    tied = [{"candidate_id": cid, "overall": 10.0, "semantic_consistency": 10.0} for cid in "abc"]
    assert best_score(tied)["candidate_id"] == "a"
    assert best_score(tied, votes)["candidate_id"] in {"b", "c"}
    ahead = [{**tied[0], "overall": 10.0}, *({**t, "overall": 8.5} for t in tied[1:])]
    assert best_score(ahead, votes)["candidate_id"] == "a"
