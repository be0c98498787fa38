"""Fill a store with answered tasks through the store API, for tests and demos of what reads it.

`seed_judgments` turns `Judgment` records whose judge is `human:<name>` into judge items, one
assignment per annotator and the stored verdict, exactly as if the annotators had clicked them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from editcaption.review.store import NewItem, Store
from editcaption.schema import Judgment


def judge_item_key(pair_id: str, model: str, instruction: str) -> str:
    """One judge item per (pair, captioner, instruction) within a benchmark."""
    digest = hashlib.sha256(f"{model}\n{instruction}".encode()).hexdigest()[:16]
    return f"{pair_id}:{digest}"


def seed_judgments(store_url: str, records: Iterable[Judgment]) -> int:
    """Store each human judgment as an answered judge task (project = benchmark); returns how many.

    Annotator accounts are created without a usable password when missing. A judgment whose judge is
    not `human:<name>` is refused.
    """
    records = list(records)
    with Store(store_url) as store:
        for record in records:
            if not record.judge.startswith("human:"):
                raise ValueError(f"judge {record.judge!r} is not a human (`human:<annotator>`)")
            if record.verdict is None:
                raise ValueError(f"pair {record.pair_id}: a human judgment needs a verdict")
            name = record.judge.removeprefix("human:")
            uid = store.ensure_user(name)
            (item_id,), _ = store.add_items(
                [
                    NewItem(
                        project=record.benchmark,
                        kind="judge",
                        pair_id=record.pair_id,
                        key=judge_item_key(record.pair_id, record.model, record.instruction),
                        payload={
                            "instruction": record.instruction,
                            "model": record.model,
                            "benchmark": record.benchmark,
                        },
                    )
                ]
            )
            store.assign_to(item_id, uid)
            aid = store.assignment_id(item_id, uid)
            store.submit(uid, aid, {"verdict": record.verdict, "error_types": list(record.error_types)})
    return len(records)
