"""Review tasks from the synthesis job's review queue or from any pair dataset.

A synthesis output folder (or its `review_queue.parquet`) gives every kind: refine shows the best
candidate (the first parsed one when none was scored) with all candidates' scores, prefer puts the best candidate against the best different one
(A/B order drawn from the pair id, so position carries no signal), judge asks about the best one. A pair
dataset (any layout `editcaption.io` reads) gives refine and judge tasks on its reference
instructions. Images are stored with each task, or, with `data_dir`, referenced by their path inside
the folder the server will serve from.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from editcaption.prompts.scoring import instruction_votes, score_rank
from editcaption.review.seed import judge_item_key
from editcaption.review.store import NewItem, Store
from editcaption.review.tasks import TASK_KINDS

QUEUE_FILE = "review_queue.parquet"
_QUEUE_COLUMNS = {"pair_id", "source", "target", "best_instruction", "candidates", "scores"}


@dataclass
class ImportSummary:
    items: int = 0
    new_items: int = 0
    assignments: int = 0
    skipped: Counter = field(default_factory=Counter)


def import_tasks(
    store: Store,
    source: str | Path,
    kind: str,
    *,
    project: str,
    annotators: list[str],
    assign: int = 1,
    benchmark: str | None = None,
    model: str | None = None,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    actor: str | None = None,
) -> ImportSummary:
    """Add `kind` tasks from `source` to the store and give each to `assign` of `annotators`; the
    store's audit log records who (`actor`, default the local account) imported how many items."""
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task kind {kind!r}; kinds: {', '.join(TASK_KINDS)}")
    if not annotators:
        raise ValueError("no annotators to assign to: create accounts first (`editcaption review user add`)")
    summary = ImportSummary()
    queue = review_queue_path(source)
    if queue is not None:
        items = _from_queue(queue, kind, project, benchmark or project, summary.skipped)
    else:
        items = _from_pairs(str(source), kind, project, benchmark, model, data_dir, summary.skipped)
    ids: list[int] = []
    for batch in _chunks(items, 200, limit):
        new_ids, added = store.add_items(batch)
        ids += new_ids
        summary.new_items += added
    summary.items = len(ids)
    summary.assignments = store.assign(ids, annotators, assign) if ids else 0
    store.record(
        "import",
        actor=actor,
        target=project,
        rows=summary.items,
        detail={
            "kind": kind,
            "source": str(source),
            "new_items": summary.new_items,
            "assignments": summary.assignments,
            "skipped": dict(summary.skipped),
        },
    )
    return summary


def review_queue_path(source: str | Path) -> Path | None:
    """The review queue file `source` names (a synthesis output folder or the file), or None."""
    path = Path(source)
    if path.is_dir() and (path / QUEUE_FILE).is_file():
        return path / QUEUE_FILE
    if path.is_file() and path.suffix == ".parquet" and set(pq.read_schema(path).names) >= _QUEUE_COLUMNS:
        return path
    return None


def _from_queue(path: Path, kind: str, project: str, benchmark: str, skipped: Counter) -> Iterator[NewItem]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=64):
        for row in batch.to_pylist():
            candidates = _scored_candidates(row)
            # no best when nothing scored (e.g. unparsable scorer replies): a person reads the first candidate
            best = row["best_instruction"] or (candidates[0]["instruction"] if candidates else None)
            if not best:
                skipped["no_parsed_candidate"] += 1
                continue
            annotator = candidates[0]["model"] if candidates else None
            if kind == "refine":
                payload: dict[str, Any] = {
                    "instruction": best,
                    "candidates": candidates,
                    "reasons": row.get("review_reasons") or [],
                    "reference": row.get("reference_instruction"),
                    "model": annotator,
                    "overall": row.get("best_overall"),
                }
            elif kind == "prefer":
                others = [c["instruction"] for c in candidates if c["instruction"] != best]
                if not others:
                    skipped["fewer_than_two_instructions"] += 1
                    continue
                first, second = (best, others[0]) if _coin(row["pair_id"]) else (others[0], best)
                payload = {"instruction_a": first, "instruction_b": second, "model": annotator}
            else:
                payload = {"instruction": best, "model": annotator or "unknown", "benchmark": benchmark}
            yield NewItem(
                project=project,
                kind=kind,
                pair_id=row["pair_id"],
                key=judge_item_key(row["pair_id"], payload["model"], best) if kind == "judge" else None,
                source=row["source"],
                target=row["target"],
                payload=payload,
            )


def _scored_candidates(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Parsed candidates with their scores, best first by synthesis's rule (`score_rank`), unscored last."""
    scores = {s["candidate_id"]: s for s in row["scores"] or []}
    parsed = [c for c in row["candidates"] or [] if c["instruction"]]
    votes = instruction_votes(parsed)
    ranked = sorted(
        parsed,
        key=lambda c: score_rank(scores.get(c["candidate_id"]), votes[c["candidate_id"]]),
        reverse=True,
    )
    out = []
    for c in ranked:
        s = scores.get(c["candidate_id"], {})
        out.append(
            {
                "candidate_id": c["candidate_id"],
                "instruction": c["instruction"],
                "model": c["model"],
                "semantic_consistency": _round(s.get("semantic_consistency")),
                "perceptual_quality": _round(s.get("perceptual_quality")),
                "overall": _round(s.get("overall")),
            }
        )
    return out


def _from_pairs(
    uri: str,
    kind: str,
    project: str,
    benchmark: str | None,
    model: str | None,
    data_dir: str | Path | None,
    skipped: Counter,
) -> Iterator[NewItem]:
    from editcaption.io import read_pairs
    from editcaption.ray_setup import init_ray

    if kind == "prefer":
        raise ValueError("prefer tasks need two instructions per pair: import them from a synthesis output")
    init_ray()
    root = Path(data_dir).resolve() if data_dir is not None else None
    for row in read_pairs(uri).iter_rows():
        if row["quarantine_reason"]:
            skipped[f"quarantined:{row['quarantine_reason']}"] += 1
            continue
        instruction = row["reference_instruction"]
        if not instruction:
            skipped["no_reference_instruction"] += 1
            continue
        source_path, target_path = _inside(root, row["source_uri"]), _inside(root, row["target_uri"])
        by_path = source_path is not None and target_path is not None
        if kind == "refine":
            payload: dict[str, Any] = {"instruction": instruction, "reference": instruction}
        else:
            payload = {
                "instruction": instruction,
                "model": model or row["dataset"] or "reference",
                "benchmark": benchmark or row["dataset"] or project,
            }
        yield NewItem(
            project=project,
            kind=kind,
            pair_id=row["pair_id"],
            key=judge_item_key(row["pair_id"], payload["model"], instruction) if kind == "judge" else None,
            source=None if by_path else row["source"],
            target=None if by_path else row["target"],
            source_path=source_path if by_path else None,
            target_path=target_path if by_path else None,
            payload=payload,
        )


def _inside(root: Path | None, uri: str | None) -> str | None:
    """`uri` relative to `root` when it is a local file inside it."""
    if root is None or not uri or "://" in uri.removeprefix("file://"):
        return None
    path = Path(uri.removeprefix("file://")).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else None


def _chunks(items: Iterator[NewItem], size: int, limit: int | None) -> Iterator[list[NewItem]]:
    batch: list[NewItem] = []
    for n, item in enumerate(items):
        if limit is not None and n >= limit:
            break
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _coin(pair_id: str) -> bool:
    return hashlib.sha256(pair_id.encode()).digest()[0] % 2 == 0


def _round(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None
