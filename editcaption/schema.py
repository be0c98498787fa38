"""The records every stage exchanges, as pydantic models and the Arrow schemas derived from them.

Images travel as encoded bytes (PNG/JPEG/...), never as decoded arrays: Ray Data blocks stay small and
each stage decodes only what it needs. Every record carries the `pair_id` of the pair it is about.
"""

from __future__ import annotations

import hashlib
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

ErrorType = Literal["orientation", "viewpoint", "attribute", "other"]
Severity = Literal["minor", "major", "critical"]
Verdict = Literal["correct", "minor_error", "critical_error"]
CandidateOutcome = Literal[
    "kept",  # the pair's best candidate, and it passed the thresholds
    "below_threshold",  # the pair's best candidate, but it failed a threshold
    "not_best",  # scored, but another candidate of the pair scored higher
    "unscored",  # parsed, but none of its EditScore replies parsed
    "truncated",  # the annotator's reply was cut by max_tokens (often inside its reasoning)
    "unparsed",  # the annotator's reply held no instruction
    "engine_error",  # the annotator call failed
]
QuarantineReason = Literal[
    "missing_file",
    "empty_file",
    "read_error",
    "not_an_image",
    "truncated_image",
    "decompression_bomb",
    "too_many_pixels",
    "too_small",
    "absurd_aspect",
    "size_mismatch",
    "identical_images",
    "bad_record",
    "missing_field",
]

ERROR_TYPES: tuple[str, ...] = get_args(ErrorType)
SEVERITIES: tuple[str, ...] = get_args(Severity)
VERDICTS: tuple[str, ...] = get_args(Verdict)
QUARANTINE_REASONS: tuple[str, ...] = get_args(QuarantineReason)


class Record(BaseModel):
    """Base for contract records: unknown fields are errors, and each has an Arrow schema."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def arrow_schema(cls) -> pa.Schema:
        return pa.schema(_arrow_fields(cls))

    @classmethod
    def arrow_struct(cls) -> pa.StructType:
        """The record as one Arrow value, for columns holding records (`list[Candidate]`)."""
        return pa.struct(_arrow_fields(cls))

    def to_row(self) -> dict:
        return self.model_dump()


class EditPair(Record):
    """A (source, target) image pair, optionally with a reference instruction from its dataset."""

    pair_id: str = Field(description="Stable id: given by the dataset, or a hash of both images' bytes.")
    source: bytes = Field(description="Encoded source image, as read (EXIF and mode untouched).")
    target: bytes = Field(description="Encoded target image, as read.")
    source_uri: str | None = None
    target_uri: str | None = None
    reference_instruction: str | None = None
    inverse_instruction: str | None = None
    category: str | None = None
    dataset: str | None = None


class QuarantinedPair(Record):
    """A pair that could not be used, with the reason; it is written out, never silently dropped."""

    pair_id: str
    reason: QuarantineReason
    detail: str = Field(description="Human-readable specifics: which image, what the decoder said, sizes.")
    source_uri: str | None = None
    target_uri: str | None = None
    dataset: str | None = None


class Candidate(Record):
    """One instruction written by a VLM for a pair."""

    pair_id: str
    candidate_id: str = Field(description="`<pair_id>:<index>`, unique within a run.")
    instruction: str | None = Field(
        description="Parsed instruction; None when the reply could not be parsed."
    )
    raw_text: str = Field(description="The model's reply, verbatim.")
    model: str
    prompt_version: str
    parsed: bool
    error: str | None = Field(default=None, description="Why the engine returned no reply, if it did not.")
    parse_error: str | None = Field(
        default=None,
        description="Why a reply held no instruction (`truncated`, `no_answer`, ... from prompts/answer.py).",
    )
    finish_reason: str | None = Field(
        default=None, description="`stop` when the model ended its reply, `length` when max_tokens cut it."
    )
    outcome: CandidateOutcome | None = Field(
        default=None, description="What filtering made of it; None until the pair is decided."
    )


class Score(Record):
    """EditScore of one (source, candidate, target) triplet, on 0-10; None where replies were unparsable."""

    pair_id: str
    candidate_id: str
    scorer: str
    semantic_consistency: float | None = Field(description="SC: min(edit success, over-editing), 0-10.")
    perceptual_quality: float | None = Field(description="PQ: min(naturalness, artifacts), 0-10.")
    overall: float | None = Field(description="sqrt(SC * PQ), averaged over parsed passes.")
    num_pass: int
    num_parsed: int = Field(description="Passes whose replies parsed; the means use only these.")
    raw_replies: list[str] = Field(default_factory=list)
    reply_errors: list[str | None] = Field(
        default_factory=list,
        description="Per raw reply, why it did not parse (`truncated`, `no_json`, ...), None where it did.",
    )


class SFTRecord(Record):
    """A (source, target, instruction) triplet ready for supervised fine-tuning."""

    pair_id: str
    source: bytes
    target: bytes
    instruction: str
    origin: Literal["synthesis", "human", "benchmark", "augmentation"]
    model: str | None = Field(default=None, description="Annotator model that wrote it, if any.")
    overall: float | None = Field(default=None, description="EditScore overall of the instruction.")


class PreferencePair(Record):
    """Two instructions for one pair: the chosen one is better; the rejected one carries its error label."""

    pair_id: str
    source: bytes
    target: bytes
    chosen: str
    rejected: str
    error_type: ErrorType
    severity: Severity
    origin: Literal["human", "ground_truth", "hard_negative"]
    annotators: list[str] = Field(default_factory=list)
    agreement: float | None = Field(default=None, description="Share of annotators who agreed, 0-1.")


class Judgment(Record):
    """A verdict on one instruction, by a VLM judge or a human."""

    pair_id: str
    instruction: str
    model: str = Field(description="The captioner that wrote the instruction.")
    benchmark: str
    judge: str = Field(description="Judge model id, or `human:<annotator>`.")
    verdict: Verdict | None = Field(description="None when the judge's reply could not be parsed.")
    error_types: list[ErrorType] = Field(default_factory=list)
    overall: float | None = Field(default=None, description="1-5, None for human verdicts without a score.")


class ReviewQueueRow(Record):
    """A pair the synthesis job routed to people (`review_queue.parquet`), highest priority first: what
    `review import` reads. `candidates` and `scores` hold the pair's Candidate and Score rows."""

    pair_id: str
    source: bytes
    target: bytes
    status: str | None = None
    review_priority: float | None = None
    review_reasons: list[str] | None = None
    flip_verdict: str | None = None
    flip_reason: str | None = None
    best_candidate_id: str | None = None
    best_instruction: str | None = None
    best_overall: float | None = None
    reference_instruction: str | None = None
    candidates: list[Candidate] | None = None
    scores: list[Score] | None = None


