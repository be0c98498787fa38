"""The model-family registry and the engine config fields that control reasoning (no model needed)."""

from __future__ import annotations

import pydantic
import pytest

from editcaption.engines import OpenAIEngineConfig, TransformersEngineConfig, VLLMEngineConfig
from editcaption.engines.families import FAMILY_NAMES, PLAIN, family_of, merged


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("zai-org/GLM-4.5V", "glm-4.5v"),
        ("glm-4.5v", "glm-4.5v"),
        ("/models/GLM-4.5V-FP8", "glm-4.5v"),
        ("zai-org/GLM-4.6V", "glm-4.6v"),
        ("zai-org/GLM-4.6V-Flash", "glm-4.6v"),
        ("glm-4.6v", "glm-4.6v"),
        ("zai-org/GLM-4.1V-9B-Thinking", "glm-4.1v-thinking"),
        ("Qwen/Qwen3-VL-8B-Thinking", "qwen3-vl-thinking"),
        ("Qwen/Qwen3-VL-235B-A22B-Instruct", "qwen3-vl-instruct"),
        ("/models/editcaption/qwen3-vl-8b-sft", "qwen3-vl-instruct"),
        ("/models/editscore-qwen3-vl-8b", "editscore-qwen3-vl"),
        ("EditScore/EditScore-7B", "editscore-qwen2.5-vl"),
        ("/models/editscore_7b_merged", "editscore-qwen2.5-vl"),
        (".cache/tiny-qwen3vl", "qwen3-vl-instruct"),
        ("gemini-2.5-pro", "plain"),
    ],
)
def test_family_is_picked_from_the_model_id(model, family):
    assert family_of(model).name == family


def test_an_explicit_family_wins_and_an_unknown_one_is_refused():
    assert family_of("/models/my-annotator", "glm-4.5v").name == "glm-4.5v"
    with pytest.raises(ValueError, match="known: glm-4.5v"):
        family_of("x", "glm-5")
    with pytest.raises(pydantic.ValidationError, match="unknown model family"):
        VLLMEngineConfig(model="x", family="glm-5")


def test_thinking_switch_follows_the_template_arguments():
    glm = family_of("zai-org/GLM-4.5V")
    assert glm.reasons() and glm.reasons({"enable_thinking": True})
    assert not glm.reasons({"enable_thinking": False})
    assert not family_of("zai-org/GLM-4.6V-Flash").reasons({"enable_thinking": False})
    assert family_of("zai-org/GLM-4.1V-9B-Thinking").reasons({"enable_thinking": False})  # no switch
    assert not PLAIN.reasons()


def test_config_values_merge_over_family_defaults_and_null_drops_one():
    assert merged({"a": 1, "b": 2}, {"b": 3, "c": None}) == {"a": 1, "b": 3}
    vllm = VLLMEngineConfig(model="zai-org/GLM-4.5V")
    assert vllm.template_kwargs() == {"enable_thinking": True}
    off = VLLMEngineConfig(model="zai-org/GLM-4.5V", chat_template_kwargs={"enable_thinking": False})
    assert off.template_kwargs() == {"enable_thinking": False}
    dropped = TransformersEngineConfig(
        model="zai-org/GLM-4.5V", chat_template_kwargs={"enable_thinking": None}
    )
    assert dropped.template_kwargs() == {}
    api = OpenAIEngineConfig(model="glm-4.5v", base_url="http://127.0.0.1:1/v1")
    assert api.body_extra() == {"thinking": {"type": "enabled"}}
    api_off = OpenAIEngineConfig(
        model="glm-4.5v", base_url="http://127.0.0.1:1/v1", extra_body={"thinking": {"type": "disabled"}}
    )
    assert api_off.body_extra() == {"thinking": {"type": "disabled"}}
    glm46 = OpenAIEngineConfig(model="glm-4.6v", base_url="http://127.0.0.1:1/v1")
    assert glm46.body_extra() == {"thinking": {"type": "enabled"}}
    assert OpenAIEngineConfig(model="gemini-2.5-pro", base_url="http://x/v1").body_extra() == {}


def test_unknown_engine_keys_are_still_errors():
    with pytest.raises(pydantic.ValidationError, match="chat_template_kwarg"):
        VLLMEngineConfig(model="x", chat_template_kwarg={})
    with pytest.raises(pydantic.ValidationError, match="extra_body"):
        VLLMEngineConfig(model="x", extra_body={})  # an HTTP-only field on the vLLM engine


def test_every_family_is_documented_on_the_config_field():
    description = VLLMEngineConfig.model_fields["family"].description
    assert all(name in description for name in FAMILY_NAMES)


def test_a_reasoning_model_whose_budget_its_reasoning_would_use_up_is_warned_about(caplog):
    """Synthesis and eval (captioners and the judge) warn when a thinking family gets fewer tokens
    than its reply budget; a non-reasoning model or thinking switched off is not warned about."""
    from editcaption.engines.base import SamplingSettings
    from editcaption.engines.families import warn_if_reasoning_is_cut
    from editcaption.evaluation.job import EvalConfig, warn_if_reasoning_is_cut_in

    glm = VLLMEngineConfig(model="zai-org/GLM-4.5V")
    with caplog.at_level("WARNING"):
        warn_if_reasoning_is_cut(glm, SamplingSettings(max_tokens=160), "annotator")
        warn_if_reasoning_is_cut(glm, SamplingSettings(max_tokens=4096), "annotator")
        off = VLLMEngineConfig(model="zai-org/GLM-4.5V", chat_template_kwargs={"enable_thinking": False})
        warn_if_reasoning_is_cut(off, SamplingSettings(max_tokens=160), "annotator")
    assert [r.getMessage().split(" reasons")[0] for r in caplog.records] == ["annotator zai-org/GLM-4.5V"]

    caplog.clear()
    config = EvalConfig.model_validate(
        {
            "captioners": [
                {"name": "glm", "engine": {"backend": "vllm", "model": "zai-org/GLM-4.6V"}},
                {"name": "qwen", "engine": {"backend": "vllm", "model": "Qwen/Qwen3-VL-8B-Instruct"}},
            ],
            "judge": {
                "engine": {"backend": "openai", "model": "glm-4.5v", "base_url": "http://127.0.0.1:1/v1"},
                "sampling": {"max_tokens": 512},
            },
            "benchmarks": [{"name": "b", "format": "eval-n", "uri": "/tmp"}],
            "output": "/tmp/unused-eval-output",
        }
    )
    with caplog.at_level("WARNING"):
        warn_if_reasoning_is_cut_in(config)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and warned[0].startswith("captioner glm ") and warned[1].startswith("judge ")
    assert "max_tokens 512 < 4096" in warned[1]
