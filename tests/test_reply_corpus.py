"""Every reply in the corpus (tests/data/replies/, one file per model family, in its published output
format) through the real parsers: the instruction, EditScore and judge parsers must give the expected
answer or the expected reason code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from editcaption.engines.families import family_of
from editcaption.prompts.answer import Reply
from editcaption.prompts.editscore import PQ_FIELDS, SC_FIELDS, parse_score_reply
from editcaption.prompts.instruction import read_instruction
from editcaption.prompts.judge import parse_judgment, parse_preference

CORPUS = Path(__file__).parent / "data" / "replies"


def _corpus() -> list[tuple[str, str, dict[str, Any]]]:
    entries = []
    for path in sorted(CORPUS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        entries += [(path.stem, doc["family"], entry) for entry in doc["replies"]]
    return entries


ENTRIES = _corpus()


def parsed(entry: dict[str, Any], family: str, reply: Reply | None = None) -> tuple[Any, str | None]:
    """(what the parser read, its reason code) for one corpus entry."""
    reply = reply or Reply(entry["text"], entry.get("reasoning"), entry.get("finish_reason"))
    in_prompt = family_of("", family).reasoning_in_prompt
    kind = entry["parser"]
    if kind == "instruction":
        read = read_instruction(reply, in_prompt)
        return read.instruction, read.error
    if kind in ("editscore_sc", "editscore_pq"):
        fields = SC_FIELDS if kind == "editscore_sc" else PQ_FIELDS
        score = parse_score_reply(reply, 25, fields, in_prompt)
        return None if score.scores is None else list(score.scores), score.error
    if kind == "judge":
        judged = parse_judgment(reply)
        value = None
        if judged.error is None:
            value = {
                "overall": judged.overall,
                "verdict": judged.verdict,
                "error_types": list(judged.error_types),
            }
        return value, judged.error
    if kind == "preference":
        pref = parse_preference(reply)
        return pref.preferred, pref.error
    raise ValueError(f"unknown parser {kind!r}")


def test_corpus_covers_every_family_and_both_outcomes():
    assert len(ENTRIES) >= 40
    files = {name for name, _, _ in ENTRIES}
    assert {
        "glm-4.5v",
        "glm-api",
        "glm-4.1v-thinking",
        "qwen3-vl-thinking",
        "qwen3-vl-instruct",
        "editscore",
    } <= files
    assert len({(name, e["id"]) for name, _, e in ENTRIES}) == len(ENTRIES)
    assert sum("expect_error" in e for _, _, e in ENTRIES) >= 15
    assert {e["parser"] for _, _, e in ENTRIES} == {
        "instruction",
        "editscore_sc",
        "editscore_pq",
        "judge",
        "preference",
    }


@pytest.mark.parametrize(("name", "family", "entry"), ENTRIES, ids=[f"{n}:{e['id']}" for n, _, e in ENTRIES])
def test_reply_parses_as_expected(name, family, entry):
    value, error = parsed(entry, family)
    if "expect_error" in entry:
        assert (value, error) == (None, entry["expect_error"])
    else:
        assert (value, error) == (entry["expect"], None)


# Raw replies of the families vLLM has a reasoning parser for (an API's replies arrive split already);
# vLLM engines always report a finish reason.
RAW = [
    (n, f, e)
    for n, f, e in ENTRIES
    if family_of("", f).reasoning_parser and n != "glm-api" and e.get("text") and e.get("finish_reason")
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "family", "entry"), RAW, ids=[f"{n}:{e['id']}" for n, _, e in RAW])
def test_vllm_reasoning_parser_then_extractor_agree_with_the_raw_reply(name, family, entry, tiny_model):
    """The vLLM engines split reasoning off with vLLM's own parser for the family (glm45, qwen3) before
    our extractor sees the reply; the outcome must be the one the raw reply gives. (The tokenizer only
    has to exist: these parsers find `<think>` in the text; the tiny model's stands in for GLM's.)"""
    from editcaption.engines.vllm_engine import VLLMEngineConfig, split_reasoning

    config = VLLMEngineConfig(
        model=str(tiny_model), family=family, chat_template_kwargs=entry.get("chat_template_kwargs", {})
    )
    reasoning, text = split_reasoning(config, entry["text"])
    split = Reply(text, reasoning, entry.get("finish_reason"))
    assert parsed(entry, family, split) == parsed(entry, family)
