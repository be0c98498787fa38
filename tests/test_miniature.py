"""Miniature-world models and demo pieces: the tokenizer, the from-scratch model folder, the filter and
'review' split, the report, and the CLI's refusals."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from editcaption.cli import app
from editcaption.demo.pipeline import (
    DemoConfig,
    draft_filter_refine,
    plot,
    write_markdown,
)
from editcaption.demo.records import (
    PERCEPTUAL_REPLY,
    SEVERITY_SCORES,
    preference_records,
    scorer_conversations,
    semantic_reply,
)
from editcaption.demo.world import WorldConfig, generate, mirrored
from editcaption.demo.world_models import (
    WorldModelConfig,
    build_tokenizer,
    build_world_qwen3vl,
    sincos_positions,
)
from editcaption.prompts.editscore import parse_score_reply, semantic_consistency_messages
from editcaption.prompts.instruction import instruction_messages
from editcaption.schema import Score
from editcaption.synthesis.editscore import aggregate_editscore


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_tokenizer_covers_the_world_and_round_trips(tokenizer):
    for pair in generate(300, WorldConfig(seed=9)):
        for p in (pair, mirrored(pair)):
            for text in [p.instruction, *(v.text for v in p.variants)]:
                ids = tokenizer(text)["input_ids"]
                assert tokenizer.unk_token_id not in ids, text
                assert tokenizer.decode(ids) == text
                assert len(ids) <= 16


def test_fixed_prompts_are_short_and_exact(tokenizer):
    for messages in (instruction_messages(), semantic_consistency_messages("Zoom the camera in.")):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text
        assert len(ids) < 40, "the prompt's fixed texts are single tokens"


def test_world_model_folder_generates_with_transformers(tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from editcaption.demo.world import images

    folder = build_world_qwen3vl(tmp_path / "m", WorldModelConfig(text_layers=1, vision_depth=1))
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    prompt = processor.apply_chat_template(instruction_messages(), add_generation_prompt=True, tokenize=False)
    pair = next(generate(1))
    enc = processor(text=[prompt], images=[list(images(pair))], return_tensors="pt")
    assert enc["image_grid_thw"].tolist() == [[1, 8, 8], [1, 8, 8]]
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 4 or out[0, -1] == model.generation_config.eos_token_id


def test_vision_position_table_starts_from_a_2d_code_that_tells_left_from_right(tmp_path):
    """The table is the only absolute position a patch token carries (docs/miniature.md); a random one
    near zero left every trained model blind to direction."""
    import torch
    from transformers import AutoModelForImageTextToText

    code = sincos_positions(8, 128)
    assert code.shape == (64, 128)
    assert len({tuple(row.tolist()) for row in code}) == 64, "every patch position has its own code"
    grid = code.reshape(8, 8, 128)
    mirror = grid.flip(1)  # column c <-> 7 - c
    x_dims, y_dims = slice(0, 64), slice(64, 128)
    assert torch.equal(grid[..., y_dims], mirror[..., y_dims])
    assert (grid[..., x_dims] - mirror[..., x_dims]).abs().amax(-1)[:, :4].min() > 0.1

    folder = build_world_qwen3vl(
        tmp_path / "m", WorldModelConfig(text_layers=1, vision_depth=1, position_scale=2.0)
    )
    table = AutoModelForImageTextToText.from_pretrained(folder).model.visual.pos_embed.weight
    assert torch.allclose(table, 2.0 * code, atol=1e-6)
    plain = build_world_qwen3vl(
        tmp_path / "p", WorldModelConfig(text_layers=1, vision_depth=1, position_scale=0)
    )
    assert AutoModelForImageTextToText.from_pretrained(plain).model.visual.pos_embed.weight.std() < 0.05


def _scored(pair, draft) -> Score | None:
    """The reply the miniature scorer is trained to give, run through the project's parser and
    aggregation (what `score_candidates` does with a real model's replies)."""
    if draft is None:
        return None
    severity = next((v.severity for v in pair.variants if v.text == draft), None)
    return aggregate_editscore(
        pair.pair_id, "0", "rule", [semantic_reply(pair.instruction, severity)], [PERCEPTUAL_REPLY], 25
    )


def test_filter_keeps_well_scored_unlinted_drafts_and_refines_the_routed_share():
    from editcaption.checks.viewpoint import lint_viewpoint

    pool = list(generate(60, WorldConfig(seed=2)))
    # Figure pairs get the frame-dropped draft (lint flags it); every third other pair a wrong-colour
    # or flipped draft (the scorer marks it down).
    drafts = []
    for i, p in enumerate(pool):
        wrong = {v.kind: v.text for v in p.variants}
        if p.kind == "raise_arm" and "frame_dropped" in wrong:
            drafts.append(wrong["frame_dropped"])
        elif i % 3 == 0 and ({"colour_replaced", "direction_flipped"} & set(wrong)):
            drafts.append(wrong.get("colour_replaced") or wrong["direction_flipped"])
        else:
            drafts.append(p.instruction)
    drafts[1] = None
    scores = [_scored(p, d) for p, d in zip(pool, drafts, strict=True)]
    cfg = DemoConfig(annotator="unused", scorer="unused", review_share=0.25, seed=1)
    records, refined, counts = draft_filter_refine(cfg, pool, drafts, scores)
    assert counts["refined"] == 15 == len(refined)
    assert (
        counts["refined"] + counts["kept"] + counts["filtered"]
        == len(pool)
        == len(records) + counts["filtered"]
    )
    by_id = {p.pair_id: p for p in pool}
    routed = {p.pair_id for p in refined}
    for r in records:
        if r["origin"] == "human":
            assert r["pair_id"] in routed and r["instruction"] == by_id[r["pair_id"]].instruction
        else:  # a kept draft: unlinted and scored at or above the thresholds
            assert (
                lint_viewpoint(r["instruction"]) == [] and r["instruction"] == by_id[r["pair_id"]].instruction
            )
    failing = [
        i
        for i, (d, s) in enumerate(zip(drafts, scores, strict=True))
        if d is None
        or lint_viewpoint(d)
        or s.overall < cfg.filter.min_overall
        or s.semantic_consistency < cfg.filter.min_semantic_consistency
    ]
    assert counts["filtered"] == sum(pool[i].pair_id not in routed for i in failing) > 0
    prefs = preference_records(refined)
    assert len(prefs) == sum(len(p.variants) for p in refined)


def test_scorer_conversations_teach_scores_by_severity():
    pairs = list(generate(200, WorldConfig(seed=4)))
    rows = scorer_conversations(pairs, seed=1)
    assert len(rows) == len(pairs)
    perceptual = [r for r in rows if len(r["images"]) == 1]
    assert 10 < len(perceptual) < 60  # ~15%
    by_id = {p.pair_id: p for p in pairs}
    seen = set()
    for r in rows:
        reply = parse_score_reply(r["messages"][-1]["content"][0]["text"], 25).scores
        if len(r["images"]) == 1:
            assert reply == (25, 25)
            continue
        pair = by_id[r["pair_id"]]
        user = r["messages"][1]["content"][2]["text"]
        candidate = user.split("<instruction>")[1].split("</instruction>")[0]
        severity = next((v.severity for v in pair.variants if v.text == candidate), None)
        assert candidate == pair.instruction or severity is not None
        assert reply == (SEVERITY_SCORES[severity], 25)
        seen.add(severity)
    assert seen == {None, "minor", "major", "critical"}
    assert (
        SEVERITY_SCORES[None]
        > SEVERITY_SCORES["minor"]
        > SEVERITY_SCORES["major"]
        > SEVERITY_SCORES["critical"]
    )


def test_report_table_and_plot(tmp_path):
    summary = {
        "n": 10,
        "exact_match": 0.5,
        "error_rates": {"orientation": 0.2, "viewpoint": 0.1, "attribute": 0.1, "other": 0.1},
        "judge_score": 3.1,
        "flip_consistency": None,
        "preference_errors": {"orientation": 0.45, "viewpoint": None, "attribute": 0.05, "other": 0.0},
    }
    report = {"models": {"annotator": summary, "sft": summary}, "counts": {}, "note": "n", "seconds": {}}
    write_markdown(report, tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "| exact match | 0.50 | 0.50 |" in text and "| flip consistency | – | – |" in text
    assert "| prefers an orientation flip | 0.45 | 0.45 |" in text
    assert "| prefers a viewpoint error | – | – |" in text
    plot(report, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_refuses_a_missing_model(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--annotator", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "no model at" in result.output and "--retrain" in result.output
    json.dumps(DemoConfig(annotator="x", scorer="y").model_dump())
