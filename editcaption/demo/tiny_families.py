"""Tiny random-weight models of every production architecture, built offline.

Production runs GLM-4.5V (`Glm4vMoeForConditionalGeneration`) or GLM-4.1V-Thinking
(`Glm4vForConditionalGeneration`) as the annotator, EditScore on Qwen2.5-VL-7B
(`Qwen2_5_VLForConditionalGeneration`) or Qwen3-VL-8B as the scorer, and Qwen3-VL (dense or MoE) as
the captioner. Each family here writes a checkpoint folder of the same architecture class, with its
processor's special tokens, image handling and a chat template in the family's published format, so
that a production config runs on CPU with only the model paths and sizes changed. The weights are
random: replies are noise, but every code path that depends on the architecture, the tokens or the
template is the real one.

Published facts the templates follow (model cards and the transformers/vLLM processors):

- GLM-4.1V / 4.5V: the prompt starts with `[gMASK]<sop>`; turns are `<|system|>`, `<|user|>`,
  `<|assistant|>`; an image is `<|begin_of_image|><|image|><|end_of_image|>` (the processor expands
  `<|image|>`); generation stops at `<|endoftext|>`, `<|user|>` or `<|observation|>`. Answers come in
  `<think>…</think>` and, for GLM-4.1V, `<answer>…</answer>`; GLM-4.5V marks boxed answers with
  `<|begin_of_box|>…<|end_of_box|>`. These markers are whole tokens that decoding keeps.
- GLM-4.5V is a hybrid reasoner: thinking is on unless the template gets `enable_thinking=False`, which
  appends `/nothink` to each user turn and pre-fills an empty `<think></think>` after `<|assistant|>`.
  GLM-4.1V-Thinking always reasons and has no switch.
- Qwen2.5-VL: ChatML (`<|im_start|>role … <|im_end|>`), a default system turn "You are a helpful
  assistant." when the conversation has none, and `<|vision_start|><|image_pad|><|vision_end|>` per
  image; patch 14 and 2×2 merge (28 px per image token), as in Qwen2.5-VL-7B-Instruct.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from editcaption.demo.tiny_models import _train_tokenizer, build_tiny_qwen3vl

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerFast, ProcessorMixin

# Patch 14, merge 2: 28 px per image token, as in GLM-V and Qwen2.5-VL; 4 to 64 tokens per image.
PATCH_SIZE_14 = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MIN_PIXELS_14 = 56 * 56
MAX_PIXELS_14 = 224 * 224

GLM_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
)
# GLM's generation stops at any of these (the published generation_config's three eos ids).
GLM_EOS_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>")
GLM41V_PLAIN_TOKENS = ("<think>", "</think>", "<answer>", "</answer>", "<|begin_of_box|>", "<|end_of_box|>")
GLM45V_PLAIN_TOKENS = ("<think>", "</think>", "<|begin_of_box|>", "<|end_of_box|>")

QWEN25_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

_GLM_USER_PARTS = (
    "{% if m.content is string %}{{ m.content }}{% else %}{% for part in m.content %}"
    "{% if part.type in ('image', 'image_url') %}<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif part.type in ('video', 'video_url') %}<|begin_of_video|><|video|><|end_of_video|>"
    "{% elif part.type == 'text' %}{{ part.text }}"
    "{% endif %}{% endfor %}{% endif %}"
)
# The visible text of a message (string content, or its text parts), without reasoning.
_GLM_TEXT = (
    "{% if m.content is string %}{% set text = m.content %}"
    "{% else %}{% set text = m.content | selectattr('type', 'equalto', 'text') | map(attribute='text') "
    "| join('') %}{% endif %}"
)

# GLM-4.5V: hybrid reasoning, `enable_thinking` switch (/nothink + pre-filled empty think block).
GLM45V_CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{% for m in messages %}" + _GLM_TEXT + "{% if m.role == 'system' %}<|system|>\n{{ text }}"
    "{% elif m.role == 'user' %}<|user|>\n"
    + _GLM_USER_PARTS
    + "{% if enable_thinking is defined and not enable_thinking and not text.endswith('/nothink') %}"
    "/nothink{% endif %}"
    "{% elif m.role == 'assistant' %}<|assistant|>\n<think></think>"
    "{% set answer = text.split('</think>')[-1].strip() %}{% if answer %}{{ '\\n' + answer }}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>"
    "{% if enable_thinking is defined and not enable_thinking %}{{ '\\n<think></think>' }}{% endif %}"
    "{% endif %}"
)

# GLM-4.1V-Thinking: always reasons; earlier answers are kept without their reasoning.
GLM41V_CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{% for m in messages %}" + _GLM_TEXT + "{% if m.role == 'system' %}<|system|>\n{{ text }}"
    "{% elif m.role == 'user' %}<|user|>\n"
    + _GLM_USER_PARTS
    + "{% elif m.role == 'assistant' %}<|assistant|>\n{{ text.split('</think>')[-1].strip() }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Qwen2.5-VL: ChatML with a default system turn and numbered vision parts when `add_vision_id` is set.
QWEN25VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message.role != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message.role }}\n"
    "{% if message.content is string %}{{ message.content }}"
    "{% else %}{% for part in message.content %}"
    "{% if part.type in ('image', 'image_url') %}{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part.type in ('video', 'video_url') %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part.type == 'text' %}{{ part.text }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyFamily:
    """One production architecture: what it stands for and how its tiny checkpoint is made."""

    name: str
    architecture: str
    stands_for: str
    build: Callable[[Path, int], Path]


def _glm_tokenizer(moe: bool) -> PreTrainedTokenizerFast:
    return _train_tokenizer(
        special_tokens=GLM_SPECIAL_TOKENS,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        chat_template=GLM45V_CHAT_TEMPLATE if moe else GLM41V_CHAT_TEMPLATE,
        plain_tokens=GLM45V_PLAIN_TOKENS if moe else GLM41V_PLAIN_TOKENS,
    )


def _glm_processor(tokenizer: PreTrainedTokenizerFast) -> ProcessorMixin:
    """GLM-V's own image and video processors (patch 14, CLIP normalisation), with a small budget."""
    from transformers import Glm4vImageProcessor, Glm4vProcessor, Glm4vVideoProcessor

    geometry = {
        "patch_size": PATCH_SIZE_14,
        "merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    }
    image_processor = Glm4vImageProcessor(
        **geometry, size={"shortest_edge": MIN_PIXELS_14, "longest_edge": MAX_PIXELS_14}
    )
    video_processor = Glm4vVideoProcessor(
        **geometry,
        size={"shortest_edge": MIN_PIXELS_14, "longest_edge": MAX_PIXELS_14 * TEMPORAL_PATCH_SIZE},
        max_image_size={"longest_edge": MAX_PIXELS_14 * TEMPORAL_PATCH_SIZE},
    )
    return Glm4vProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=tokenizer.chat_template,
    )


