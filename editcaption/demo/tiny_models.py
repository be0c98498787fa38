"""Tiny random-weight Qwen3-VL models, built offline, for tests and the CPU demo.

Everything a real checkpoint folder holds is written (tokenizer, chat template, processor, config,
generation config, weights), so code under test loads these folders through the same calls it uses
for a production Qwen3-VL: transformers, TRL and vLLM see no difference except size.
Nothing is downloaded: the tokenizer is trained here on a fixed corpus, the weights are drawn from
a seeded generator, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import (
        PreTrainedModel,
        PreTrainedTokenizerFast,
        Qwen3VLConfig,
        Qwen3VLMoeConfig,
        Qwen3VLProcessor,
    )

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen-style: optional system turn, string or list-of-parts content, one vision block per image/video part.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message.role }}\n"
    "{% if message.content is string %}{{ message.content }}"
    "{% else %}{% for part in message.content %}"
    "{% if part.type in ('image', 'image_url') %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part.type in ('video', 'video_url') %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part.type == 'text' %}{{ part.text }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2's pre-tokenizer split: letters runs, single digits, punctuation runs, newlines, spaces.
_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# An upper bound: the corpus runs out of merges near 1.3k tokens, which keeps editing words whole.
VOCAB_SIZE = 2048
PATCH_SIZE = 16
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MIN_PIXELS = 64 * 64
MAX_PIXELS = 256 * 256


def _words(text: str) -> tuple[str, ...]:
    """Word lists are written as running text to keep the vocabulary readable."""
    return tuple(text.split())


_COLOURS = _words(
    "red orange yellow green blue purple pink brown black white gray grey cyan magenta gold silver "
    "beige navy teal violet"
)
_SHAPES = _words("circle square triangle rectangle star heart oval hexagon diamond cube sphere cylinder")
_OBJECTS = _words(
    "cat dog car person man woman child tree house cup chair table hat bag ball bird flower sign lamp "
    "window door bottle book shirt dress shoe cloud sun mountain road boat bicycle horse building logo "
    "apple banana clock phone laptop umbrella glasses jacket fence bench plant vase candle zebra cow sheep "
    "elephant giraffe bear fish duck rabbit train bus truck airplane kite pizza cake bowl spoon fork knife "
    "pillow bed sofa mirror painting poster frame curtain rug wall floor ceiling grass sand snow water river "
    "lake beach sky moon light shadow face hair eye hand arm leg head mouth nose ear beard scarf tie belt "
    "glove sock skirt coat sweater helmet mask crown necklace ring watch label letter word number"
)
_ATTRIBUTES = _words(
    "small large big tiny bigger smaller bright dark wooden metal glass plastic striped shiny matte "
    "transparent old new smiling sitting standing open closed tall short round thin thick wet dry hot cold "
    "empty full broken clean dirty soft hard smooth rough curly straight long happy sad angry surprised "
    "asleep awake running walking jumping lying facing turned tilted upside visible hidden blurry sharp "
    "cotton leather silk denim stone brick marble velvet rubber paper golden"
)
_DIRECTIONS = _words("left right up down upward downward top bottom center middle")
_NUMBERS = _words("one two three four five six seven eight nine ten")
_VERBS = _words(
    "Move Change Replace Remove Add Rotate Flip Turn Make Shift Resize Enlarge Shrink Recolor Recolour "
    "Erase Insert Put Place Swap Keep Zoom Pan Tilt Crop Mirror Darken Brighten Blur Raise Lower Open Close "
    "Write Delete Paint Color Colour Fill Extend Straighten Bend Lift Drop Push Pull Slide Spin Reverse"
)
_PHRASES = (
    "You are a helpful assistant.",
    "You are an expert image editing annotator.",
    "The first image is the source image and the second image is the target image.",
    "Write one precise editing instruction that turns the source image into the target image.",
    "Describe the edit.",
    "Say whose left or right you mean: the viewer's left, the viewer's right, or the subject's own left.",
    "If the camera moved, describe the camera motion, not object motion.",
    "Mention every changed colour, material, count, size, text and pose.",
    "Rate the semantic consistency and the perceptual quality of the edit.",
    "Reply with JSON only.",
    "Score the edit success, over-editing, naturalness and artifacts from 0 to 25.",
    "Judge the instruction on a scale from 1 to 5.",
    "The error type is orientation, viewpoint, attribute or other.",
    "The severity is minor, major or critical.",
    "The verdict is correct, minor_error or critical_error.",
    "The camera pans to the left. The camera tilts up. The camera zooms in. The camera zooms out.",
    "Rotate it clockwise. Rotate it counterclockwise. Rotate it anticlockwise by 90 degrees.",
    "Flip the image horizontally. Flip the image vertically. Move it diagonally toward the corner.",
    "in front of, behind, above, below, beside, next to, near, far away from, on top of, under",
    "from the camera's point of view, from the viewer's perspective, from the subject's perspective",
    "Nothing else changes. Keep the background unchanged. The rest of the scene stays the same.",
)


def _rows(n: int, *columns: Sequence[str]) -> Iterator[tuple[str, ...]]:
    """`n` rows that walk every column in turn; columns of different lengths give varied combinations."""
    return zip(*(itertools.islice(itertools.cycle(column), n) for column in columns), strict=True)


def _corpus() -> list[str]:
    """A fixed English editing corpus, enumerated (not sampled) so that training is reproducible."""
    n = 4 * len(_OBJECTS)
    sides = ("viewer's left", "viewer's right", "subject's left", "subject's right")
    errors = ("orientation", "viewpoint", "attribute", "other")
    lines = list(_PHRASES) * 4
    lines += [f"{verb} the {obj}." for verb, obj in _rows(n, _VERBS, _OBJECTS)]
    lines += [f"Move the {c} {shape} to the {side}." for c, shape, side in _rows(n, _COLOURS, _SHAPES, sides)]
    lines += [
        f"Change the {attr} {obj} from {a} to {b}."
        for attr, obj, a, b in _rows(n, _ATTRIBUTES, _OBJECTS, _COLOURS, _COLOURS[3:])
    ]
    lines += [
        f"Move the {obj} {d} and make it {attr}."
        for obj, d, attr in _rows(n, _OBJECTS, _DIRECTIONS, _ATTRIBUTES)
    ]
    lines += [
        f"Add {k} {c} {shape}s to the {d} of the image."
        for k, c, shape, d in _rows(n, _NUMBERS, _COLOURS, _SHAPES, _DIRECTIONS)
    ]
    lines += [
        json.dumps({"instruction": f"Remove the {c} {obj}.", "score": i % 26, "error_type": err})
        for i, (c, obj, err) in enumerate(_rows(n, _COLOURS, _OBJECTS, errors))
    ]
    lines += [
        json.dumps({"edit_success": i % 26, "over_editing": (7 * i) % 26, "reasoning": f"The {obj} moved."})
        for i, (obj,) in enumerate(_rows(n, _OBJECTS))
    ]
    lines += [f"{i} {i}.{i % 10} {i * 10}%" for i in range(100)]
    lines += ["system\nuser\nassistant\n"] * 50
    return lines


def _train_tokenizer(
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
    eos_token: str = "<|im_end|>",
    pad_token: str = "<|endoftext|>",
    chat_template: str = CHAT_TEMPLATE,
    plain_tokens: Sequence[str] = (),
) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the fixed corpus, with a family's special tokens as the first ids.

    `plain_tokens` are added whole but not special, so decoding keeps them, as published tokenizers
    do for reasoning and answer markers such as `<think>` or `<|begin_of_box|>`.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    if plain_tokens:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain_tokens])
    return fast_tokenizer(tok, special_tokens, eos_token, pad_token, chat_template, model_max_length=4096)


def fast_tokenizer(
    tok: Tokenizer,
    special_tokens: Sequence[str],
    eos_token: str,
    pad_token: str,
    chat_template: str,
    model_max_length: int,
    unk_token: str | None = None,
) -> PreTrainedTokenizerFast:
    """A trained `tokenizers.Tokenizer` as the transformers tokenizer a checkpoint folder saves.

    Decoded spaces are not cleaned up, so decoding gives back exactly the text that was encoded.
    """
    from transformers import PreTrainedTokenizerFast

    unk = {} if unk_token is None else {"unk_token": unk_token}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos_token,
        pad_token=pad_token,
        **unk,
        extra_special_tokens=list(special_tokens),
        chat_template=chat_template,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def _build_processor(tokenizer: PreTrainedTokenizerFast) -> Qwen3VLProcessor:
    """Qwen3-VL processor with a small pixel budget so two images cost tens of tokens, not thousands."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    geometry = {
        "patch_size": PATCH_SIZE,
        "merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    }
    image_processor = Qwen2VLImageProcessor(
        **geometry,
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    video_processor = Qwen3VLVideoProcessor(
        **geometry,
        size={"shortest_edge": MIN_PIXELS * TEMPORAL_PATCH_SIZE, "longest_edge": MAX_PIXELS * 8},
        min_frames=2,
        max_frames=8,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def _model_config(tokenizer: PreTrainedTokenizerFast, moe: bool) -> Qwen3VLConfig | Qwen3VLMoeConfig:
    """Tiny shapes within the stack's limits: head_dim 64 (vLLM CPU attention), mrope over head_dim / 2."""
    from transformers import Qwen3VLConfig, Qwen3VLMoeConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    hidden = 128
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 500000.0,
            "mrope_section": [8, 12, 12],
            "mrope_interleaved": True,
        },
        "tie_word_embeddings": True,
        "bos_token_id": None,
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    if moe:
        text |= {
            "num_experts": 4,
            "num_experts_per_tok": 2,
            # 2 * 96 != hidden 128: a square fused expert tensor would make its layout ambiguous on load.
            "moe_intermediate_size": 96,
            "decoder_sparse_step": 1,
            # transformers always renormalises the top-k router weights; vLLM needs this flag to do the same.
            "norm_topk_prob": True,
        }
    side = MAX_PIXELS**0.5 / PATCH_SIZE
    vision = {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "out_hidden_size": hidden,
        "num_position_embeddings": int(side * side),
        "deepstack_visual_indexes": [1],
    }
    config_class = Qwen3VLMoeConfig if moe else Qwen3VLConfig
    return config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def _init_model(config: Qwen3VLConfig | Qwen3VLMoeConfig, seed: int) -> PreTrainedModel:
    """Instantiate with transformers' own init, drawn from a seeded RNG that does not leak to callers."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration, Qwen3VLMoeForConditionalGeneration

    model_class = (
        Qwen3VLMoeForConditionalGeneration
        if config.model_type == "qwen3_vl_moe"
        else Qwen3VLForConditionalGeneration
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.to(torch.float32).eval()


_CARD = """\
---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [test-fixture, random-weights]
---
# {name}

**Random weights. A test fixture, not a model.** Its outputs are noise.

Written offline by `editcaption.demo.tiny_models.build_tiny_qwen3vl(seed={seed}, moe={moe})` so that
tests and the CPU demo exercise the real Qwen3-VL code paths (transformers, TRL, vLLM) in seconds.
The same seed always gives byte-identical files.

- architecture: `{arch}`, {params:,} parameters (float32)
- text: {layers} layers, hidden {hidden}, head_dim {head_dim}{moe_line}
- vision: depth {depth}, hidden {vhidden}, patch {patch}, merge {merge}, {min_px}–{max_px} pixels per image
- tokenizer: byte-level BPE, {vocab} tokens, trained on a fixed English image-editing corpus;
  Qwen special tokens and a Qwen-style chat template
"""


def _model_card(model: PreTrainedModel, vocab: int, seed: int, moe: bool) -> str:
    """The folder's README: says loudly that the weights are random, and what shapes they have."""
    text, vision = model.config.text_config, model.config.vision_config
    moe_line = (
        f", {text.num_experts} experts (top-{text.num_experts_per_tok}, intermediate {text.moe_intermediate_size})"
        if moe
        else ""
    )
    return _CARD.format(
        name="tiny-qwen3vl-moe" if moe else "tiny-qwen3vl",
        seed=seed,
        moe=moe,
        arch=type(model).__name__,
        params=sum(p.numel() for p in model.parameters()),
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        head_dim=text.head_dim,
        moe_line=moe_line,
        depth=vision.depth,
        vhidden=vision.hidden_size,
        patch=PATCH_SIZE,
        merge=MERGE_SIZE,
        min_px=f"{MIN_PIXELS:,}",
        max_px=f"{MAX_PIXELS:,}",
        vocab=vocab,
    )


def build_tiny_qwen3vl(out: str | Path, seed: int = 0, moe: bool = False) -> Path:
    """Write a tiny Qwen3-VL (or Qwen3-VL-MoE) checkpoint folder to `out` and return it.

    The folder loads with `AutoProcessor` / `AutoModelForImageTextToText` and with vLLM, like a hub
    checkpoint. `seed` fixes the weights; the tokenizer and processor do not depend on it.
    """
    from transformers import GenerationConfig

    from editcaption.training.export import published_layout

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    processor = _build_processor(tokenizer)
    model = _init_model(_model_config(tokenizer, moe), seed)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        do_sample=False,
    )
    if moe:
        model.save_pretrained(
            out, state_dict=published_layout(model.state_dict()), save_original_format=False
        )
    else:
        model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "README.md").write_text(_model_card(model, len(tokenizer), seed, moe))
    return out
