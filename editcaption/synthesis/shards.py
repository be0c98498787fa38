"""Committed result shards: the unit of exactly-once.

Each Ray Data block of finished pairs becomes one Parquet shard, written to a temporary name and
renamed into place (object stores publish an object atomically when its upload completes). A shard's
name is a hash of the pair ids it holds, so a retried write task replaces its own shard instead of
adding a second copy. A pair is done exactly when a committed shard holds it; a rerun reads those ids
and skips them, and a run killed mid-write leaves only a temporary file, which the rerun removes.

Every shard carries its format (`SHARD_FORMAT`) in its Parquet metadata, and a shard of another format
is refused by name: reading candidates and scores written in another layout would mis-read them.
"""

from __future__ import annotations

import hashlib
import posixpath
import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from ray.data import Datasink
from ray.data.block import BlockAccessor

from editcaption.io.fs import open_fs
from editcaption.schema import pair_record_types

SHARD_PREFIX = "shard-"
TMP_PREFIX = ".tmp-"
FORMAT_KEY = b"editcaption.shard_format"
# 2: candidates and scores as list<struct> columns derived from schema.py. Shards without the key are
# format 1, which held them as JSON strings.
SHARD_FORMAT = b"2"


class ShardFormatError(ValueError):
    """A committed shard was written in another format than this version reads."""


class AtomicShardSink(Datasink):
    """Writes every block as `shard-<hash of its pair ids>.parquet` under `uri`, atomically."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        self.uri = uri
        self.storage_options = storage_options

    def write(self, blocks: Iterable[Any], ctx: Any) -> None:
        fs, root = open_fs(self.uri, self.storage_options)
        for block in blocks:
            table = BlockAccessor.for_block(block).to_arrow()
            if table.num_rows:
                commit_shard(fs, root, table)


def commit_shard(fs: Any, root: str, table: pa.Table) -> str:
    """Write `table` as the shard of its pair ids, its record-list columns cast to their schema.py types
    and its format in the metadata."""
    table = _in_shard_format(table)
    ids = sorted(table.column("pair_id").to_pylist())
    name = SHARD_PREFIX + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:24] + ".parquet"
    final = posixpath.join(root, name)
    fs.makedirs(root, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        tmp = posixpath.join(root, f"{TMP_PREFIX}{uuid.uuid4().hex}.parquet")
        with fs.open(tmp, "wb") as f:
            pq.write_table(table, f)
        fs.mv(tmp, final)  # rename(2): atomic on one filesystem
    else:
        with fs.open(final, "wb") as f:
            pq.write_table(table, f)
    return final


def _in_shard_format(table: pa.Table) -> pa.Table:
    for name, type_ in pair_record_types().items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, table.column(name).cast(type_))
    return table.replace_schema_metadata({**(table.schema.metadata or {}), FORMAT_KEY: SHARD_FORMAT})


def _open_shard(f: Any, path: str, uri: str) -> pq.ParquetFile:
    """The shard at `path` under `uri` (open as `f`), after checking that it is in this version's format."""
    shard = pq.ParquetFile(f)
    found = (shard.schema_arrow.metadata or {}).get(FORMAT_KEY, b"1")
    if found != SHARD_FORMAT:
        raise ShardFormatError(
            f"{uri} holds pair shards of format {found.decode()} (such as "
            f"{posixpath.basename(path)}), written by another editcaption version; this one reads format "
            f"{SHARD_FORMAT.decode()} (candidates and scores as typed columns, no longer JSON). Start a fresh "
            "output folder: resuming or finalizing this one would mis-read its pairs."
        )
    return shard


def committed_shards(uri: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Paths of the committed shards under `uri`, after removing leftovers of killed writes."""
    fs, root = open_fs(uri, storage_options)
    # Workers wrote the shards: a listing this process cached earlier (fsspec reuses filesystem objects,
    # and object-store ones keep listings) would miss them, and the summary would count no pairs.
    fs.invalidate_cache(root)
    if not fs.exists(root):
        return []
    names = fs.ls(root, detail=False)
    for path in names:
        if posixpath.basename(path).startswith(TMP_PREFIX):
            fs.rm(path)
    return sorted(p for p in names if posixpath.basename(p).startswith(SHARD_PREFIX))


def done_pair_ids(uri: str, storage_options: dict[str, Any] | None = None) -> set[str]:
    """Pair ids already committed under `uri` (reads only the `pair_id` column)."""
    fs, _ = open_fs(uri, storage_options)
    done: set[str] = set()
    for path in committed_shards(uri, storage_options):
        with fs.open(path, "rb") as f:
            done.update(_open_shard(f, path, uri).read(columns=["pair_id"]).column("pair_id").to_pylist())
    return done


def iter_committed(
    uri: str, columns: list[str] | None = None, storage_options: dict[str, Any] | None = None
) -> Iterable[dict[str, Any]]:
    """Every committed pair row once, shard by shard (a retried write can never show a pair twice)."""
    fs, _ = open_fs(uri, storage_options)
    seen: set[str] = set()
    for path in committed_shards(uri, storage_options):
        with fs.open(path, "rb") as f:
            for batch in _open_shard(f, path, uri).iter_batches(columns=columns, batch_size=256):
                for row in batch.to_pylist():
                    if row["pair_id"] not in seen:
                        seen.add(row["pair_id"])
                        yield row
