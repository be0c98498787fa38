"""transformers `generate` in Ray Data actors: small models, or machines without vLLM."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
from pydantic import Field

from editcaption.engines.base import (
    Engine,
    EngineConfigBase,
    request_images,
    result_row,
    rows_to_batch,
    with_image_parts,
)
from editcaption.engines.families import merged

if TYPE_CHECKING:
    import ray.data


class TransformersEngineConfig(EngineConfigBase):
    """A Hugging Face model run with `generate`, one copy per Ray actor."""

    backend: Literal["transformers"] = "transformers"
    device: str = Field("cpu", description="torch device, e.g. `cpu` or `cuda`.")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch_size: int = Field(4, ge=1, description="Requests per Ray Data batch (generated one by one).")
    cpus_per_replica: float = Field(1.0, gt=0, description="Logical CPUs each actor reserves.")
    gpus_per_replica: float = Field(0.0, ge=0)
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Arguments for the model's chat template (`apply_chat_template`), e.g. "
        "`{enable_thinking: false}`; merged over the model family's defaults (`engines/families.py`), "
        "and a key set to null drops that default.",
    )

    def template_kwargs(self) -> dict[str, Any]:
        """The chat-template arguments in force: the family's defaults, then this config's."""
        return merged(self.model_family().chat_template_kwargs, self.chat_template_kwargs)

    def reasons(self) -> bool:
        return self.model_family().reasons(self.template_kwargs())


class TransformersPredictor:
    """A Ray Data callable class: loads the model once per actor, then answers batches."""

    def __init__(self, config: TransformersEngineConfig) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.config = config
        self.processor = AutoProcessor.from_pretrained(config.model)
        self.model = AutoModelForImageTextToText.from_pretrained(
            config.model, dtype=getattr(torch, config.dtype)
        ).to(config.device)
        self.model.eval()

    def __call__(self, batch: pa.Table) -> dict[str, list[Any]]:
        rows = batch.to_pylist()  # Arrow nulls stay None (numpy batches turn all-null columns into NaN)
        out = [self.answer(row) for row in rows]
        return rows_to_batch(out)

    def answer_many(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.answer(row) for row in rows]

    def answer(self, row: dict[str, Any]) -> dict[str, Any]:
        """One request; a failure becomes the row's `error`, never an exception."""
        import torch

        cfg = self.config
        try:
            images = request_images(row, cfg.max_pixels, cfg.min_pixels)
            messages = with_image_parts(json.loads(row["messages"]), len(images))
            sampling = json.loads(row["sampling"])
            prompt = self.processor.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **cfg.template_kwargs()
            )
            inputs = self.processor(text=[prompt], images=images, return_tensors="pt").to(cfg.device)
            greedy = sampling["temperature"] == 0
            if sampling["seed"] is not None:
                torch.manual_seed(sampling["seed"])
            with torch.inference_mode():
                out = self.model.generate(
                    **inputs,
                    max_new_tokens=sampling["max_tokens"],
                    do_sample=not greedy,
                    temperature=None if greedy else sampling["temperature"],
                    top_p=None if greedy else sampling["top_p"],
                    top_k=None if greedy else sampling.get("top_k"),
                    output_scores=sampling["logprobs"],
                    return_dict_in_generate=True,
                )
            new_tokens = out.sequences[0, inputs["input_ids"].shape[1] :]
            eos = set(_as_list(self.model.generation_config.eos_token_id))
            # The model ended its reply if it wrote an end-of-sequence token; otherwise max_new_tokens cut it.
            finish_reason = "stop" if any(int(t) in eos for t in new_tokens) else "length"
            while len(new_tokens) and int(new_tokens[-1]) in eos:
                new_tokens = new_tokens[:-1]
            logprobs = None
            if sampling["logprobs"]:
                logprobs = [
                    float(torch.log_softmax(score[0].float(), dim=-1)[tok])
                    for score, tok in zip(out.scores, new_tokens, strict=False)
                ]
            text = self.processor.decode(new_tokens, skip_special_tokens=True)
            return result_row(
                row,
                text,
                token_logprobs=logprobs,
                num_output_tokens=len(new_tokens),
                finish_reason=finish_reason,
            )
        except Exception as e:
            return result_row(row, None, error=f"{type(e).__name__}: {e}")


def _as_list(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


class TransformersEngine(Engine):
    def __init__(self, config: TransformersEngineConfig) -> None:
        self.config = config

    def predictor(self) -> tuple[type, dict[str, Any], dict[str, Any]]:
        cfg = self.config
        return (
            TransformersPredictor,
            {"config": cfg},
            {"num_cpus": cfg.cpus_per_replica, "num_gpus": cfg.gpus_per_replica, **cfg.ray_resources()},
        )

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        cfg = self.config
        return ds.map_batches(
            TransformersPredictor,
            fn_constructor_kwargs={"config": cfg},
            batch_size=cfg.batch_size,
            compute=_actor_pool(cfg.replicas),
            num_cpus=cfg.cpus_per_replica,
            num_gpus=cfg.gpus_per_replica,
            batch_format="pyarrow",
            **cfg.ray_resources(),
        )


def _actor_pool(size: int) -> Any:
    from ray.data import ActorPoolStrategy

    return ActorPoolStrategy(size=size)
