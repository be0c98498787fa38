"""The pair-row contract every reader yields, and the steps that check, split and write pair rows.

A pair row is an `EditPair` plus `quarantine_reason` / `quarantine_detail`. Readers never drop a
pair they could not read: they emit it quarantined (uris and pair_id kept, image bytes possibly b""),
so every input ends up counted as kept, filtered or quarantined.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from editcaption.images import ImagePolicy, ImageRejected, check_pair
from editcaption.io.fs import arrow_fs, open_fs
from editcaption.ray_setup import local_task_concurrency
from editcaption.schema import QUARANTINE_REASONS, EditPair, QuarantinedPair, pair_id_for, pair_id_for_uris

if TYPE_CHECKING:
    from ray.data import Dataset

PAIR_ROW_SCHEMA: pa.Schema = pa.schema(
    [
        *EditPair.arrow_schema(),
        pa.field("quarantine_reason", pa.string(), nullable=True),
        pa.field("quarantine_detail", pa.string(), nullable=True),
    ]
)

# Logical CPUs per Ray task: small, so that I/O and checks are never starved behind a pipeline's actors.
TASK_CPUS = 0.25
# Pairs per batch: each holds two encoded images, so batches stay a few MB, not the default 1024 rows.
BATCH_SIZE = 16


def ok_row(
    source: bytes, target: bytes, *, pair_id: str | None = None, **fields: str | None
) -> dict[str, Any]:
    """A readable pair; `pair_id` defaults to the hash of both images' bytes."""
    pair = EditPair(pair_id=pair_id or pair_id_for(source, target), source=source, target=target, **fields)
    return {**pair.to_row(), "quarantine_reason": None, "quarantine_detail": None}


def quarantined_row(
    reason: str,
    detail: str,
    *,
    pair_id: str | None = None,
    source: bytes = b"",
    target: bytes = b"",
    **fields: str | None,
) -> dict[str, Any]:
    """A pair that cannot be used; `pair_id` defaults to a hash of its URIs."""
    if reason not in QUARANTINE_REASONS:
        raise ValueError(f"unknown quarantine reason {reason!r}")
    pair_id = pair_id or pair_id_for_uris(fields.get("source_uri"), fields.get("target_uri"))
    pair = EditPair(pair_id=pair_id, source=source, target=target, **fields)
    return {**pair.to_row(), "quarantine_reason": reason, "quarantine_detail": detail}


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=PAIR_ROW_SCHEMA)


def to_quarantined_records(rows: Iterable[dict[str, Any]]) -> list[QuarantinedPair]:
    """The quarantined rows among `rows`, as contract records (image bytes left out)."""
    return [
        QuarantinedPair(
            pair_id=row["pair_id"],
            reason=row["quarantine_reason"],
            detail=row["quarantine_detail"] or "",
            source_uri=row.get("source_uri"),
            target_uri=row.get("target_uri"),
            dataset=row.get("dataset"),
        )
        for row in rows
        if row.get("quarantine_reason") is not None
    ]


def _validate_batch(table: pa.Table, policy: ImagePolicy) -> pa.Table:
    rows = table.to_pylist()
    for row in rows:
        if row["quarantine_reason"] is not None:
            continue
        try:
            check_pair(row["source"], row["target"], policy)
        except ImageRejected as exc:
            reason, detail = exc.reason, exc.detail
        except Exception as exc:  # a decoder failing in a way Pillow does not document: still one pair
            reason, detail = "not_an_image", f"decoder raised {type(exc).__name__}: {exc}"
        else:
            continue
        row.update(source=b"", target=b"", quarantine_reason=reason, quarantine_detail=detail)
    return rows_to_table(rows)


def validate_pairs(ds: Dataset, policy: ImagePolicy, *, batch_size: int = BATCH_SIZE) -> Dataset:
    """Decode every ok pair under `policy`; pairs it refuses become quarantined rows, bytes dropped."""
    return ds.map_batches(
        _validate_batch,
        fn_kwargs={"policy": policy},
        batch_format="pyarrow",
        batch_size=batch_size,
        num_cpus=TASK_CPUS,
        concurrency=local_task_concurrency(),
    )


def split_quarantine(ds: Dataset) -> tuple[Dataset, Dataset]:
    """(ok rows, quarantined rows). Both re-run `ds`'s plan: materialize it first if that is costly."""
    from ray.data.expressions import col

    reason = col("quarantine_reason")
    return ds.filter(expr=reason.is_null()), ds.filter(expr=reason.is_not_null())


def write_parquet(
    ds: Dataset,
    out_dir: str,
    *,
    schema: pa.Schema = PAIR_ROW_SCHEMA,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Write `ds` as Parquet shards under `out_dir` (a local path or object-store URI).

    Shards already under `out_dir` are replaced, so a rerun never leaves a pair written twice.
    Ray writes no file for an empty dataset; then one empty file with `schema` is written, so that
    `out_dir` always exists and reads back as zero rows (e.g. "nothing was quarantined").
    """
    from ray.data import SaveMode

    fs, path = open_fs(out_dir, storage_options)
    ds.write_parquet(
        path, filesystem=arrow_fs(fs), ray_remote_args={"num_cpus": TASK_CPUS}, mode=SaveMode.OVERWRITE
    )
    if not fs.exists(path) or not any(p.endswith(".parquet") for p in fs.find(path)):
        fs.makedirs(path, exist_ok=True)
        with fs.open(posixpath.join(path, "empty.parquet"), "wb") as stream:
            pq.write_table(schema.empty_table(), stream)