def _glm_config(tokenizer: PreTrainedTokenizerFast, moe: bool) -> PretrainedConfig:
    """GLM-V shapes shrunk: head_dim 64 (vLLM CPU attention), partial rotary 0.5 with mrope over the
    rotary half (sections sum to head_dim / 4), vision out size = text hidden size."""
    from transformers import Glm4vConfig, Glm4vMoeConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in GLM_SPECIAL_TOKENS}
    hidden = 128
    text: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [4, 6, 6],
            "partial_rotary_factor": 0.5,
        },
        "eos_token_id": [ids[t] for t in GLM_EOS_TOKENS],
        "pad_token_id": ids["<|endoftext|>"],
    }
    if moe:
        # As in GLM-4.5V's published config: one dense layer first, one shared expert, attention bias;
        # vLLM reads `head_dim` and `use_qk_norm` from the config (it fails without them).
        text |= {
            "head_dim": 64,
            "use_qk_norm": False,
            "attention_bias": True,
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "n_shared_experts": 1,
            "moe_intermediate_size": 96,
            "first_k_dense_replace": 1,
            "norm_topk_prob": True,
            "n_group": 1,
            "topk_group": 1,
        }
    vision = {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,
        "patch_size": PATCH_SIZE_14,
        "image_size": int(MAX_PIXELS_14**0.5),
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "out_hidden_size": hidden,
    }
    config_class = Glm4vMoeConfig if moe else Glm4vConfig
    return config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image|>"],
        video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"],
        image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"],
        video_end_token_id=ids["<|end_of_video|>"],
    )


def _qwen25_tokenizer() -> PreTrainedTokenizerFast:
    return _train_tokenizer(
        special_tokens=QWEN25_SPECIAL_TOKENS,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=QWEN25VL_CHAT_TEMPLATE,
    )


def _qwen25_processor(tokenizer: PreTrainedTokenizerFast) -> ProcessorMixin:
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    geometry = {
        "patch_size": PATCH_SIZE_14,
        "merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    }
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**geometry, min_pixels=MIN_PIXELS_14, max_pixels=MAX_PIXELS_14),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(
            **geometry,
            size={"shortest_edge": MIN_PIXELS_14, "longest_edge": MAX_PIXELS_14 * TEMPORAL_PATCH_SIZE},
        ),
        chat_template=tokenizer.chat_template,
    )


def _qwen25_config(tokenizer: PreTrainedTokenizerFast) -> PretrainedConfig:
    """Qwen2.5-VL shapes shrunk: mrope sections sum to head_dim / 2; windowed vision attention with
    the last block global, as the published model's `fullatt_block_indexes` do."""
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN25_SPECIAL_TOKENS}
    hidden = 128
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]},
        "bos_token_id": None,
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,
        "patch_size": PATCH_SIZE_14,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "window_size": 2 * MERGE_SIZE * PATCH_SIZE_14,
        "fullatt_block_indexes": [1],
        "out_hidden_size": hidden,
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


