"""Plumbing shared by the readers: a reference to one pair, fetching its bytes, and the Ray map.

A reader lists files on the driver (or parses records inside Ray tasks) into `PairRef`s; `PairRef.load`
runs in a Ray task, fetches whatever bytes are not inline and returns one pair row, quarantined on any
problem.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from editcaption.io.fs import read_bytes
from editcaption.io.pairs import BATCH_SIZE, TASK_CPUS, ok_row, quarantined_row, rows_to_table
from editcaption.ray_setup import local_task_concurrency
from editcaption.schema import pair_id_for_uris

if TYPE_CHECKING:
    from ray.data import Dataset

# Blocks made from a driver-side listing: enough for parallel loading, not so many that scheduling dominates.
MAX_LISTING_BLOCKS = 1000
TEXT_FIELDS = ("reference_instruction", "inverse_instruction", "category")


class PairProblem(Exception):
    """One pair cannot be used; `reason` is a quarantine reason and `detail` says which file and why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass
class PairRef:
    """Where a pair's images are (URIs) or the images themselves, and what its dataset says about it.

    `problem_reason`/`problem_detail` mark a pair already known to be unusable when it was listed or
    parsed (a missing counterpart, a malformed record); loading then yields it quarantined.
    """

    dataset: str
    pair_id: str | None = None
    source_uri: str | None = None
    target_uri: str | None = None
    source: bytes | None = None
    target: bytes | None = None
    reference_instruction: str | None = None
    inverse_instruction: str | None = None
    category: str | None = None
    problem_reason: str | None = None
    problem_detail: str | None = None

    def failed(self, reason: str, detail: str) -> PairRef:
        return dataclasses.replace(self, problem_reason=reason, problem_detail=detail)

    def quarantined(self, reason: str, detail: str) -> dict[str, Any]:
        return quarantined_row(
            reason,
            detail,
            pair_id=self.pair_id,
            source_uri=self.source_uri,
            target_uri=self.target_uri,
            dataset=self.dataset,
        )

    def load(self, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
        """The pair row: bytes fetched where not inline; quarantined if anything is missing or unreadable."""
        if self.problem_reason is not None:
            return self.quarantined(self.problem_reason, self.problem_detail or "")
        try:
            source = (
                self.source if self.source is not None else fetch(self.source_uri, "source", storage_options)
            )
            target = (
                self.target if self.target is not None else fetch(self.target_uri, "target", storage_options)
            )
        except PairProblem as exc:
            return self.quarantined(exc.reason, exc.detail)
        fields = {name: getattr(self, name) for name in TEXT_FIELDS}
        return ok_row(
            source,
            target,
            pair_id=self.pair_id,
            source_uri=self.source_uri,
            target_uri=self.target_uri,
            dataset=self.dataset,
            **fields,
        )


def fetch(uri: str | None, role: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """All bytes at `uri`, or PairProblem: `missing_file` when absent, `read_error` when unreadable."""
    if uri is None:
        raise PairProblem("missing_file", f"{role}: no file for this pair")
    try:
        return read_bytes(uri, storage_options)
    except FileNotFoundError as exc:
        raise PairProblem("missing_file", f"{role}: {uri} does not exist") from exc
    except IsADirectoryError as exc:
        raise PairProblem("read_error", f"{role}: {uri} is a directory") from exc
    except Exception as exc:  # storage backends raise their own types (permissions, timeouts, ...)
        raise PairProblem("read_error", f"{role}: {uri}: {type(exc).__name__}: {exc}") from exc


def text_fields(record: dict[str, Any], where: str, **names: str) -> dict[str, str | None]:
    """Pick optional string fields, renamed `record key -> contract field`; a non-string is a bad record."""
    out: dict[str, str | None] = {}
    for key, field in names.items():
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            raise PairProblem("bad_record", f"{where}: {key!r} must be a string, got {type(value).__name__}")
        out[field] = value
    return out


def _fallback_id(item: dict[str, Any]) -> str:
    if isinstance(item.get("pair_id"), str):
        return item["pair_id"]
    return pair_id_for_uris(*(f"{k}={v}" for k, v in sorted(item.items()) if isinstance(v, str)))


def map_pairs(
    items: Dataset | list[dict[str, Any]],
    fn: Callable[[dict[str, Any]], Iterable[dict[str, Any]]],
    *,
    dataset: str,
    batch_size: int = BATCH_SIZE,
) -> Dataset:
    """Run `fn` (one input item -> pair rows) in Ray tasks, `batch_size` items per call.

    Output blocks hold at most BATCH_SIZE pair rows, so an item that yields many pairs (a shard, a
    Parquet file) streams out in small blocks. `fn` handles its pairs' problems itself; an exception
    escaping it still becomes one quarantined `read_error` row instead of failing the whole read.
    """
    import ray.data

    if isinstance(items, list):
        blocks = max(1, min(MAX_LISTING_BLOCKS, math.ceil(len(items) / batch_size)))
        items = ray.data.from_items(items, override_num_blocks=blocks)

    def per_batch(table: pa.Table) -> Iterator[pa.Table]:
        rows: list[dict[str, Any]] = []
        for item in table.to_pylist():
            for row in _guarded(fn, item, dataset):
                rows.append(row)
                if len(rows) >= BATCH_SIZE:
                    yield rows_to_table(rows)
                    rows = []
        if rows:
            yield rows_to_table(rows)

    return items.map_batches(
        per_batch,
        batch_format="pyarrow",
        batch_size=batch_size,
        num_cpus=TASK_CPUS,
        concurrency=local_task_concurrency(),
    )


def _guarded(
    fn: Callable[[dict[str, Any]], Iterable[dict[str, Any]]], item: dict[str, Any], dataset: str
) -> Iterator[dict[str, Any]]:
    try:
        yield from fn(item)
    except Exception as exc:  # one unreadable item must not fail the read
        yield quarantined_row(
            "read_error",
            f"{type(exc).__name__}: {exc}",
            pair_id=_fallback_id(item),
            source_uri=item.get("source_uri"),
            target_uri=item.get("target_uri"),
            dataset=dataset,
        )


class PairReader(ABC):
    """A pair format's reader: where to read, at most how many pairs, and the fsspec options that
    every Ray task opening files under `uri` uses again."""

    def __init__(self, uri: str, *, limit: int | None = None, storage_options: dict[str, Any] | None = None):
        self.uri = uri
        self.limit = limit
        self.storage_options = storage_options

    @abstractmethod
    def read(self) -> Dataset:
        """Pair rows (see `io.pairs`), bad pairs as quarantined rows."""
