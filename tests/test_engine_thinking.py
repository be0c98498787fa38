"""Reasoning control reaches the real engines: chat-template arguments get into the prompt (vLLM's and
transformers' own template rendering), and `finish_reason` and the split-off reasoning come back.

The tiny Qwen3-VL stands in for a reasoning model: its chat template is given a thinking switch shaped
like GLM-4.5V's (an empty `<think></think>` when `enable_thinking` is false) that refuses to render
when the argument is not passed at all, so a missing argument cannot go unnoticed.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from jinja2 import TemplateError
from PIL import Image

from editcaption.engines import (
    EngineRequest,
    EngineResult,
    SamplingSettings,
    TransformersEngineConfig,
    VLLMEngineConfig,
)
from editcaption.prompts.instruction import instruction_messages, make_candidate

SWITCH = (
    "{% if enable_thinking is not defined %}{{ raise_exception('enable_thinking was not passed') }}{% endif %}",
    "{% if add_generation_prompt and not enable_thinking %}<think></think>\n{% endif %}",
)


@pytest.fixture(scope="module")
def switch_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with a template that needs `enable_thinking` (folder name matches no family)."""
    out = tmp_path_factory.mktemp("switch-template")
    for f in tiny_model.iterdir():
        shutil.copy(f, out / f.name)
    template = (tiny_model / "chat_template.jinja").read_text()
    (out / "chat_template.jinja").write_text(SWITCH[0] + template + SWITCH[1])
    return out


def _png(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, format="PNG")
    return buf.getvalue()


def _row(max_tokens: int = 4) -> dict:
    return EngineRequest(
        request_id="r",
        images=[_png("red"), _png("blue")],
        messages=instruction_messages(),
        sampling=SamplingSettings(max_tokens=max_tokens),
    ).to_row()


def test_vllm_prompt_renders_the_template_arguments(switch_model):
    from editcaption.engines.vllm_engine import _prompt

    with pytest.raises(TemplateError, match="enable_thinking was not passed"):
        _prompt(VLLMEngineConfig(model=str(switch_model), max_pixels=64 * 64), _row())
    thinking, _ = _prompt(
        VLLMEngineConfig(model=str(switch_model), family="glm-4.5v", max_pixels=64 * 64), _row()
    )
    off = VLLMEngineConfig(
        model=str(switch_model), chat_template_kwargs={"enable_thinking": False}, max_pixels=64 * 64
    )
    not_thinking, _ = _prompt(off, _row())
    assert not thinking.endswith("<think></think>\n")  # GLM-4.5V's family default: thinking on
    assert not_thinking.endswith("<think></think>\n")


def test_transformers_engine_passes_template_arguments_and_reports_finish_reason(switch_model):
    from editcaption.engines.transformers_engine import TransformersPredictor

    missing = TransformersPredictor(TransformersEngineConfig(model=str(switch_model), max_pixels=64 * 64))
    assert "enable_thinking was not passed" in missing.answer(_row())["error"]
    config = TransformersEngineConfig(
        model=str(switch_model), chat_template_kwargs={"enable_thinking": False}, max_pixels=64 * 64
    )
    out = TransformersPredictor(config).answer(_row(max_tokens=3))
    assert out["error"] is None and out["finish_reason"] in ("stop", "length")
    assert (out["finish_reason"] == "length") == (out["num_output_tokens"] == 3)


@pytest.mark.slow
def test_vllm_engine_splits_reasoning_with_vllms_parser_and_reports_truncation(tiny_model):
    """Qwen3-VL Thinking's template opens the reasoning, so vLLM's `qwen3` parser puts a reply that
    never wrote `</think>` into the reasoning: cut by max_tokens, it is a truncated candidate."""
    from editcaption.engines.vllm_engine import VLLMPredictor

    config = VLLMEngineConfig(
        model=str(tiny_model),
        family="qwen3-vl-thinking",
        device="cpu",
        dtype="float32",
        enforce_eager=True,
        max_model_len=1024,
        max_num_seqs=2,
        max_pixels=64 * 64,
    )
    predictor = VLLMPredictor(config)
    try:
        (out,) = predictor.answer_many([_row(max_tokens=6)])
    finally:
        predictor.close()
    assert out["error"] is None and out["finish_reason"] == "length" and out["num_output_tokens"] == 6
    assert out["text"] == "" and out["reasoning"]  # all of it reasoning: no `</think>` was written
    candidate = make_candidate("p", EngineResult.from_row(out), config.model)
    assert (candidate["parse_error"], candidate["instruction"], candidate["finish_reason"]) == (
        "truncated",
        None,
        "length",
    )


def test_ray_data_rows_get_the_finish_reason_vllm_would_give(tiny_model):
    """Ray 2.60's engine stage drops vLLM's finish_reason: a reply that used its whole budget was cut,
    unless its last token ended the sequence."""
    from editcaption.engines.vllm_engine import _finish_reason, _stop_ids

    eos = min(_stop_ids(str(tiny_model)))
    assert _finish_reason(str(tiny_model), [5, 6, 7], 3, 3) == "length"
    assert _finish_reason(str(tiny_model), [5, 6, eos], 3, 3) == "stop"
    assert _finish_reason(str(tiny_model), [5, eos], 2, 3) == "stop"
