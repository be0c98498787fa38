"""Training data: inputs read in every format, the instruction prompt, mirrored augmentation, hard
negatives, and a loss on the instruction only."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageChops, ImageOps

from editcaption.io.exports import write_trl_parquet
from editcaption.prompts.instruction import instruction_messages
from editcaption.schema import ERROR_TYPES, SEVERITIES, PreferencePair, SFTRecord
from editcaption.training.data import (
    DPO_FEATURES,
    SFT_FEATURES,
    TrainingDataError,
    add_hard_negatives,
    augment_mirrored,
    load_rows,
    preference_rows,
    read_conversation_rows,
    read_preference_pairs,
    read_sft_records,
    sft_rows,
    write_rows,
)

PAIRS = ("000-move", "001-move", "006-recolour", "026-mirror")


def records(sample_pairs_dir: Path, names=PAIRS) -> list[dict]:
    rows = []
    for name in names:
        folder = sample_pairs_dir / name
        meta = json.loads((folder / "meta.json").read_text())
        rows.append(
            SFTRecord(
                pair_id=name,
                source=(folder / "source.png").read_bytes(),
                target=(folder / "target.png").read_bytes(),
                instruction=meta["instruction"],
                origin="synthesis",
            ).to_row()
        )
    return rows


def preference_pairs(sample_pairs_dir: Path, names=PAIRS[:2]) -> list[dict]:
    """Human-style pairs: the reference instruction beats its direction-inverted twin."""
    rows = []
    for r in records(sample_pairs_dir, names):
        meta = json.loads((sample_pairs_dir / r["pair_id"] / "meta.json").read_text())
        rows.append(
            PreferencePair(
                pair_id=r["pair_id"],
                source=r["source"],
                target=r["target"],
                chosen=r["instruction"],
                rejected=meta["inverse_instruction"],
                error_type="orientation",
                severity="critical",
                origin="human",
                annotators=["a1"],
            ).to_row()
        )
    return rows


def write_parquet(rows: list[dict], schema: pa.Schema, path: Path) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def test_sft_inputs_in_every_format_give_the_same_records(tmp_path, sample_pairs_dir):
    expected = records(sample_pairs_dir)
    parquet = write_parquet(expected, SFTRecord.arrow_schema(), tmp_path / "sft.parquet")
    run = tmp_path / "synthesis-run"
    write_trl_parquet(expected, str(run / "exports" / "trl" / "train.parquet"))
    for got in (read_sft_records(str(parquet)), read_sft_records(str(run))):
        assert [(r["pair_id"], r["instruction"]) for r in got] == [
            (r["pair_id"], r["instruction"]) for r in expected
        ]
    folder = read_sft_records(str(sample_pairs_dir))
    assert len(folder) == 30 and {r["origin"] for r in folder} == {"benchmark"}


def test_missing_or_wrong_data_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingDataError, match="input: no SFT records at .*nowhere"):
        read_sft_records(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingDataError, match="without sft.parquet or exports/trl/train.parquet"):
        read_sft_records(str(tmp_path / "empty"))
    with pytest.raises(TrainingDataError, match="no Parquet files of preference pairs"):
        read_preference_pairs(str(tmp_path / "empty"))
    other = write_parquet([{"a": 1}], pa.schema([("a", pa.int64())]), tmp_path / "other.parquet")
    with pytest.raises(TrainingDataError, match="SFT needs SFTRecord columns"):
        read_sft_records(str(other))
    with pytest.raises(TrainingDataError, match=r"lacks PreferencePair column\(s\)"):
        read_preference_pairs(str(other))
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(TrainingDataError, match="not readable Parquet"):
        read_sft_records(str(tmp_path / "text.parquet"))
    with pytest.raises(TrainingDataError, match="empty"):
        write_rows(iter(()), SFT_FEATURES, str(tmp_path / "rows.parquet"))


def test_mirrored_augmentation_adds_the_mirror_of_each_direction_record(sample_pairs_dir):
    given = records(sample_pairs_dir)
    rows, added = augment_mirrored(given)
    mirrored = rows[len(given) :]
    # The two moves and the mirror state the viewer's left/right; the recolour states no direction.
    assert added == len(mirrored) == 3
    assert [m["pair_id"] for m in mirrored] == ["000-move:mirror", "001-move:mirror", "026-mirror:mirror"]
    original = given[0]
    copy = mirrored[0]
    assert copy["origin"] == "augmentation" and copy["overall"] is None
    assert "viewer's left" in original["instruction"] and "viewer's right" in copy["instruction"]
    assert copy["instruction"].replace("right", "left") == original["instruction"]
    for role in ("source", "target"):
        flipped = ImageOps.mirror(Image.open(io.BytesIO(original[role])).convert("RGB"))
        assert not ImageChops.difference(flipped, Image.open(io.BytesIO(copy[role])).convert("RGB")).getbbox()
    assert augment_mirrored([r for r in given if r["pair_id"] == "006-recolour"]) == (given[2:3], 0)


def test_hard_negatives_are_mixed_in_with_labels(tmp_path, sample_pairs_dir):
    human = preference_pairs(sample_pairs_dir)
    path = write_parquet(human, PreferencePair.arrow_schema(), tmp_path / "prefs.parquet")
    pairs = read_preference_pairs(str(tmp_path))
    assert len(pairs) == 2 and read_preference_pairs(str(path)) == pairs
    mixed, added = add_hard_negatives(pairs, ratio=1.5, seed=0)
    assert added == 3 and len(mixed) == 5
    negatives = [p for p in mixed if p["origin"] == "hard_negative"]
    assert len(negatives) == 3
    for n in negatives:
        assert n["error_type"] in ERROR_TYPES and n["severity"] in SEVERITIES
        assert n["annotators"][0].startswith("rule:") and n["rejected"] != n["chosen"]
    assert add_hard_negatives(pairs, ratio=1.5, seed=0)[0] == mixed  # same seed, same draw
    assert add_hard_negatives(pairs, ratio=0, seed=0) == (pairs, 0)
    # A folder of reference pairs gives every rule-written negative of each reference.
    from_folder = read_preference_pairs(str(sample_pairs_dir))
    assert len(from_folder) > 30 and {p["origin"] for p in from_folder} == {"hard_negative"}


def test_rows_carry_the_instruction_prompt_and_decode_to_images(tmp_path, sample_pairs_dir):
    given = records(sample_pairs_dir)
    uri = str(tmp_path / "sft.parquet")
    assert write_rows(sft_rows(given), SFT_FEATURES, uri) == 4
    ds = load_rows(uri, str(tmp_path / "cache"))
    row = ds[0]
    assert [m["role"] for m in row["prompt"]] == [m["role"] for m in instruction_messages()]
    assert row["prompt"][1]["content"][-1]["text"] == instruction_messages()[1]["content"][-1]["text"]
    assert row["completion"][0]["content"][0]["text"] == given[0]["instruction"]
    assert [img.size for img in row["images"]] == [Image.open(io.BytesIO(given[0]["source"])).size] * 2

    prefs = preference_pairs(sample_pairs_dir)
    uri = str(tmp_path / "dpo.parquet")
    assert write_rows(preference_rows(prefs), DPO_FEATURES, uri) == 2
    row = load_rows(uri, str(tmp_path / "cache2"))[0]
    assert (row["error_type"], row["severity"]) == ("orientation", "critical")
    assert row["chosen"][0]["content"][0]["text"] == prefs[0]["chosen"]
    assert row["rejected"][0]["content"][0]["text"] == prefs[0]["rejected"]
    assert len(row["images"]) == 2


def test_sft_loss_is_on_the_instruction_only(tmp_path, sample_pairs_dir, tiny_model):
    """TRL's vision collator on our prompt-completion rows: only the instruction's tokens are labels."""
    from transformers import AutoProcessor
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    given = records(sample_pairs_dir, PAIRS[:2])
    uri = str(tmp_path / "sft.parquet")
    write_rows(sft_rows(given), SFT_FEATURES, uri)
    rows = list(load_rows(uri, str(tmp_path / "cache")))
    processor = AutoProcessor.from_pretrained(tiny_model, size={"shortest_edge": 1024, "longest_edge": 65536})
    collator = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    batch = collator(rows)
    tokenizer = processor.tokenizer
    for i, record in enumerate(given):
        labelled = batch["labels"][i][batch["labels"][i] != -100]
        text = tokenizer.decode(labelled)
        assert text.startswith(record["instruction"]) and "<|im_end|>" in text
        assert "SOURCE" not in text  # the prompt is not trained on
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (batch["input_ids"] == image_token).sum() > 0
    assert not ((batch["labels"] == image_token).any())


def test_conversation_rows_keep_their_own_prompt_and_images(tmp_path):
    """Prompt `from_data`: an EditScore conversation (one or two images) is trained on its reply only."""
    from transformers import AutoProcessor
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from editcaption.demo.records import scorer_conversations, write_conversations
    from editcaption.demo.world import WorldConfig, generate
    from editcaption.demo.world_models import WorldModelConfig, build_world_qwen3vl

    pairs = list(generate(24, WorldConfig(seed=3)))
    given = scorer_conversations(pairs, seed=0)
    data = write_conversations(given, tmp_path / "scorer.parquet")
    rows = read_conversation_rows(str(data))
    assert [len(r["images"]) for r in rows] == [len(g["images"]) for g in given]
    assert {len(r["images"]) for r in rows} == {1, 2}
    uri = str(tmp_path / "sft.parquet")
    assert write_rows(rows, SFT_FEATURES, uri) == len(given)
    loaded = list(load_rows(uri, str(tmp_path / "cache")))
    assert loaded[0]["prompt"][0]["content"][0]["text"] == given[0]["messages"][0]["content"][0]["text"]

    model = build_world_qwen3vl(tmp_path / "model", WorldModelConfig(text_layers=1, vision_depth=1))
    processor = AutoProcessor.from_pretrained(model)
    batch = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)(loaded[:8])
    for i, row in enumerate(loaded[:8]):
        labelled = processor.tokenizer.decode(batch["labels"][i][batch["labels"][i] != -100])
        assert labelled.startswith(row["completion"][0]["content"][0]["text"]), labelled
        assert "<instruction>" not in labelled


def test_conversation_rows_refuse_what_they_cannot_train_on(tmp_path):
    from editcaption.demo.records import scorer_conversations, write_conversations
    from editcaption.demo.world import WorldConfig, generate
    from editcaption.training.sft import SFTJobConfig

    with pytest.raises(TrainingDataError, match="TRL export"):
        read_conversation_rows(str(write_records_file(tmp_path)))
    rows = scorer_conversations(list(generate(3, WorldConfig(seed=1))))
    rows[1]["messages"] = rows[1]["messages"][:-1]  # no reply
    with pytest.raises(TrainingDataError, match="row 1 needs a prompt, a last assistant message"):
        read_conversation_rows(str(write_conversations(rows, tmp_path / "c.parquet")))
    rows = scorer_conversations(list(generate(3, WorldConfig(seed=1))))
    rows[2]["images"] = rows[2]["images"][:1] if len(rows[2]["images"]) == 2 else rows[2]["images"] * 2
    with pytest.raises(TrainingDataError, match="row 2 .* image part"):
        read_conversation_rows(str(write_conversations(rows, tmp_path / "d.parquet")))
    with pytest.raises(ValueError, match="augment_mirrored needs prompt 'instruction'"):
        SFTJobConfig(
            model="m", input="i", output="o", name="n", bf16=False, prompt="from_data", augment_mirrored=True
        )


def write_records_file(tmp_path: Path) -> Path:
    """A plain SFTRecord Parquet file (not a TRL export)."""
    from editcaption.demo.records import sft_records, write_records
    from editcaption.demo.world import WorldConfig, generate

    rows, _ = sft_records(list(generate(2, WorldConfig(seed=1))))
    return write_records(rows, SFTRecord, tmp_path / "records.parquet")
