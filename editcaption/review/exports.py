"""Answers in the store → contract records: refined SFT records, labelled preference pairs, judgments.

Every answered assignment is exported as it is stored; the only aggregation is for preferences, where
the annotators of one pair vote: the majority's choice is exported with its share as `agreement`, and
pairs whose vote is tied are left out (and counted) rather than decided by a coin.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from editcaption.review.paths import resolve_image
from editcaption.review.store import DoneRow, Store
from editcaption.schema import ERROR_TYPES, SEVERITIES, Judgment, PreferencePair, Record, SFTRecord

ExportKind = Literal["sft", "preference", "judgment"]
EXPORT_KINDS = ("sft", "preference", "judgment")


@dataclass
class ExportSummary:
    kind: str
    path: str
    rows: int
    skipped: dict[str, int]


def judgments(store_url: str, project: str | None = None) -> list[Judgment]:
    """Every human verdict in the store as `Judgment` records, `judge` = `human:<annotator>`."""
    with Store(store_url, create=False) as store:
        return list(_judgments(store, project))


def sft_records(
    store: Store, data_dir: str | Path | None = None, project: str | None = None
) -> Iterator[SFTRecord]:
    """Each accepted refinement as an SFT record (rejected pairs are not training data)."""
    for row in store.done("refine", project):
        if row.result["action"] != "accept":
            continue
        source, target = item_images(store, row.item_id, row.pair_id, data_dir)
        yield SFTRecord(
            pair_id=row.pair_id,
            source=source,
            target=target,
            instruction=row.result["instruction"],
            origin="human",
            model=f"human:{row.annotator}",
            overall=None,
        )


def preference_pairs(
    store: Store,
    data_dir: str | Path | None = None,
    project: str | None = None,
    skipped: Counter | None = None,
) -> Iterator[PreferencePair]:
    """One pair per prefer item: the annotators' majority choice, its error label and their agreement."""
    for rows in _by_item(store.done("prefer", project)):
        votes = Counter(r.result["chosen"] for r in rows)
        (top, top_n), *rest = votes.most_common()
        if rest and rest[0][1] == top_n:
            if skipped is not None:
                skipped["tied_vote"] += 1
            continue
        majority = [r for r in rows if r.result["chosen"] == top]
        payload = rows[0].payload
        source, target = item_images(store, rows[0].item_id, rows[0].pair_id, data_dir)
        yield PreferencePair(
            pair_id=rows[0].pair_id,
            source=source,
            target=target,
            chosen=payload[f"instruction_{top}"],
            rejected=payload["instruction_b" if top == "a" else "instruction_a"],
            error_type=_mode([r.result["error_type"] for r in majority], ERROR_TYPES),
            severity=_mode([r.result["severity"] for r in majority], SEVERITIES[::-1]),
            origin="human",
            annotators=[r.annotator for r in rows],
            agreement=top_n / len(rows),
        )


def export(
    store_url: str,
    kind: ExportKind,
    out: str | Path,
    data_dir: str | Path | None = None,
    project: str | None = None,
    actor: str | None = None,
    address: str | None = None,
) -> ExportSummary:
    """Write one kind of answers to `out`: `.parquet` or `.jsonl`; the store's audit log records who
    (`actor`, default the local account; `address` for the web app) exported how many rows.

    SFT Parquet is TRL's format (`images` + `messages`, via `write_trl_parquet`); the other Parquet
    files use the contract's Arrow schema. JSONL rows are the contract fields, images as base64.
    """
    from editcaption.io.exports import write_trl_parquet

    if kind not in EXPORT_KINDS:
        raise ValueError(f"unknown export kind {kind!r}; kinds: {', '.join(EXPORT_KINDS)}")
    out = Path(out)
    if out.suffix not in (".parquet", ".jsonl"):
        raise ValueError(f"--out must end in .parquet or .jsonl, got {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    skipped: Counter = Counter()
    with Store(store_url, create=False) as store:
        if kind == "sft":
            records: Iterator[Record] = sft_records(store, data_dir, project)
        elif kind == "preference":
            records = preference_pairs(store, data_dir, project, skipped)
        else:
            records = _judgments(store, project)
        if kind == "sft" and out.suffix == ".parquet":
            rows = write_trl_parquet((r.to_row() for r in records), str(out))
        else:
            model = {"sft": SFTRecord, "preference": PreferencePair, "judgment": Judgment}[kind]
            rows = _write(records, model, out)
        store.record(
            "export",
            actor=actor,
            target=kind,
            address=address,
            rows=rows,
            detail={"format": out.suffix[1:], "project": project, "file": out.name, "skipped": dict(skipped)},
        )
    return ExportSummary(kind=kind, path=str(out), rows=rows, skipped=dict(skipped))


def _judgments(store: Store, project: str | None) -> Iterator[Judgment]:
    for row in store.done("judge", project):
        yield Judgment(
            pair_id=row.pair_id,
            instruction=row.payload["instruction"],
            model=row.payload["model"],
            benchmark=row.payload["benchmark"],
            judge=f"human:{row.annotator}",
            verdict=row.result["verdict"],
            error_types=row.result["error_types"],
            overall=None,
        )


def _write(records: Iterator[Record], model: type[Record], out: Path) -> int:
    """Contract rows to Parquet (in row groups) or JSONL, through a temp file renamed when complete."""
    tmp, count = out.with_name(out.name + ".tmp"), 0
    if out.suffix == ".parquet":
        schema = model.arrow_schema()
        with pq.ParquetWriter(tmp, schema) as writer:
            batch: list[dict[str, Any]] = []
            for record in records:
                batch.append(record.to_row())
                if len(batch) == 256:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    count, batch = count + len(batch), []
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            count += len(batch)
    else:
        with tmp.open("w", encoding="utf-8") as f:
            for record in records:
                row = {
                    k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
                    for k, v in record.to_row().items()
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
    tmp.replace(out)
    return count


def _by_item(rows: Iterator[DoneRow]) -> Iterator[list[DoneRow]]:
    group: list[DoneRow] = []
    for row in rows:
        if group and row.item_id != group[0].item_id:
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def _mode(values: list[str], order: tuple[str, ...]) -> str:
    """The most common value; ties go to the one earliest in `order`."""
    counts = Counter(values)
    return max(counts, key=lambda v: (counts[v], -order.index(v)))


def item_images(store: Store, item_id: int, pair_id: str, data_dir: str | Path | None) -> tuple[bytes, bytes]:
    """An item's (source, target) bytes: stored ones, or read from the data folder (b"" when it has none)."""
    source, target, source_path, target_path = store.item_images(item_id)
    return _bytes(source, source_path, data_dir, pair_id), _bytes(target, target_path, data_dir, pair_id)


def _bytes(data: bytes | None, path: str | None, data_dir: str | Path | None, pair_id: str) -> bytes:
    if data is not None:
        return data
    if path is None:
        return b""
    if data_dir is None:
        raise ValueError(f"pair {pair_id}: its images are files in the data folder; pass --data DIR")
    return resolve_image(data_dir, path).read_bytes()
