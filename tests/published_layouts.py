"""Small benchmark fixtures written in the layouts the datasets are published in on the dataset hub:
a snapshot folder (`README.md` beside `data/<split>-*.parquet`) with images as the `datasets` Image
struct (`{"bytes", "path"}`).

- ByteMorph-Bench (`ByteDance-Seed/BM-Bench`, split `test`): edit_type, image_id, src_img, tgt_img,
  edit_prompt, edit_prompt_rewrite_instruction, src_img_caption, tgt_img_caption.
- HQ-Edit (`UCSC-VLAA/HQ-Edit`, split `train`): input, input_image, edit, inverse_edit, output,
  output_image.

`samples` are dicts with `source`, `target` (PNG bytes), `instruction`, `inverse_instruction`,
`category` and an `id`; ByteMorph's `edit_type` is `<i % 5>_<category>`, like its five numbered types.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def _image(data: bytes, name: str) -> dict[str, Any]:
    return {"bytes": data, "path": name}


def _snapshot(root: Path, columns: dict[str, list[Any]], split: str, shards: int) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "README.md").write_text("---\nconfigs:\n- config_name: default\n---\n")
    table = pa.table(columns)
    step = -(-table.num_rows // shards)
    for i in range(shards):
        part = table.slice(i * step, step)
        pq.write_table(part, root / "data" / f"{split}-{i:05d}-of-{shards:05d}.parquet")
    return root


def write_bytemorph_bench(root: Path, samples: list[dict[str, Any]], shards: int = 2) -> Path:
    columns = {
        "edit_type": [f"{i % 5}_{s['category']}" for i, s in enumerate(samples)],
        "image_id": [s["id"] for s in samples],
        "src_img": [_image(s["source"], f"{s['id']}_src.png") for s in samples],
        "tgt_img": [_image(s["target"], f"{s['id']}_tgt.png") for s in samples],
        "edit_prompt": [s["instruction"] for s in samples],
        "edit_prompt_rewrite_instruction": [s["instruction"].upper() for s in samples],
        "src_img_caption": ["a scene"] * len(samples),
        "tgt_img_caption": ["the scene, edited"] * len(samples),
    }
    return _snapshot(root, columns, "test", shards)


def write_hq_edit(root: Path, samples: list[dict[str, Any]], shards: int = 2) -> Path:
    columns = {
        "input": ["a scene"] * len(samples),
        "input_image": [_image(s["source"], "in.png") for s in samples],
        "edit": [s["instruction"] for s in samples],
        "inverse_edit": [s["inverse_instruction"] for s in samples],
        "output": ["the scene, edited"] * len(samples),
        "output_image": [_image(s["target"], "out.png") for s in samples],
    }
    return _snapshot(root, columns, "train", shards)
