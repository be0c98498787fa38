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
from editcaption.demo.records import preference_records
from editcaption.demo.world import WorldConfig, generate, mirrored
from editcaption.demo.world_models import WorldModelConfig, build_tokenizer, build_world_qwen3vl
from editcaption.prompts.editscore import semantic_consistency_messages
from editcaption.prompts.instruction import instruction_messages


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


def test_filter_drops_linted_drafts_and_refines_the_routed_share():
    from editcaption.checks.viewpoint import lint_viewpoint

    pool = list(generate(60, WorldConfig(seed=2)))
    # Every other figure pair gets its frame-dropped draft ("raise the left arm"), which the lint flags.
    drafts = [
        next(v.text for v in p.variants if v.kind == "frame_dropped")
        if p.kind == "raise_arm" and i % 2
        else p.instruction
        for i, p in enumerate(pool)
    ]
    drafts[0] = None
    cfg = DemoConfig(annotator="unused", review_share=0.25, seed=1)
    records, refined, counts = draft_filter_refine(cfg, pool, drafts)
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
        else:
            assert lint_viewpoint(r["instruction"]) == []
    flagged = [i for i, d in enumerate(drafts) if d is None or lint_viewpoint(d)]
    assert counts["filtered"] == sum(pool[i].pair_id not in routed for i in flagged) > 0
    prefs = preference_records(refined)
    assert len(prefs) == sum(len(p.variants) for p in refined)


def test_report_table_and_plot(tmp_path):
    summary = {
        "n": 10,
        "exact_match": 0.5,
        "error_rates": {"orientation": 0.2, "viewpoint": 0.1, "attribute": 0.1, "other": 0.1},
        "judge_score": 3.1,
        "flip_consistency": None,
    }
    report = {"models": {"annotator": summary, "sft": summary}, "counts": {}, "note": "n", "seconds": {}}
    write_markdown(report, tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "| exact match | 0.50 | 0.50 |" in text and "| flip consistency | – | – |" in text
    plot(report, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_refuses_a_missing_annotator(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--annotator", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "no model at" in result.output and "--retrain" in result.output
    json.dumps(DemoConfig(annotator="x").model_dump())
