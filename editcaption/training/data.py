"""Training data: contract records in, TRL's vision conversational rows out.

SFT reads `SFTRecord` Parquet (e.g. a synthesis run's `sft.parquet`), a TRL export (`images` +
`messages`), a synthesis output folder, or a folder of pairs with reference instructions; DPO reads
`PreferencePair` Parquet, or the rule-written hard negatives of a reference folder. Both are rewritten
with the project's instruction prompt (`prompts/instruction.py`), the exact conversation the captioner
is served with, so the model is never trained on one prompt and asked with another. The driver
prepares one Parquet file with Hugging Face `Image` features; every worker loads it with `datasets`.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, List, Value
from datasets import Image as HFImage

from editcaption.checks.augment import mirrored_record
from editcaption.checks.hard_negatives import hard_negatives, mix_preferences
from editcaption.io.exports import upright_bytes
from editcaption.io.fs import open_fs
from editcaption.prompts.instruction import instruction_messages

log = logging.getLogger(__name__)

_MESSAGE = {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
SFT_FEATURES = Features(
    {
        "pair_id": Value("string"),
        "origin": Value("string"),
        "images": List(HFImage()),
        "prompt": List(_MESSAGE),
        "completion": List(_MESSAGE),
    }
)
DPO_FEATURES = Features(
    {
        "pair_id": Value("string"),
        "origin": Value("string"),
        "error_type": Value("string"),
        "severity": Value("string"),
        "images": List(HFImage()),
        "prompt": List(_MESSAGE),
        "chosen": List(_MESSAGE),
        "rejected": List(_MESSAGE),
    }
)
_RECORD_COLUMNS = {"pair_id", "source", "target", "instruction"}
_TRL_COLUMNS = {"images", "messages"}
_PREFERENCE_COLUMNS = {"pair_id", "source", "target", "chosen", "rejected", "error_type", "severity"}
# A synthesis output folder holds both; the records are preferred (augmentation needs their origin).
_SFT_IN_FOLDER = ("sft.parquet", "exports/trl/train.parquet")
_ROW_GROUP = 64
_META = "meta.json"


class TrainingDataError(ValueError):
    """Training data that is missing, empty or not in a format the job reads."""


def read_sft_records(uri: str) -> list[dict[str, Any]]:
    """SFT records (`pair_id`, `source`, `target`, `instruction`, `origin`) from any supported input."""
    if _is_pair_folder(uri):
        return read_reference_pairs(uri)
    fs, path = _resolve(uri, _SFT_IN_FOLDER, "SFT records")
    table = _read_table(fs, path, uri)
    columns = set(table.column_names)
    if columns >= _RECORD_COLUMNS:
        rows = table.to_pylist()
        return [
            {
                "pair_id": r["pair_id"],
                "source": r["source"],
                "target": r["target"],
                "instruction": r["instruction"],
                "origin": r.get("origin") or "synthesis",
            }
            for r in rows
        ]
    if columns >= _TRL_COLUMNS:
        return [_record_from_trl(r, i, uri) for i, r in enumerate(table.to_pylist())]
    raise TrainingDataError(
        f"input: {uri} has columns {sorted(columns)}; SFT needs SFTRecord columns "
        f"{sorted(_RECORD_COLUMNS)} or a TRL export's {sorted(_TRL_COLUMNS)}"
    )


def read_conversation_rows(uri: str) -> list[dict[str, Any]]:
    """TRL prompt-completion rows from a TRL export whose conversations are kept as they are: the
    messages before the last (an assistant reply) are the prompt, with every image of the row. This
    trains a model on any prompt the project asks with (a scorer on the EditScore prompts, a judge)."""
    fs, path = _resolve(uri, _SFT_IN_FOLDER[1:], "conversations")
    table = _read_table(fs, path, uri)
    if not set(table.column_names) >= _TRL_COLUMNS:
        raise TrainingDataError(
            f"input: {uri} has columns {sorted(table.column_names)}; prompt 'from_data' needs a TRL "
            f"export's {sorted(_TRL_COLUMNS)}"
        )
    rows = []
    for i, row in enumerate(table.to_pylist()):
        messages, images = row["messages"] or [], row["images"] or []
        parts = [p for m in messages for p in m["content"] if p.get("type") == "image"]
        if len(messages) < 2 or messages[-1]["role"] != "assistant" or len(parts) != len(images):
            raise TrainingDataError(
                f"input: {uri} row {i} needs a prompt, a last assistant message and one image per image "
                f"part ({len(messages)} message(s), {len(parts)} image part(s), {len(images)} image(s))"
            )
        rows.append(
            {
                "pair_id": row.get("pair_id") or f"row-{i}",
                "origin": "synthesis",
                "images": [{"bytes": upright_bytes(bytes(im["bytes"]))[0], "path": None} for im in images],
                "prompt": messages[:-1],
                "completion": messages[-1:],
            }
        )
    return rows


def read_preference_pairs(uri: str) -> list[dict[str, Any]]:
    """`PreferencePair` rows from a Parquet file or every Parquet file of a folder; a folder of pairs
    with reference instructions gives every rule-written hard negative of each reference instead."""
    if _is_pair_folder(uri):
        return [
            n
            for r in read_reference_pairs(uri)
            for n in hard_negatives(r["pair_id"], r["source"], r["target"], r["instruction"])
        ]
    fs, path = _resolve(uri, (), "preference pairs")
    files = [path] if fs.isfile(path) else sorted(fs.glob(posixpath.join(path, "*.parquet")))
    if not files:
        raise TrainingDataError(f"input: no Parquet files of preference pairs in {uri}")
    rows = []
    for file in files:
        table = _read_table(fs, file, uri)
        missing = _PREFERENCE_COLUMNS - set(table.column_names)
        if missing:
            raise TrainingDataError(f"input: {file} lacks PreferencePair column(s) {sorted(missing)}")
        rows += table.to_pylist()
    return rows


def read_reference_pairs(uri: str) -> list[dict[str, Any]]:
    """Records (origin `benchmark`) from `<id>/source.*`, `<id>/target.*` and `<id>/meta.json` folders
    whose meta holds the pair's reference `instruction` (e.g. the bundled sample pairs)."""
    fs, root = open_fs(uri)
    records = []
    for meta in sorted(fs.glob(posixpath.join(root, "*", _META))):
        folder = posixpath.dirname(meta)
        instruction = json.loads(fs.cat_file(meta)).get("instruction")
        images = {r: sorted(fs.glob(posixpath.join(folder, f"{r}.*"))) for r in ("source", "target")}
        if not instruction or not all(images.values()):
            raise TrainingDataError(
                f"input: {folder} needs source.*, target.* and an `instruction` in {_META}"
            )
        records.append(
            {
                "pair_id": posixpath.basename(folder),
                "source": fs.cat_file(images["source"][0]),
                "target": fs.cat_file(images["target"][0]),
                "instruction": instruction,
                "origin": "benchmark",
            }
        )
    return records


