"""SFT exports: `SFTRecord` rows as a TRL dataset (Parquet) and as a LLaMA-Factory ShareGPT folder.

Both formats carry the exact conversation the captioner is prompted with (`instruction_messages()`),
so a model fine-tuned on an export is trained on the prompt it is later served with. Images are
written upright: a decoder that ignores EXIF orientation would otherwise show the model a mirrored
or rotated pair, and "the viewer's left" in the instruction would become wrong.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, List, Value
from datasets import Image as HFImage
from PIL import Image, ImageOps

from editcaption.images import encode_png, to_rgb
from editcaption.io.fs import open_fs
from editcaption.prompts.instruction import instruction_messages

_PART = {"type": Value("string"), "text": Value("string")}
# The HF `features` metadata makes `datasets` decode `images` to PIL, which is what TRL's vision path needs.
TRL_FEATURES = Features(
    {
        "pair_id": Value("string"),
        "images": List(HFImage()),
        "messages": List({"role": Value("string"), "content": List(_PART)}),
    }
)
# Image rows are heavy; small row groups keep readers' memory bounded (datasets uses 100 for images).
ROW_GROUP_SIZE = 64
# Encoded formats kept as they are when already upright RGB; anything else is re-encoded as PNG.
_PASSTHROUGH = {"PNG": "png", "JPEG": "jpg"}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_EXIF_ORIENTATION = 0x0112


def write_trl_parquet(records: Iterable[dict[str, Any]], out_path: str) -> int:
    """Write one Parquet file of `{"pair_id", "images", "messages"}` rows; returns the number of rows.

    `datasets.load_dataset("parquet", data_files=out_path)` yields PIL images, and the rows go
    straight into TRL's `SFTTrainer` with the captioner's processor as `processing_class`.
    """
    fs, path = open_fs(out_path)
    if posixpath.dirname(path):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    schema, count = TRL_FEATURES.arrow_schema, 0
    with fs.open(path, "wb") as stream, pq.ParquetWriter(stream, schema) as writer:
        for batch in _batches(records, ROW_GROUP_SIZE):
            rows = [
                {
                    "pair_id": r["pair_id"],
                    "images": [{"bytes": upright_bytes(r[k])[0], "path": None} for k in ("source", "target")],
                    "messages": _conversation(r["instruction"]),
                }
                for r in batch
            ]
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            count += len(rows)
    return count


def write_sharegpt(
    records: Iterable[dict[str, Any]], out_dir: str, dataset_name: str = "editcaption_sft"
) -> int:
    """Write a LLaMA-Factory dataset folder; returns the number of samples.

    `out_dir` holds `data.json` (ShareGPT messages, one `<image>` per image, image paths relative
    to the folder), `images/` and `dataset_info.json` registering it as `dataset_name`, so training
    with `dataset_dir: <out_dir>` and `dataset: <dataset_name>` needs no further setup.
    """
    fs, root = open_fs(out_dir)
    fs.makedirs(posixpath.join(root, "images"), exist_ok=True)
    system, user = _prompt_texts()
    samples = []
    for r in records:
        images = []
        for role in ("source", "target"):
            data, ext = upright_bytes(r[role])
            name = f"images/{safe_name(r['pair_id'])}_{role}.{ext}"
            with fs.open(posixpath.join(root, name), "wb") as f:
                f.write(data)
            images.append(name)
        samples.append(
            {
                "messages": [
                    {"role": "user", "content": "<image>" * len(images) + user},
                    {"role": "assistant", "content": r["instruction"]},
                ],
                "system": system,
                "images": images,
            }
        )
    info = {
        dataset_name: {
            "file_name": "data.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "system": "system", "images": "images"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
            },
        }
    }
    for name, value in (("data.json", samples), ("dataset_info.json", info)):
        with fs.open(posixpath.join(root, name), "w", encoding="utf-8") as f:
            json.dump(value, f, ensure_ascii=False, indent=1)
    return len(samples)


def safe_name(pair_id: str) -> str:
    """A file-name stem for `pair_id`: kept as is when already safe, else cleaned and made unique by a hash.

    Pair ids may hold `/`, `..` or spaces (e.g. a dataset's relative paths); two ids that clean to
    the same text still get different names.
    """
    if _SAFE_NAME.fullmatch(pair_id):
        return pair_id
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", pair_id).strip("._-")[:80]
    digest = hashlib.sha256(pair_id.encode()).hexdigest()[:10]
    return f"{cleaned}-{digest}" if cleaned else digest


def _conversation(instruction: str) -> list[dict[str, Any]]:
    """The training conversation: the captioner's prompt, then the instruction as the assistant turn."""
    return [
        *instruction_messages(),
        {"role": "assistant", "content": [{"type": "text", "text": instruction}]},
    ]


def _prompt_texts() -> tuple[str, str]:
    """(system text, user text) of the captioner's prompt, for formats that take plain strings."""
    texts = {
        m["role"]: "".join(p["text"] for p in m["content"] if p["type"] == "text")
        for m in instruction_messages()
    }
    return texts["system"], texts["user"]


def upright_bytes(data: bytes) -> tuple[bytes, str]:
    """(encoded bytes, extension) of the image as the pipeline's decoder sees it: upright RGB.

    Bytes that are already upright RGB PNG/JPEG are kept, so photographs are not inflated into PNGs.
    """
    img = Image.open(io.BytesIO(data))
    orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    if (
        img.format in _PASSTHROUGH
        and img.mode == "RGB"
        and "transparency" not in img.info
        and orientation == 1
    ):
        return data, _PASSTHROUGH[img.format]
    return encode_png(to_rgb(ImageOps.exif_transpose(img))), "png"


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