_CARD = """\
---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [test-fixture, random-weights]
---
# {name}

**Random weights. A test fixture, not a model.** Its outputs are noise.

Stands for {stands_for}. Written offline by
`editcaption.demo.tiny_families.build_tiny_model({name!r}, seed={seed})`: the architecture class,
processor, special tokens and chat template format are the production model's, the sizes are tiny.
The same seed always gives byte-identical files.

- architecture: `{arch}`, {params:,} parameters (float32)
- text: {layers} layers, hidden {hidden}, head_dim 64
- vision: patch {patch}, merge {merge}, {min_px:,}–{max_px:,} pixels per image
- tokenizer: byte-level BPE, {vocab} tokens, trained on a fixed English image-editing corpus
"""


def _write(
    out: Path,
    name: str,
    stands_for: str,
    seed: int,
    tokenizer: PreTrainedTokenizerFast,
    processor: ProcessorMixin,
    config: PretrainedConfig,
    eos_tokens: tuple[str, ...],
) -> Path:
    """Instantiate the model from a seeded generator and write the checkpoint folder."""
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
    model = model.to(torch.float32).eval()
    eos = [tokenizer.convert_tokens_to_ids(t) for t in eos_tokens]
    model.generation_config = GenerationConfig(
        eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    # GLM-4.5V's published checkpoints keep one tensor per expert; transformers' save writes them so.
    model.save_pretrained(out)
    processor.save_pretrained(out)
    text = config.text_config
    (out / "README.md").write_text(
        _CARD.format(
            name=name,
            stands_for=stands_for,
            seed=seed,
            arch=type(model).__name__,
            params=sum(p.numel() for p in model.parameters()),
            layers=text.num_hidden_layers,
            hidden=text.hidden_size,
            patch=PATCH_SIZE_14,
            merge=MERGE_SIZE,
            min_px=MIN_PIXELS_14,
            max_px=MAX_PIXELS_14,
            vocab=len(tokenizer),
        )
    )
    return out


def build_tiny_glm4v(out: str | Path, seed: int = 0, moe: bool = False) -> Path:
    """A tiny GLM-4.1V-Thinking (`moe=False`) or GLM-4.5V (`moe=True`) checkpoint folder."""
    tokenizer = _glm_tokenizer(moe)
    name = "glm4.5v" if moe else "glm4.1v"
    stands_for = "zai-org/GLM-4.5V (the annotator)" if moe else "zai-org/GLM-4.1V-9B-Thinking"
    return _write(
        Path(out),
        name,
        stands_for,
        seed,
        tokenizer,
        _glm_processor(tokenizer),
        _glm_config(tokenizer, moe),
        GLM_EOS_TOKENS,
    )


def build_tiny_qwen25vl(out: str | Path, seed: int = 0) -> Path:
    """A tiny Qwen2.5-VL checkpoint folder (EditScore-7B's base model)."""
    tokenizer = _qwen25_tokenizer()
    return _write(
        Path(out),
        "qwen2.5vl",
        "Qwen/Qwen2.5-VL-7B-Instruct, the base of EditScore-7B (the scorer)",
        seed,
        tokenizer,
        _qwen25_processor(tokenizer),
        _qwen25_config(tokenizer),
        ("<|im_end|>", "<|endoftext|>"),
    )


FAMILIES: dict[str, TinyFamily] = {
    family.name: family
    for family in (
        TinyFamily(
            "qwen3vl",
            "Qwen3VLForConditionalGeneration",
            "Qwen3-VL 2B/8B/32B (captioner) and EditScore's Qwen3-VL-8B variant (scorer)",
            lambda out, seed: build_tiny_qwen3vl(out, seed=seed),
        ),
        TinyFamily(
            "qwen3vl-moe",
            "Qwen3VLMoeForConditionalGeneration",
            "Qwen3-VL-235B-A22B (captioner)",
            lambda out, seed: build_tiny_qwen3vl(out, seed=seed, moe=True),
        ),
        TinyFamily(
            "qwen2.5vl",
            "Qwen2_5_VLForConditionalGeneration",
            "EditScore-7B on Qwen2.5-VL-7B (scorer)",
            lambda out, seed: build_tiny_qwen25vl(out, seed=seed),
        ),
        TinyFamily(
            "glm4.1v",
            "Glm4vForConditionalGeneration",
            "GLM-4.1V-9B-Thinking (annotator)",
            lambda out, seed: build_tiny_glm4v(out, seed=seed),
        ),
        TinyFamily(
            "glm4.5v",
            "Glm4vMoeForConditionalGeneration",
            "GLM-4.5V (annotator)",
            lambda out, seed: build_tiny_glm4v(out, seed=seed, moe=True),
        ),
    )
}


def build_tiny_model(family: str, out: str | Path, seed: int = 0) -> Path:
    """Write the tiny checkpoint of `family` (a key of FAMILIES) to `out` and return the folder."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; families: {', '.join(FAMILIES)}")
    return FAMILIES[family].build(Path(out), seed)
