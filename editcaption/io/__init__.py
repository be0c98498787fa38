"""Read image pairs from any supported layout into a Ray Dataset of pair rows (see `io.pairs`)."""

from __future__ import annotations

import posixpath
import re
from typing import TYPE_CHECKING, Any, Literal, get_args

import pyarrow.parquet as pq

from editcaption.io.bytemorph import PARQUET_IMAGES as BYTEMORPH_IMAGES
from editcaption.io.bytemorph import ByteMorphPairReader
from editcaption.io.folder import FolderPairReader
from editcaption.io.fs import open_fs
from editcaption.io.hqedit import IMAGE_COLUMNS, HQEditPairReader
from editcaption.io.manifest import JSONL_SUFFIXES, ManifestPairReader
from editcaption.io.pairs import (
    PAIR_ROW_SCHEMA,
    split_quarantine,
    to_quarantined_records,
    validate_pairs,
    write_parquet,
)
from editcaption.io.webdataset import SHARD_SUFFIXES, WebDatasetPairReader

if TYPE_CHECKING:
    from ray.data import Dataset

PairFormat = Literal["auto", "folder", "manifest", "hqedit", "bytemorph", "webdataset"]
FORMATS: tuple[str, ...] = get_args(PairFormat)[1:]
READERS = {
    "folder": FolderPairReader,
    "manifest": ManifestPairReader,
    "hqedit": HQEditPairReader,
    "bytemorph": ByteMorphPairReader,
    "webdataset": WebDatasetPairReader,
}
_PATTERN = re.compile(r"[*?\[{]")
# Sub-folders looked into when telling a folder-per-pair layout from ByteMorph category folders.
_SUBFOLDERS_PROBED = 3

__all__ = [
    "FORMATS",
    "PAIR_ROW_SCHEMA",
    "detect_format",
    "read_pairs",
    "split_quarantine",
    "to_quarantined_records",
    "validate_pairs",
    "write_parquet",
]


def read_pairs(
    uri: str,
    format: PairFormat = "auto",
    limit: int | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
) -> Dataset:
    """Pair rows from `uri` (a local path or fsspec URI); `storage_options` go to fsspec on every node."""
    if format != "auto" and format not in READERS:
        raise ValueError(f"unknown pair format {format!r}; formats: {', '.join(FORMATS)}")
    fs, path = open_fs(uri, storage_options)
    if not _PATTERN.search(path) and not fs.exists(path):
        raise ValueError(f"{uri} does not exist (pair formats: {', '.join(FORMATS)})")
    chosen = detect_format(uri, storage_options) if format == "auto" else format
    return READERS[chosen](uri, limit=limit, storage_options=storage_options).read()


def detect_format(uri: str, storage_options: dict[str, Any] | None = None) -> str:
    """The pair format of `uri`, from its name, Parquet columns or top-level layout; ValueError if unclear."""
    fs, path = open_fs(uri, storage_options)
    if _PATTERN.search(path) or path.endswith(SHARD_SUFFIXES):
        return "webdataset"
    if not fs.exists(path):
        raise ValueError(f"{uri} does not exist (pair formats: {', '.join(FORMATS)})")
    if not fs.isdir(path):
        if path.endswith(JSONL_SUFFIXES):
            return "manifest"
        if path.endswith(".parquet"):
            return _parquet_format(fs, path, uri)
        raise ValueError(_unclear(uri, "a file that is not .jsonl, .parquet or .tar"))
    entries = [e for e in fs.ls(path, detail=True) if not posixpath.basename(e["name"]).startswith(".")]
    files = [e["name"] for e in entries if e["type"] != "directory"]
    folders = sorted(e["name"] for e in entries if e["type"] == "directory")
    if {"source", "target"} <= {posixpath.basename(f) for f in folders}:
        return "folder"
    if any(f.endswith(SHARD_SUFFIXES) for f in files):
        return "webdataset"
    parquets = sorted(f for f in files if f.endswith(".parquet"))
    if parquets:
        return _parquet_format(fs, parquets[0], uri)
    if _is_side_by_side(files):
        return "bytemorph"
    for folder in folders[:_SUBFOLDERS_PROBED]:
        inner = fs.ls(folder, detail=False)
        inner_parquets = sorted(f for f in inner if f.endswith(".parquet"))
        if inner_parquets:  # a dataset-hub snapshot: README.md + data/<split>-*.parquet
            return _parquet_format(fs, inner_parquets[0], uri)
        if any(posixpath.basename(f).split(".", 1)[0] in ("source", "target") for f in inner):
            return "folder"
        if _is_side_by_side(inner):
            return "bytemorph"
    raise ValueError(_unclear(uri, "a folder in none of the known layouts"))


def _is_side_by_side(files: list[str]) -> bool:
    stems = {posixpath.splitext(f)[0] for f in files if f.endswith(".json")}
    return any(posixpath.splitext(f)[0] in stems for f in files if f.lower().endswith(".png"))


def _parquet_format(fs: Any, path: str, uri: str) -> str:
    with fs.open(path, "rb") as f:
        columns = set(pq.read_schema(f).names)
    if set(IMAGE_COLUMNS) <= columns:
        return "hqedit"
    if set(BYTEMORPH_IMAGES) <= columns:
        return "bytemorph"
    if {"source", "source_b64"} & columns:
        return "manifest"
    raise ValueError(_unclear(uri, f"Parquet with columns {sorted(columns)}"))


def _unclear(uri: str, what: str) -> str:
    return f"cannot tell the pair format of {uri} ({what}); pass format= one of: {', '.join(FORMATS)}"
