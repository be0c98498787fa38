"""SFT exports must load in the tools that train on them: `datasets` + TRL, and LLaMA-Factory's layout."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from editcaption.io.exports import safe_name, write_sharegpt, write_trl_parquet
from editcaption.prompts.instruction import SYSTEM, USER

# (width, height) per record: different sizes catch source/target or row mix-ups.
SIZES = [(128, 96), (96, 128), (64, 64)]
PAIR_IDS = ["plain-id", "bytemorph/camera_zoom/0001", "../odd id"]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _image(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def records() -> list[dict]:
    return [
        {
            "pair_id": pair_id,
            "source": _png(_image(2 * i, size)),
            "target": _png(_image(2 * i + 1, size)),
            "instruction": f"Move the red cup to the viewer's left, {i}.",
            "origin": "synthesis",
            "model": "glm",
            "overall": 7.5,
        }
        for i, (pair_id, size) in enumerate(zip(PAIR_IDS, SIZES, strict=True))
    ]


def test_trl_parquet_loads_as_pil_and_trains_one_step(
    records: list[dict], tiny_model: Path, tmp_path: Path
) -> None:
    from datasets import load_dataset
    from transformers import AutoProcessor
    from trl import SFTConfig, SFTTrainer

    path = tmp_path / "sft" / "train.parquet"
    assert write_trl_parquet(iter(records), str(path)) == 3
    ds = load_dataset("parquet", data_files=str(path), split="train")

    for row, record, size in zip(ds, records, SIZES, strict=True):
        assert row["pair_id"] == record["pair_id"]
        source, target = row["images"]
        assert isinstance(source, Image.Image) and source.size == target.size == size
        assert np.array_equal(np.asarray(source), np.asarray(Image.open(io.BytesIO(record["source"]))))
        assert np.array_equal(np.asarray(target), np.asarray(Image.open(io.BytesIO(record["target"]))))
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant"]
        user = row["messages"][1]["content"]
        assert [p["type"] for p in user] == ["image", "image", "text"] and user[2]["text"] == USER
        assert row["messages"][2]["content"] == [{"type": "text", "text": record["instruction"]}]

    processor = AutoProcessor.from_pretrained(tiny_model)
    text = processor.apply_chat_template(ds[0]["messages"], tokenize=False)
    assert SYSTEM in text and records[0]["instruction"] in text and text.count("<|image_pad|>") == 2
    inputs = processor(text=[text], images=ds[0]["images"], return_tensors="pt")
    assert inputs["pixel_values"].shape[0] > 0

    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        per_device_train_batch_size=2,
        bf16=False,
        use_cpu=True,
        max_length=None,
        report_to="none",
        save_strategy="no",
    )
    trainer = SFTTrainer(model=str(tiny_model), args=args, train_dataset=ds, processing_class=processor)
    result = trainer.train()
    assert result.global_step == 1 and np.isfinite(result.training_loss)


def test_exif_rotated_images_are_written_upright(tmp_path: Path) -> None:
    upright = _image(0, (64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90° clockwise to show it upright
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, format="PNG", exif=exif)
    record = {"pair_id": "p", "source": buf.getvalue(), "target": _png(upright), "instruction": "x"}

    write_sharegpt([record], str(tmp_path))
    written = Image.open(tmp_path / "images" / "p_source.png")
    assert written.size == (64, 32) and np.array_equal(np.asarray(written), np.asarray(upright))


def test_sharegpt_folder_is_llamafactory_ready(records: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "lf"
    assert write_sharegpt(records, str(out)) == 3

    samples = json.loads((out / "data.json").read_text())
    assert len(samples) == 3
    for sample, record, size in zip(samples, records, SIZES, strict=True):
        user, assistant = sample["messages"]
        assert user == {"role": "user", "content": "<image><image>" + USER}
        assert assistant == {"role": "assistant", "content": record["instruction"]}
        assert sample["system"] == SYSTEM
        assert user["content"].count("<image>") == len(sample["images"]) == 2
        for rel in sample["images"]:
            assert rel.startswith("images/") and "/" not in rel.removeprefix("images/")
            assert Image.open(out / rel).size == size
    assert samples[0]["images"] == ["images/plain-id_source.png", "images/plain-id_target.png"]

    info = json.loads((out / "dataset_info.json").read_text())["editcaption_sft"]
    assert info["file_name"] == "data.json" and info["formatting"] == "sharegpt"
    assert info["columns"] == {"messages": "messages", "system": "system", "images": "images"}
    assert info["tags"]["user_tag"] == "user" and info["tags"]["assistant_tag"] == "assistant"


def test_safe_names_are_plain_and_distinct() -> None:
    names = [safe_name(p) for p in ["a/b", "a_b", "a b", "..", "/", "x" * 300]]
    assert len(set(names)) == len(names)
    assert all("/" not in n and not n.startswith(".") and 0 < len(n) <= 100 for n in names)
    assert safe_name("a_b") == "a_b"


def test_exports_write_to_object_store_uris(records: list[dict]) -> None:
    import fsspec
    import pyarrow.parquet as pq

    write_trl_parquet(records, "memory://exports/train.parquet")
    write_sharegpt(records, "memory://exports/lf")
    fs = fsspec.filesystem("memory")
    with fs.open("/exports/train.parquet", "rb") as f:
        assert pq.read_table(f).num_rows == 3
    assert len(fs.ls("/exports/lf/images")) == 6
