"""Arrow types derived from the schema.py records, nested records included, and the pair table that keeps
candidates and scores typed in every Ray Data block."""

from __future__ import annotations

import pyarrow as pa
import pytest

from editcaption.schema import Candidate, ReviewQueueRow, Score, pair_record_types, pair_table


def _candidate(i: int, **fields) -> dict:
    text = f"Move the cup {i} to the left."
    return Candidate(
        pair_id="p",
        candidate_id=f"p:{i}",
        instruction=text,
        raw_text=text,
        model="annotator",
        prompt_version="v",
        parsed=True,
        **fields,
    ).to_row()


def _score(i: int, overall: float | None) -> dict:
    return Score(
        pair_id="p",
        candidate_id=f"p:{i}",
        scorer="editscore",
        semantic_consistency=overall,
        perceptual_quality=overall,
        overall=overall,
        num_pass=1,
        num_parsed=int(overall is not None),
        raw_replies=["{}", "{}"],
        reply_errors=[None, None] if overall is not None else ["no_json", None],
    ).to_row()


def test_a_nested_record_becomes_a_struct_of_its_own_arrow_fields():
    queue = ReviewQueueRow.arrow_schema()
    for name, record in (("candidates", Candidate), ("scores", Score)):
        column = queue.field(name)
        assert column.nullable and pa.types.is_list(column.type)
        assert list(column.type.value_type) == list(record.arrow_schema())  # names, types, nullability
    assert pair_record_types() == {
        "candidates": queue.field("candidates").type,
        "scores": queue.field("scores").type,
    }
    assert Score.arrow_struct().field("reply_errors").type == pa.list_(pa.string())


def test_pair_tables_have_one_schema_whatever_their_rows_hold():
    """A block where every `error` is None and `reply_errors` empty gets the same types as one where they
    are set: Ray can concatenate them. Inference alone would type the first block's fields as null."""
    quiet = pair_table([{"pair_id": "p", "candidates": [_candidate(0)], "scores": [_score(0, None)]}])
    loud = pair_table(
        [
            {"pair_id": "p", "candidates": [_candidate(0, error="timeout")], "scores": [_score(0, 7.0)]},
            {"pair_id": "q", "candidates": [], "scores": []},
        ]
    )
    assert quiet.schema == loud.schema
    assert quiet.schema.field("candidates").type == pair_record_types()["candidates"]
    assert pa.concat_tables([quiet, loud]).column("candidates").to_pylist()[1][0]["error"] == "timeout"
    assert pa.Table.from_pylist(quiet.to_pylist()).schema != quiet.schema  # what inference would have made
    assert loud.column("scores").to_pylist()[0] == [_score(0, 7.0)]  # round trip: the rows as written


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({**_candidate(0), "score": 3.0}, r"extra fields \['score'\] and misses \[\]"),
        (
            {k: v for k, v in _candidate(0).items() if k != "outcome"},
            r"extra fields \[\] and misses \['outcome'\]",
        ),
    ],
)
def test_a_record_with_other_fields_is_refused_never_cut_to_fit(item, message):
    with pytest.raises(ValueError, match=r"pair p: a Candidate in `candidates` has " + message):
        pair_table([{"pair_id": "p", "candidates": [item]}])
