"""Miniature-world models and demo pieces: the tokenizer, the from-scratch model folder, the filter and
'review' split, the report, and the CLI's refusals."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import subprocess
import sys
from pathlib import Path

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
    VERDICTS,
    marked_edit,
    preference_records,
    scorer_contrast_conversations,
    scorer_conversations,
    seen_facts,
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
from editcaption.prompts.scoring import aggregate_editscore
from editcaption.schema import ERROR_TYPES, Score


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
            reply = semantic_reply(p.instruction, None, None, facts=seen_facts(p))  # the longest reasoning
            assert tokenizer.unk_token_id not in tokenizer(reply)["input_ids"], reply


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
    variant = next((v for v in pair.variants if v.text == draft), None)
    kind, severity = (variant.kind, variant.severity) if variant else (None, None)
    reply = semantic_reply(pair.instruction, kind, severity)
    return aggregate_editscore(pair.pair_id, "0", "rule", [reply], [PERCEPTUAL_REPLY], 25)


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


def test_scorer_conversations_teach_verdicts_and_scores_by_severity():
    pairs = list(generate(300, WorldConfig(seed=4)))
    rows = scorer_conversations(pairs, seed=1)
    assert len(rows) == len(pairs)
    perceptual = [r for r in rows if len(r["images"]) == 1]
    assert 20 < len(perceptual) < 70  # ~15%
    by_id = {p.pair_id: p for p in pairs}
    seen = set()
    for r in rows:
        text = r["messages"][-1]["content"][0]["text"]
        reply = parse_score_reply(text, 25).scores
        if len(r["images"]) == 1:
            assert reply == (25, 25)
            continue
        pair = by_id[r["pair_id"]]
        user = r["messages"][1]["content"][2]["text"]
        candidate = user.split("<instruction>")[1].split("</instruction>")[0]
        variant = next((v for v in pair.variants if v.text == candidate), None)
        if candidate == pair.instruction:
            kind, severity = None, None
        elif variant is not None:
            kind, severity = variant.kind, variant.severity
        else:  # another pair's instruction
            kind, severity = "unrelated", "critical"
        assert reply == (SEVERITY_SCORES[severity], 25)
        seen_edit = pair.instruction if kind is None else marked_edit(pair.instruction, candidate)
        assert json.loads(text)["reasoning"] == f"{seen_facts(pair)}{seen_edit} {VERDICTS[kind]}"
        seen.add(kind)
    assert {None, "unrelated", "direction_flipped", "colour_replaced"} <= seen
    assert (
        SEVERITY_SCORES[None]
        > SEVERITY_SCORES["minor"]
        > SEVERITY_SCORES["major"]
        > SEVERITY_SCORES["critical"]
    )


def test_marked_edit_names_the_one_word_a_candidate_changed():
    """The scorer's reasoning marks a one-word change where it stands; any other candidate leaves the
    edit as the images show it."""
    edit = "Move the red circle to the viewer's left."
    assert marked_edit(edit, "Move the red circle to the viewer's right.") == (
        "Move the red circle to the viewer's left, not right."
    )
    assert marked_edit("Change the red square to green.", "Change the blue square to green.") == (
        "Change the red, not blue square to green."
    )
    assert marked_edit(edit, edit) == edit  # nothing changed
    assert marked_edit(edit, "Move the red circle left.") == edit  # another length
    assert marked_edit(edit, "Move the blue circle to the viewer's right.") == edit  # two words


def test_seen_facts_are_what_the_images_show_and_decide_the_relation():
    """A rotation's two headings give its sense (clockwise is the next heading in HEADINGS); a raised arm
    is seen on the figure's own side when it faces away and on the other side when it faces the viewer.
    The mirror image reverses both facts, as it reverses the instruction. Other kinds say nothing."""
    from editcaption.demo.world import HEADINGS

    pairs = list(generate(400, WorldConfig(seed=8)))
    said = {"rotate": 0, "raise_arm": 0}
    for pair in pairs + [mirrored(p) for p in pairs]:
        facts = seen_facts(pair)
        if pair.kind == "rotate":
            before, after = re.fullmatch(
                r"The .+ turns from pointing (\w+) to pointing (\w+):", facts
            ).groups()
            step = (HEADINGS.index(after) - HEADINGS.index(before)) % 4
            assert pair.instruction.endswith(" clockwise.") == (step == 1)
        elif pair.kind == "raise_arm":
            facing, seen = re.fullmatch(
                r"The figure is facing (the viewer|away) with the arm on the viewer's (left|right) raised in the target image:",
                facts,
            ).groups()
            own = seen if facing == "away" else {"left": "right", "right": "left"}[seen]
            assert pair.instruction == f"Make the figure raise its own {own} arm."
        else:
            assert facts == ""
            continue
        said[pair.kind] += 1
    assert min(said.values()) > 20


def test_contrast_rows_ask_the_same_text_of_a_pair_and_its_mirror():
    """Rows only the images decide: a reversed direction is wrong for the pair and right for its
    mirror image, with the edit the images show said first; a reversed zoom is wrong for both. Each
    text of a flip is asked right as often as wrong, so its words carry no answer."""
    pairs = list(generate(400, WorldConfig(seed=6)))
    rows = scorer_contrast_conversations(pairs, seed=2, regular_share=0.25)
    assert len(rows) == len(pairs)
    by_id = {p.pair_id: p for p in pairs} | {mirrored(p).pair_id: mirrored(p) for p in pairs}
    outcomes, flips = set(), {True: 0, False: 0}  # rotations: right / wrong
    for r in rows:
        if len(r["images"]) == 1:
            continue
        shown = by_id[r["pair_id"]]
        user = r["messages"][1]["content"][2]["text"]
        candidate = user.split("<instruction>")[1].split("</instruction>")[0]
        reply = json.loads(r["messages"][-1]["content"][0]["text"])
        assert reply["reasoning"].startswith(
            seen_facts(shown) + marked_edit(shown.instruction, candidate) + " "
        )
        if candidate == shown.instruction:
            assert reply["score"] == [SEVERITY_SCORES[None], 25], r["pair_id"]
            outcomes.add(("right", shown.pair_id.endswith("-mirrored")))
        else:
            variant = next((v for v in shown.variants if v.text == candidate), None)
            if variant is None:  # another pair's instruction, from the regular share
                assert reply["score"] == [SEVERITY_SCORES["critical"], 25]
                continue
            assert reply["score"] == [SEVERITY_SCORES[variant.severity], 25], r["pair_id"]
            if shown.pair_id.endswith("-mirrored"):
                outcomes.add(("wrong", variant.kind))
        if shown.kind == "rotate":
            flips[reply["score"][0] == SEVERITY_SCORES[None]] += 1
    # the mirror makes a flipped text right and the canonical one wrong; a reversed zoom stays wrong
    assert {
        ("right", True),
        ("right", False),
        ("wrong", "zoom_reversed"),
        ("wrong", "direction_flipped"),
    } <= outcomes
    mirrored_rows = [r for r in rows if r["pair_id"].endswith("-mirrored")]
    assert 0.2 < len(mirrored_rows) / len(rows) < 0.5, len(mirrored_rows)
    assert abs(flips[True] - flips[False]) < 0.3 * sum(flips.values()), flips


def test_scorer_stage_rows_weight_the_stage_kinds_and_ask_them_as_contrast_rows():
    """Half the rows are fresh pairs of the stage's kinds, asked as contrast rows (only the images decide,
    each text of a flip right as often as wrong); the other half is the usual mix of every kind."""
    from editcaption.demo.retrain import RetrainConfig, ScorerStage, scorer_stage_rows

    stage = ScorerStage(steps=25, kinds=["rotate", "raise_arm"])
    cfg = RetrainConfig(batch_size=16, scorer_stages=[stage, stage.model_copy(update={"steps": 5})])
    rows = scorer_stage_rows(cfg, 0)
    assert len(rows) == 25 * 16 and len(scorer_stage_rows(cfg, 1)) == 5 * 16
    focus = [r for r in rows if r["pair_id"].startswith("focus")]
    assert len(focus) == 200 and {r["pair_id"].split("-")[2] for r in focus} == {"rotate", "raise_arm"}
    verdicts = [json.loads(r["messages"][-1]["content"][0]["text"])["score"][0] for r in focus]
    assert set(verdicts) == {SEVERITY_SCORES[None], SEVERITY_SCORES["critical"]}  # contrast rows only
    assert abs(verdicts.count(SEVERITY_SCORES[None]) - len(focus) / 2) < 0.15 * len(focus)
    assert any(r["pair_id"].startswith("mixed") and "-swap" in r["pair_id"] for r in rows)
    assert [r["pair_id"] for r in scorer_stage_rows(cfg, 1)] != [r["pair_id"] for r in rows[:80]]


def test_report_table_and_plot(tmp_path):
    summary = {
        "n": 10,
        "exact_match": 0.5,
        "error_rates": {"orientation": 0.2, "viewpoint": 0.1, "attribute": 0.1, "other": 0.1},
        "judge_score": 3.1,
        "flip_consistency": None,
        "preference_errors": {"orientation": 0.45, "viewpoint": None, "attribute": 0.05, "other": 0.0},
    }
    rates = {"orientation": 0.25, "viewpoint": 0.0, "attribute": 0.125, "other": 0.0}
    report = {
        "config": {"split": "test"},
        "models": {"annotator": summary, "sft": summary},
        "counts": {},
        "note": "n",
        "seconds": {},
        "stage1_value": {
            "annotator drafts": {"n": 8, "precision": 0.625, "error_rates": rates},
            "+ filter": {"n": 5, "precision": 1.0, "error_rates": dict.fromkeys(rates, 0.0)},
        },
        "filter": {
            "correct_kept": 1.0,
            "n_correct": 5,
            "precision": 1.0,
            "by_error_type": {t: {"n": 1, "removed": 1.0} for t in rates},
            "by_severity": {s: {"n": 1, "removed": 1.0} for s in ("minor", "major", "critical")},
        },
        "scorer_ranking": {
            "n_pairs": 10,
            "canonical_above": {"critical": 0.9},
            "mean_overall": {"critical": 3.5},
        },
    }
    write_markdown(report, tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "10 pairs of the test split" in text
    assert "| exact match | 0.50 | 0.50 |" in text and "| flip consistency | – | – |" in text
    assert "| annotator drafts | 8 | 0.62 | 0.25 | 0.00 | 0.12 | 0.00 |" in text
    assert "| + filter | 5 | 1.00 |" in text and "critical 0.90" in text
    assert "| prefers an orientation flip | 0.45 | 0.45 |" in text
    assert "| prefers a viewpoint error | – | – |" in text
    plot(report, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_refuses_a_missing_model(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--annotator", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "no model at" in result.output and "--retrain" in result.output
    json.dumps(DemoConfig(annotator="x", scorer="y").model_dump())


def test_retrain_of_the_scorer_alone_refuses_a_folder_without_the_world_model(tmp_path):
    """`--retrain --model scorer` starts from the world model that the output folder holds: without one
    it stops with the folder it looked in, before any training (and an unknown model name is refused)."""
    (tmp_path / "models" / "annotator").mkdir(parents=True)
    (tmp_path / "models" / "annotator" / "config.json").write_text("{}")
    args = ["demo", "--retrain", "--annotator", str(tmp_path / "models" / "annotator")]
    result = CliRunner().invoke(app, [*args, "--model", "scorer"])
    assert result.exit_code == 2, result.output
    assert "models: world is not trained in this run" in result.output
    assert str(tmp_path / "models") in result.output
    result = CliRunner().invoke(app, [*args, "--model", "critic"])
    assert result.exit_code == 2 and "critic" in result.output
    result = CliRunner().invoke(app, [*args, "--world-kind", "rotate", "--world-kind", "spin"])
    assert result.exit_code == 2 and "world_kinds" in result.output
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["annotator"]  # nothing trained or written


def test_stage1_value_and_filter_quality_grade_each_step_against_the_ground_truth():
    """Eight pairs: four right drafts, one flipped, one colour-replaced, one garbled, one missing. The filter
    keeps the right ones and one wrong one; two pairs are routed and refined."""
    from editcaption.demo.pipeline import filter_quality, stage1_value

    drawn = list(generate(80, WorldConfig(seed=11)))
    pans, recolours = ([p for p in drawn if p.kind == kind] for kind in ("camera_pan", "recolour"))
    pool = pans[:5] + recolours[:3]
    flip = next(v.text for v in pool[4].variants if v.kind == "direction_flipped")
    colour = next(v.text for v in pool[5].variants if v.error_type == "attribute")
    drafts = [p.instruction for p in pool[:4]] + [flip, colour, "Zoom the blue.", None]
    passed = [True, True, True, True, True, False, False, False]
    routed = {pool[4].pair_id, pool[6].pair_id}
    value = stage1_value(pool, drafts, passed, routed)
    assert value["annotator drafts"]["n"] == 8 and value["annotator drafts"]["precision"] == 0.5
    assert value["annotator drafts"]["error_rates"]["orientation"] == 1 / 8
    assert value["+ filter"] == {
        "n": 5,
        "precision": 0.8,
        "error_rates": {"orientation": 0.2, "viewpoint": 0.0, "attribute": 0.0, "other": 0.0},
    }
    final = value["+ routing and refinement"]  # the flipped draft and the garbled one refined
    assert final["n"] == 6 and final["precision"] == 1.0
    quality = filter_quality(pool, drafts, passed)
    assert quality["correct_kept"] == 1.0 and quality["n_correct"] == 4
    assert quality["precision"] == 1.0  # all three removed drafts were wrong
    assert quality["by_error_type"]["orientation"] == {"n": 1, "removed": 0.0}
    assert quality["by_error_type"]["attribute"] == {"n": 1, "removed": 1.0}
    assert quality["by_error_type"]["other"] == {"n": 2, "removed": 1.0}  # garbled and missing
    assert quality["by_severity"]["critical"] == {"n": 3, "removed": 2 / 3}


def test_injected_mistakes_are_systematic_so_greedy_decoding_repeats_them():
    """Every pair a rule covers gets the mistake (rate 1), the others keep the right label: what the
    pixels show decides, which a captioner can learn and repeat under greedy decoding."""
    from editcaption.demo.records import NoiseConfig, noisy_instruction

    rng, noise = random.Random(0), NoiseConfig()
    pairs = list(generate(600, WorldConfig(seed=12)))
    for pair in pairs:
        label, error = noisy_instruction(pair, noise, rng)
        facing = pair.source["figure"]["facing"]
        if pair.kind == "camera_pan":
            assert (error == "orientation") == (facing == "away"), pair
        if pair.kind in ("add", "remove", "swap", "rotate"):
            assert error is None and label == pair.instruction
    errors = [noisy_instruction(p, noise, rng)[1] for p in pairs]
    assert 0.25 < sum(e is not None for e in errors) / len(pairs) < 0.45


def test_the_study_refuses_a_work_folder_with_an_earlier_studys_runs(tmp_path):
    """Rerun into the same folder, every seed's training run would refuse its existing run folder after
    Stage 1 had run: the study stops at once instead, naming the folder."""
    (tmp_path / "seed-0" / "train").mkdir(parents=True)
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "miniature.py"
    done = subprocess.run(
        [sys.executable, str(script), "--work", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and f"--work {tmp_path} holds an earlier study's runs" in done.stderr
    assert not (tmp_path / "stage1").exists()


def test_the_study_reuses_models_only_where_an_earlier_run_left_every_one(tmp_path):
    """`--reuse-models` evaluates an earlier run's models again; with one missing it stops before Stage 1
    and names the folder, rather than evaluating a mix of fresh and missing models."""
    (tmp_path / "seed-0" / "models" / "sft").mkdir(parents=True)
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "miniature.py"
    done = subprocess.run(
        [sys.executable, str(script), "--work", str(tmp_path), "--seeds", "0", "1", "--reuse-models"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    missing = tmp_path / "seed-0" / "models" / "sft-hae-dpo"
    assert (
        done.returncode == 2 and f"--reuse-models: no trained model at {missing} (5 missing)" in done.stderr
    )
    assert not (tmp_path / "stage1").exists()


def _study_module():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "miniature.py"
    spec = importlib.util.spec_from_file_location("miniature_study", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


def test_the_study_splits_orientation_errors_by_edit_kind():
    """Per model and kind, the share of that kind's pairs told reversed, averaged over seeds: what tells
    the annotator's injected flips (pans) from misreadings (rotations, raised arms)."""
    from editcaption.demo.world import split_pairs

    pairs = split_pairs("test", 20)  # kinds round-robin: two of each
    pans = [i for i, p in enumerate(pairs) if p.kind == "camera_pan"]
    rotations = [i for i, p in enumerate(pairs) if p.kind == "rotate"]

    def run(reversed_at: list[int]) -> dict:
        return {"grade": ["orientation" if i in reversed_at else "exact" for i in range(len(pairs))]}

    runs = {"annotator": [run(pans), run(pans)], "sft": [run(rotations[:1]), run([])]}
    by_kind = _study_module().orientation_by_kind(runs, pairs)
    assert by_kind["annotator"]["camera_pan"] == 1.0 and by_kind["annotator"]["rotate"] == 0.0
    assert by_kind["sft"]["rotate"] == 0.25 and by_kind["sft"]["camera_pan"] == 0.0
    assert set(by_kind["sft"]) == {p.kind for p in pairs}