class FilteredPair(Record):
    """A pair whose best candidate the filter dropped (`filtered.parquet`), with the reason."""

    pair_id: str
    best_candidate_id: str | None = None
    best_overall: float | None = None
    best_semantic_consistency: float | None = None
    filter_reason: str | None = None


PAIR_RECORD_LISTS: dict[str, type[Record]] = {"candidates": Candidate, "scores": Score}
"""The columns in which a pair row carries its records between synthesis stages, each a list of rows
of that record; their Arrow type is `list<struct>` derived from the record (`pair_record_types`)."""


def pair_record_types() -> dict[str, pa.DataType]:
    """Arrow type of each record-list column of a pair row: `list<struct>` of the record's fields."""
    return {name: pa.list_(record.arrow_struct()) for name, record in PAIR_RECORD_LISTS.items()}


def pair_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Pair rows as an Arrow table whose record-list columns have their derived types (others inferred).

    Ray Data blocks of pair rows are built here rather than by Ray's inference: inference types a field
    that is None throughout one block as null, and such a block then fails to concatenate with one where
    the field is a string. An item whose fields are not exactly its record's is an error, never silently
    cut to fit.
    """
    types = pair_record_types()
    for row in rows:
        for name, record in PAIR_RECORD_LISTS.items():
            for item in row.get(name) or []:
                if item.keys() != record.model_fields.keys():
                    extra = sorted(item.keys() - record.model_fields.keys())
                    missing = sorted(record.model_fields.keys() - item.keys())
                    raise ValueError(
                        f"pair {row.get('pair_id')}: a {record.__name__} in `{name}` has extra fields "
                        f"{extra} and misses {missing}"
                    )
    columns = list(rows[0]) if rows else []
    return pa.table({c: pa.array([r[c] for r in rows], type=types.get(c)) for c in columns})


def pair_id_for(source: bytes, target: bytes) -> str:
    """Stable id from both images' bytes, so reruns on the same data key to the same rows."""
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(source).digest())
    digest.update(hashlib.sha256(target).digest())
    return digest.hexdigest()[:20]


def pair_id_for_uris(*uris: str | None) -> str:
    """Id for a pair whose bytes could not be read: a hash of where it was supposed to be."""
    return "uri-" + hashlib.sha256("\n".join(u or "" for u in uris).encode()).hexdigest()[:16]


def _is_optional(annotation: object) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


_SCALARS: dict[object, pa.DataType] = {
    str: pa.string(),
    bytes: pa.binary(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
}


def _arrow_fields(record: type[Record]) -> list[pa.Field]:
    return [
        pa.field(name, _arrow_type(f.annotation), nullable=_is_optional(f.annotation))
        for name, f in record.model_fields.items()
    ]


def _arrow_type(annotation: object) -> pa.DataType:
    if _is_optional(annotation):
        (inner,) = [a for a in get_args(annotation) if a is not type(None)]
        return _arrow_type(inner)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if isinstance(annotation, type) and issubclass(annotation, Record):
        return annotation.arrow_struct()
    origin = get_origin(annotation)
    if origin is Literal:
        return pa.string()
    if origin is list:
        (item,) = get_args(annotation)
        return pa.list_(_arrow_type(item))
    if origin is typing.Annotated:
        return _arrow_type(get_args(annotation)[0])
    raise TypeError(f"no Arrow type for {annotation!r}")
