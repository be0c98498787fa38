"""ByteMorph-Bench in either of its two layouts, told apart by what the folder holds.

- **Parquet**, as published on the dataset hub (`ByteDance-Seed/BM-Bench`, `data/test-*.parquet`):
  one row per pair with `src_img` / `tgt_img` (image structs or raw bytes), `edit_prompt` (the
  instruction), `edit_type` (the motion category, kept as the pair's category) and `image_id` (the
  pair id); the captions and `edit_prompt_rewrite_instruction` columns are not used.
- **Side-by-side PNGs** (left half = source, right half = target), each with a same-stem `.json` whose
  `edit` is the instruction; category from the JSON, else the PNG's folder name.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from editcaption.images import ImagePolicy, ImageRejected, decode_image, encode_png
from editcaption.io.fs import open_fs, to_uri
from editcaption.io.loading import PairProblem, PairReader, PairRef, fetch, map_pairs, text_fields
from editcaption.io.manifest import list_parquet, parquet_records, parse_record
from editcaption.io.pairs import ok_row

if TYPE_CHECKING:
    from ray.data import Dataset

DATASET = "bytemorph"
# The published Parquet schema: image columns (source, target) and text columns -> contract fields.
PARQUET_IMAGES = ("src_img", "tgt_img")
PARQUET_FIELDS = {"edit_prompt": "reference_instruction", "edit_type": "category"}


def composite_policy(policy: ImagePolicy) -> ImagePolicy:
    """The side-by-side image holds two images of `policy`'s limits next to each other."""
    return policy.model_copy(
        update={"max_pixels": 2 * policy.max_pixels, "max_aspect": 2 * policy.max_aspect}
    )


class ByteMorphPairReader(PairReader):
    """A Parquet file or a folder holding Parquet files (the published layout), else a folder
    (searched recursively) of `<stem>.png` + `<stem>.json`, whose pair_id is the path of the stem
    relative to the root (just the stem when the folder is flat) and whose halves are re-encoded as PNG."""

    def __init__(
        self,
        uri: str,
        *,
        limit: int | None = None,
        storage_options: dict[str, Any] | None = None,
        policy: ImagePolicy | None = None,
    ):
        super().__init__(uri, limit=limit, storage_options=storage_options)
        self.policy = composite_policy(policy or ImagePolicy())

    def read(self) -> Dataset:
        fs, root = open_fs(self.uri, self.storage_options)
        if root.endswith(".parquet") or (
            fs.isdir(root) and any(p.endswith(".parquet") for p in fs.find(root))
        ):
            return self._read_parquet(fs, root)
        if not fs.isdir(root):
            raise ValueError(f"bytemorph: {self.uri} is neither a Parquet file nor a directory")
        found: dict[str, dict[str, str]] = {}
        for path in fs.find(root):
            key, ext = posixpath.splitext(posixpath.relpath(path, root))
            if ext.lower() in (".png", ".json") and not posixpath.basename(key).startswith("."):
                found.setdefault(key, {})[ext.lower()] = to_uri(fs, path, self.uri)
        if not any(".png" in files for files in found.values()):
            raise ValueError(f"bytemorph: no side-by-side .png files under {self.uri}")
        root_name = posixpath.basename(root.rstrip("/"))
        items = [
            {
                "pair_id": key,
                "image_uri": files.get(".png"),
                "json_uri": files.get(".json"),
                "folder": posixpath.basename(posixpath.dirname(key)) or root_name,
            }
            for key, files in sorted(found.items())
        ][: self.limit]
        fn = partial(_load, policy=self.policy, storage_options=self.storage_options)
        return map_pairs(items, fn, dataset=DATASET)

    def _read_parquet(self, fs: Any, path: str) -> Dataset:
        if not fs.exists(path):
            raise ValueError(f"bytemorph: {self.uri} does not exist")
        base = to_uri(fs, path if fs.isdir(path) else posixpath.dirname(path), self.uri)
        files = [{"file": uri} for uri in list_parquet(fs, path, self.uri)]
        fn = partial(_parquet_rows, base=base, storage_options=self.storage_options)
        ds = map_pairs(files, fn, dataset=DATASET, batch_size=1)
        return ds if self.limit is None else ds.limit(self.limit)


def _parquet_rows(
    item: dict[str, Any], base: str, storage_options: dict[str, Any] | None
) -> Iterator[dict[str, Any]]:
    for record in parquet_records(item["file"], storage_options):
        if isinstance(record, dict) and record.get("pair_id") is None and record.get("image_id") is not None:
            record = {**record, "pair_id": str(record["image_id"])}
        ref = parse_record(
            record,
            dataset=DATASET,
            base=base,
            where=item["file"],
            fields=PARQUET_FIELDS,
            images=PARQUET_IMAGES,
        )
        yield ref.load(storage_options)


def _load(item: dict[str, Any], policy: ImagePolicy, storage_options: dict[str, Any] | None) -> list[dict]:
    image_uri, json_uri = item["image_uri"], item["json_uri"]
    halves = (f"{image_uri}#left", f"{image_uri}#right") if image_uri else (None, None)
    ref = PairRef(DATASET, pair_id=item["pair_id"], source_uri=halves[0], target_uri=halves[1])
    try:
        if image_uri is None:
            raise PairProblem("missing_file", f"{json_uri}: no side-by-side .png beside it")
        if json_uri is None:
            raise PairProblem("missing_file", f"{image_uri}: no .json with its instruction beside it")
        meta = _read_meta(json_uri, storage_options)
        fields = text_fields(meta, json_uri, edit="reference_instruction", category="category")
        if fields["reference_instruction"] is None:
            raise PairProblem("missing_field", f"{json_uri}: no 'edit'")
        source, target = _split(fetch(image_uri, "side-by-side", storage_options), policy)
    except (PairProblem, ImageRejected) as exc:
        return [ref.failed(exc.reason, exc.detail).load()]
    fields["category"] = fields["category"] or item["folder"]
    uris = {"source_uri": halves[0], "target_uri": halves[1]}
    return [ok_row(source, target, pair_id=ref.pair_id, dataset=DATASET, **uris, **fields)]


def _read_meta(uri: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    try:
        meta = json.loads(fetch(uri, "json", storage_options))
    except ValueError as exc:
        raise PairProblem("bad_record", f"{uri}: invalid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise PairProblem("bad_record", f"{uri}: not a JSON object")
    return meta


def _split(data: bytes, policy: ImagePolicy) -> tuple[bytes, bytes]:
    """Left and right halves as PNG; an odd middle column belongs to neither."""
    img = decode_image(data, policy, role="side-by-side")
    half = img.width // 2
    left = img.crop((0, 0, half, img.height))
    right = img.crop((img.width - half, 0, img.width, img.height))
    return encode_png(left), encode_png(right)
