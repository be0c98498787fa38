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
