"""From-scratch Qwen3-VL checkpoints sized to learn the miniature world on a CPU.

Shapes follow what was measured to train here (docs/miniature.md): 128×128 images (16 tokens each
after the 2×2 merge), a 4-layer text model of width 256, a 4-block vision tower of width 128, about
4M parameters. The tokenizer is word-level over the world's sentences and the project's prompts, so
an instruction is ~10 tokens and every word the captioner needs is one id.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from editcaption.demo.records import DESCRIBE_PROMPT, PERCEPTUAL_REPLY, VERDICTS, semantic_reply
from editcaption.demo.tiny_models import CHAT_TEMPLATE, SPECIAL_TOKENS, fast_tokenizer
from editcaption.demo.world import SIZE, WorldConfig, describe, generate, mirrored
from editcaption.prompts.editscore import perceptual_quality_messages, semantic_consistency_messages
from editcaption.prompts.instruction import SYSTEM, USER

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen3VLProcessor

PATCH_SIZE = 16
MERGE_SIZE = 2
PIXELS = SIZE * SIZE  # one fixed image size: the world's canvas


class WorldModelConfig(BaseModel):
    """Shapes of a miniature-world Qwen3-VL (text head_dim is fixed at 64, as vLLM's CPU attention needs)."""

    text_hidden: int = Field(256, description="Text model width; heads = width / 64.")
    text_layers: int = Field(4, description="Text decoder layers.")
    text_intermediate: int = Field(512, description="Text MLP width.")
    vision_hidden: int = Field(128, description="Vision tower width; heads = width / 64.")
    vision_depth: int = Field(4, description="Vision blocks.")
    vision_intermediate: int = Field(256, description="Vision MLP width.")
    position_scale: float = Field(
        1.0,
        ge=0,
        description="Amplitude of the 2D sine-cosine code the vision position table starts from; 0 keeps "
        "the random table (std 0.02), which left every trained model blind to left and right.",
    )
    seed: int = Field(0, description="Seed of the initial weights.")


def _corpus() -> list[str]:
    """Every sentence the world writes (both mirror senses) and the prompts the models are asked with."""
    lines = [SYSTEM, USER, "system\nuser\nassistant\n"]
    for pair in generate(2000, WorldConfig(seed=12345), prefix="vocab"):
        for p in (pair, mirrored(pair)):
            lines += [p.instruction, *(v.text for v in p.variants)]
            for message in semantic_consistency_messages(p.instruction):
                lines += [part["text"] for part in message["content"] if part["type"] == "text"]
    lines += [PERCEPTUAL_REPLY, *(semantic_reply(None, kind, None) for kind in VERDICTS)]
    for message in perceptual_quality_messages():
        lines += [part["text"] for part in message["content"] if part["type"] == "text"]
    rng = random.Random(0)
    lines += [
        json.dumps({"reasoning": "ok", "score": [rng.randint(0, 25), rng.randint(0, 25)]}) for _ in range(200)
    ]
    lines += [str(i) for i in range(100)]
    for pair in generate(1000, WorldConfig(seed=54321), prefix="vocab"):
        lines += [describe(pair.source_scene()), describe(pair.target_scene())]
    return lines


def _fixed_texts() -> list[str]:
    """The prompts' constant texts: the instruction prompt and the EditScore prompts around the instruction."""
    marker = "\x00"
    parts = [SYSTEM, USER, DESCRIBE_PROMPT]
    for message in [*semantic_consistency_messages(marker), *perceptual_quality_messages()]:
        for part in message["content"]:
            if part["type"] == "text":
                parts += [p for p in part["text"].split(marker) if p]
    return sorted(set(parts), key=len, reverse=True)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over byte-level pre-tokens (" Move", "'s", "."): decoding restores the text."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.WordLevelTrainer(special_tokens=[*SPECIAL_TOKENS, "[UNK]"], show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    # The fixed prompt texts are one token each: the model still reads the project's exact prompt,
    # but a training sequence is ~60 tokens instead of ~190, which is what makes CPU training fit.
    tok.add_tokens([AddedToken(text, normalized=False) for text in _fixed_texts()])
    return fast_tokenizer(
        tok,
        SPECIAL_TOKENS,
        "<|im_end|>",
        "<|endoftext|>",
        CHAT_TEMPLATE,
        model_max_length=2048,
        unk_token="[UNK]",
    )


def build_processor(tokenizer: PreTrainedTokenizerFast) -> Qwen3VLProcessor:
    """Qwen3-VL processor pinned to the world's canvas: every image is 8×8 patches, 16 merged tokens."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    geometry = {"patch_size": PATCH_SIZE, "merge_size": MERGE_SIZE, "temporal_patch_size": 2}
    image_processor = Qwen2VLImageProcessor(
        **geometry, min_pixels=PIXELS, max_pixels=PIXELS, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    video_processor = Qwen3VLVideoProcessor(
        **geometry, size={"shortest_edge": PIXELS * 2, "longest_edge": PIXELS * 8}, min_frames=2, max_frames=8
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def sincos_positions(side: int, dim: int) -> torch.Tensor:
    """A (side², dim) 2D sine-cosine code, row-major: a quarter of the dims each for sin x, cos x, sin y, cos y.

    Why: a patch token describes its local content, so absolute position reaches the text model only
    through this table and the text RoPE. Started at std 0.02 the table stayed near zero through
    training and every model answered left/right by coin toss; started from this code, a from-scratch
    model learned the camera-pan direction (a binary left/right task) perfectly by step 200, where
    the random table left it at chance after 300 (docs/miniature.md).
    """
    import torch

    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    quarter = dim // 4
    omega = 1.0 / (100.0 ** (torch.arange(quarter) / quarter))
    x, y = cols.reshape(-1, 1) * omega, rows.reshape(-1, 1) * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)


def build_world_qwen3vl(out: str | Path, config: WorldModelConfig | None = None) -> Path:
    """Write an untrained miniature-world Qwen3-VL folder (weights, config, tokenizer, processor)."""
    import torch
    from transformers import GenerationConfig, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    config = config or WorldModelConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    side = SIZE // PATCH_SIZE
    model_config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": config.text_hidden,
            "intermediate_size": config.text_intermediate,
            "num_hidden_layers": config.text_layers,
            "num_attention_heads": config.text_hidden // 64,
            "num_key_value_heads": max(1, config.text_hidden // 128),
            "head_dim": 64,
            "max_position_embeddings": 2048,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [8, 12, 12],
                "mrope_interleaved": True,
            },
            "tie_word_embeddings": True,
            "bos_token_id": None,
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": config.vision_depth,
            "hidden_size": config.vision_hidden,
            "intermediate_size": config.vision_intermediate,
            "num_heads": max(1, config.vision_hidden // 64),
            "patch_size": PATCH_SIZE,
            "spatial_merge_size": MERGE_SIZE,
            "temporal_patch_size": 2,
            "out_hidden_size": config.text_hidden,
            "num_position_embeddings": side * side,
            "deepstack_visual_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = Qwen3VLForConditionalGeneration(model_config).to(torch.float32)
    if config.position_scale:
        with torch.no_grad():
            model.model.visual.pos_embed.weight.copy_(
                sincos_positions(side, config.vision_hidden) * config.position_scale
            )
    model.generation_config = GenerationConfig(
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], do_sample=False
    )
    model.save_pretrained(out)
    build_processor(tokenizer).save_pretrained(out)
    return out