def test_the_studys_per_pair_grade_letters_tell_every_grade_apart():
    """study.json keeps a letter per pair and grade: orientation and other once shared their first letter."""
    study = _study_module()
    assert set(study.GRADE_LETTERS) == {"exact", *ERROR_TYPES}
    assert len(set(study.GRADE_LETTERS.values())) == len(study.GRADE_LETTERS)


def test_world_kinds_weight_the_world_stages_instructions_and_described_scenes(tmp_path):
    """`RetrainConfig.world_kinds` repeats a kind to weight it: one round of the 14-entry list (every
    kind once, rotations and raised arms twice more) gives three of each of those two among 14
    instructions, and the scenes it describes are drawn from the same kinds."""
    import pyarrow.parquet as pq

    from editcaption.demo.retrain import RetrainConfig, _world_data
    from editcaption.demo.world import EDIT_KINDS

    kinds = [*EDIT_KINDS, "rotate", "raise_arm", "rotate", "raise_arm"]
    cfg = RetrainConfig(batch_size=14, describe_share=0.5, world_kinds=kinds)
    rows = pq.read_table(_world_data(cfg, tmp_path, "w", 2, 221, kinds, kinds)).to_pylist()
    answers = [row["messages"][-1]["content"][0]["text"] for row in rows]
    descriptions = [a for a in answers if a.startswith("A figure facing")]
    instructions = [a for a in answers if a not in descriptions]
    assert len(descriptions) == 14 and len(instructions) == 14
    assert sum(a.startswith("Rotate the") for a in instructions) == 3
    assert sum("raise its own" in a for a in instructions) == 3
    assert sum(a.startswith("Pan the camera") for a in instructions) == 1
    # Described scenes come from `describe_kinds`: a rotation's scenes always hold a triangle.
    rows = pq.read_table(_world_data(cfg, tmp_path, "r", 2, 221, kinds, ["rotate"])).to_pylist()
    described = [r["messages"][-1]["content"][0]["text"] for r in rows]
    described = [d for d in described if d.startswith("A figure facing")]
    assert len(described) == 14 and all("triangle pointing" in d for d in described)
    with pytest.raises(ValueError, match="world_kinds"):
        RetrainConfig(world_kinds=["rotate", "spin"])


def test_image_pixels_size_the_retrains_jobs_and_their_saved_processors(tmp_path):
    """`RetrainConfig.image_pixels` is every job's pixel budget (min = max): the 128×128 renders as drawn
    by default, upscaled to 256×256 (64 vision tokens instead of 16) when asked; the SFT job saves the
    processor it trained with, so the model folder reads images at the same size."""
    from PIL import Image

    from editcaption.demo.retrain import RetrainConfig, _job
    from editcaption.training.model import load_processor

    model = "editcaption/data/miniature/world"
    for pixels, side in ((128 * 128, 128), (256 * 256, 256)):
        job = _job(RetrainConfig(image_pixels=pixels), tmp_path, "w", model, tmp_path / "d.parquet", 10, 5e-4)
        assert job.min_pixels == job.max_pixels == pixels
        grid = load_processor(job).image_processor(images=[Image.new("RGB", (128, 128))])["image_grid_thw"]
        assert grid.tolist() == [[1, side // 16, side // 16]]
    with pytest.raises(ValueError, match="image_pixels"):
        RetrainConfig(image_pixels=16)
