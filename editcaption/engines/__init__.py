"""Engines: run a VLM on (two images + chat messages) requests, as a Ray Data stage.

`EngineConfig` is the union of the backends' configs, told apart by their `backend` key.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from editcaption.engines.base import Engine, EngineRequest, EngineResult, GroupedStep, SamplingSettings
from editcaption.engines.openai_engine import OpenAIEngine, OpenAIEngineConfig
from editcaption.engines.transformers_engine import TransformersEngine, TransformersEngineConfig
from editcaption.engines.vllm_engine import VLLMEngine, VLLMEngineConfig

EngineConfig = Annotated[
    VLLMEngineConfig | OpenAIEngineConfig | TransformersEngineConfig, Field(discriminator="backend")
]


def make_engine(config: VLLMEngineConfig | OpenAIEngineConfig | TransformersEngineConfig) -> Engine:
    """The engine for a config."""
    if isinstance(config, VLLMEngineConfig):
        return VLLMEngine(config)
    if isinstance(config, OpenAIEngineConfig):
        return OpenAIEngine(config)
    return TransformersEngine(config)


__all__ = [
    "Engine",
    "EngineConfig",
    "EngineRequest",
    "EngineResult",
    "GroupedStep",
    "OpenAIEngineConfig",
    "SamplingSettings",
    "TransformersEngineConfig",
    "VLLMEngineConfig",
    "make_engine",
]