def augment_mirrored(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The records followed by the mirrored copy of each one that allows it; returns (rows, added)."""
    mirrored = [m for m in (mirrored_record(r) for r in records) if m is not None]
    return records + mirrored, len(mirrored)


def add_hard_negatives(
    pairs: list[dict[str, Any]], ratio: float, seed: int
) -> tuple[list[dict[str, Any]], int]:
    """The pairs mixed with rule-written hard negatives of their chosen instructions, `ratio` per pair.

    Negatives are written once per distinct (pair, chosen instruction); returns (rows, added).
    """
    if ratio <= 0:
        return pairs, 0
    seen, negatives = set(), []
    for p in pairs:
        key = (p["pair_id"], p["chosen"])
        if key in seen:
            continue
        seen.add(key)
        negatives += hard_negatives(
            p["pair_id"], bytes(p["source"]), bytes(p["target"]), p["chosen"], seed=seed
        )
    mixed = mix_preferences(pairs, negatives, ratio, seed=seed)
    return mixed, len(mixed) - len(pairs)


def sft_rows(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """TRL prompt-completion rows: the loss is on the completion (the instruction) only."""
    for r in records:
        yield {
            "pair_id": r["pair_id"],
            "origin": r.get("origin") or "synthesis",
            "images": _images(r),
            "prompt": instruction_messages(),
            "completion": [_assistant(r["instruction"])],
        }


def preference_rows(pairs: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """TRL vision preference rows, with the rejected instruction's error labels for HAE-DPO."""
    for p in pairs:
        yield {
            "pair_id": p["pair_id"],
            "origin": p.get("origin") or "human",
            "error_type": p["error_type"],
            "severity": p["severity"],
            "images": _images(p),
            "prompt": instruction_messages(),
            "chosen": [_assistant(p["chosen"])],
            "rejected": [_assistant(p["rejected"])],
        }


def write_rows(rows: Iterable[dict[str, Any]], features: Features, uri: str) -> int:
    """Write rows as one Parquet file that `datasets` reads back with PIL images; returns the count."""
    fs, path = open_fs(uri)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    schema, count, batch = features.arrow_schema, 0, []
    with fs.open(path, "wb") as stream, pq.ParquetWriter(stream, schema) as writer:
        for row in rows:
            batch.append(row)
            if len(batch) == _ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count, batch = count + len(batch), []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            count += len(batch)
    if count == 0:
        raise TrainingDataError("input: no training rows (the dataset is empty)")
    return count


def load_rows(uri: str, cache_dir: str) -> Any:
    """The prepared rows as a `datasets.Dataset` (images decode to PIL on access)."""
    from datasets import Dataset

    fs, path = open_fs(uri)
    local = path
    if "://" in uri:
        local = posixpath.join(cache_dir, posixpath.basename(path))
        fs.get(path, local)
    return Dataset.from_parquet(local, cache_dir=cache_dir)


def _assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _images(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Source then target, upright RGB bytes, as HF `Image` values."""
    return [{"bytes": upright_bytes(bytes(row[k]))[0], "path": None} for k in ("source", "target")]


def _record_from_trl(row: dict[str, Any], index: int, uri: str) -> dict[str, Any]:
    images = row["images"] or []
    answers = [m for m in row["messages"] if m["role"] == "assistant"]
    if len(images) != 2 or not answers:
        raise TrainingDataError(
            f"input: {uri} row {index} needs two images and an assistant message "
            f"(has {len(images)} image(s), {len(answers)} assistant message(s))"
        )
    text = "".join(p.get("text") or "" for p in answers[-1]["content"] if p.get("type") == "text")
    return {
        "pair_id": row.get("pair_id") or f"row-{index}",
        "source": images[0]["bytes"],
        "target": images[1]["bytes"],
        "instruction": text,
        "origin": "synthesis",
    }


def _is_pair_folder(uri: str) -> bool:
    fs, path = open_fs(uri)
    return fs.isdir(path) and bool(fs.glob(posixpath.join(path, "*", _META)))


def _resolve(uri: str, in_folder: tuple[str, ...], what: str) -> tuple[Any, str]:
    fs, path = open_fs(uri)
    if not fs.exists(path):
        raise TrainingDataError(f"input: no {what} at {uri} (file or folder not found)")
    if fs.isdir(path) and in_folder:
        for name in in_folder:
            candidate = posixpath.join(path, name)
            if fs.isfile(candidate):
                return fs, candidate
        raise TrainingDataError(f"input: {uri} is a folder without {' or '.join(in_folder)}")
    return fs, path


def _read_table(fs: Any, path: str, uri: str) -> pa.Table:
    try:
        with fs.open(path, "rb") as f:
            return pq.read_table(f)
    except (pa.ArrowInvalid, OSError) as e:
        raise TrainingDataError(f"input: {path} (from {uri}) is not readable Parquet: {e}") from e
