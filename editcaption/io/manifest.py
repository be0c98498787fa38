"""Pairs listed in a manifest: JSONL (one object per line) or Parquet (one row per pair).

Each record names its images by path (relative to the manifest's folder, absolute, or a URI) or
carries them inline (Parquet binary, an HF image struct, or JSONL `source_b64` / `target_b64`).
JSONL is parsed here, line by line, so one malformed line is one quarantined `bad_record`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from editcaption.io.fs import arrow_fs, join, open_fs, to_uri
from editcaption.io.loading import PairProblem, PairReader, PairRef, map_pairs, text_fields
from editcaption.io.pairs import BATCH_SIZE, TASK_CPUS
from editcaption.schema import pair_id_for_uris

if TYPE_CHECKING:
    from ray.data import Dataset

DATASET = "manifest"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
MANIFEST_FIELDS = {
    "instruction": "reference_instruction",
    "inverse_instruction": "inverse_instruction",
    "category": "category",
}


class ManifestPairReader(PairReader):
    """A `.jsonl` manifest, or a `.parquet` file / folder of them, with `source` and `target` per record.

    JSONL lines go through `ray.data.read_text`; Parquet files are listed here and each is read,
    in batches, by one Ray task.
    """

    def read(self) -> Dataset:
        import ray.data

        fs, path = open_fs(self.uri, self.storage_options)
        if not fs.exists(path):
            raise ValueError(f"manifest: {self.uri} does not exist")
        base = to_uri(fs, path if fs.isdir(path) else posixpath.dirname(path), self.uri)
        if path.endswith(JSONL_SUFFIXES):
            lines = ray.data.read_text(path, filesystem=arrow_fs(fs), num_cpus=TASK_CPUS)
            if self.limit is not None:
                lines = lines.limit(self.limit)
            fn = partial(_line_rows, base=base, where=self.uri, storage_options=self.storage_options)
            return map_pairs(lines, fn, dataset=DATASET)
        files = [{"file": uri} for uri in list_parquet(fs, path, self.uri)]
        fn = partial(_parquet_rows, base=base, storage_options=self.storage_options)
        ds = map_pairs(files, fn, dataset=DATASET, batch_size=1)
        return ds if self.limit is None else ds.limit(self.limit)


def _line_rows(
    item: dict[str, Any], base: str, where: str, storage_options: dict[str, Any] | None
) -> list[dict[str, Any]]:
    line = item["text"]
    if not line.strip():
        return []
    try:
        record = json.loads(line)
    except ValueError as exc:
        ref = PairRef(DATASET, pair_id=pair_id_for_uris(line))
        return [ref.failed("bad_record", f"{where}: line is not JSON ({exc}): {line[:200]!r}").load()]
    ref = parse_record(record, dataset=DATASET, base=base, where=where, fields=MANIFEST_FIELDS, fallback=line)
    return [ref.load(storage_options)]


def _parquet_rows(
    item: dict[str, Any], base: str, storage_options: dict[str, Any] | None
) -> Iterator[dict[str, Any]]:
    for record in parquet_records(item["file"], storage_options):
        ref = parse_record(record, dataset=DATASET, base=base, where=item["file"], fields=MANIFEST_FIELDS)
        yield ref.load(storage_options)


def list_parquet(fs: Any, path: str, like: str) -> list[str]:
    """A Parquet file, or every `.parquet` file under a folder, as URIs in sorted order."""
    files = sorted(p for p in fs.find(path) if p.endswith(".parquet")) if fs.isdir(path) else [path]
    if not files:
        raise ValueError(f"no .parquet files under {like}")
    return [to_uri(fs, p, like) for p in files]


def parquet_records(uri: str, storage_options: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Rows of one Parquet file, a few at a time, so a shard of large images never sits in memory whole."""
    fs, path = open_fs(uri, storage_options)
    with fs.open(path, "rb") as stream:
        for batch in pq.ParquetFile(stream).iter_batches(batch_size=BATCH_SIZE):
            yield from batch.to_pylist()


def parse_record(
    record: Any,
    *,
    dataset: str,
    base: str,
    where: str,
    fields: dict[str, str],
    images: tuple[str, str] = ("source", "target"),
    fallback: str | None = None,
) -> PairRef:
    """A PairRef from one manifest-like record; problems become a failed ref, never an exception.

    `images` names the (source, target) keys; `fields` maps record keys to contract fields. A record
    that fails here without a usable `pair_id` is keyed by a hash of `fallback` (default: its content).
    """
    fallback_id = pair_id_for_uris(fallback if fallback is not None else record_key(record))
    if not isinstance(record, dict):
        return PairRef(dataset, pair_id=fallback_id).failed(
            "bad_record", f"{where}: record is {type(record).__name__}, not an object"
        )
    ref = PairRef(dataset)
    try:
        ref.pair_id = _pair_id(record, where)
        for field, value in text_fields(record, where, **fields).items():
            setattr(ref, field, value)
        ref.source_uri, ref.source = image_entry(record, images[0], base, where)
        ref.target_uri, ref.target = image_entry(record, images[1], base, where)
    except PairProblem as exc:
        if ref.pair_id is None:
            ref.pair_id = fallback_id
        return ref.failed(exc.reason, exc.detail)
    return ref


def _pair_id(record: dict[str, Any], where: str) -> str | None:
    value = record.get("pair_id")
    if value is None or (isinstance(value, str) and value):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise PairProblem("bad_record", f"{where}: pair_id must be a non-empty string, got {value!r}")


def image_entry(record: dict[str, Any], key: str, base: str, where: str) -> tuple[str | None, bytes | None]:
    """(uri, inline bytes) of one image cell: a path, raw bytes, an HF `{bytes, path}` struct, or `<key>_b64`."""
    value = record.get(key)
    if value is None and record.get(f"{key}_b64") is not None:
        try:
            return None, base64.b64decode(record[f"{key}_b64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise PairProblem("bad_record", f"{where}: {key}_b64 is not base64: {exc}") from exc
    if isinstance(value, dict):  # HF datasets' Image feature: inline bytes win over the original path
        value = value["bytes"] if value.get("bytes") is not None else value.get("path")
    if value is None or value == "":
        raise PairProblem("missing_field", f"{where}: record has no {key!r}")
    if isinstance(value, bytes):
        return None, value
    if isinstance(value, str):
        return join(base, value), None
    raise PairProblem("bad_record", f"{where}: {key!r} is {type(value).__name__}, not a path or bytes")


def record_key(record: Any) -> str:
    """Canonical text of a record (bytes hashed), to key records that carry no pair_id."""
    if not isinstance(record, dict):
        return repr(record)
    parts = []
    for key, value in sorted(record.items()):
        if isinstance(value, bytes):
            value = hashlib.sha256(value).hexdigest()
        elif isinstance(value, dict):
            value = record_key(value)
        parts.append(f"{key}={value}")
    return "\n".join(parts)
