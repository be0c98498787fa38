"""Ask a miniature model about world pairs in-process (transformers, greedy, batched): captions from the
captioner's instruction prompt, EditScore scores from the scorer's two prompts.

The demo's models are a few MB and the world's images 128×128, so one process answers hundreds of
prompts in seconds on a CPU; the project's engines (vLLM, Ray) serve the same folders at scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from editcaption.demo.world import WorldPair, images
from editcaption.prompts.editscore import perceptual_quality_messages, semantic_consistency_messages
from editcaption.prompts.instruction import instruction_messages, parse_instruction
from editcaption.schema import Score
from editcaption.synthesis.editscore import aggregate_editscore

Question = tuple[list[dict[str, Any]], list[Image.Image]]  # chat messages and their images


def answer(
    model_dir: str | Path, questions: Sequence[Question], batch_size: int = 64, max_new_tokens: int = 24
) -> list[str]:
    """The model's greedy reply to each (messages, images) question."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    replies: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(questions), batch_size):
            chunk = questions[start : start + batch_size]
            enc = processor(
                text=[
                    processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
                    for m, _ in chunk
                ],
                images=[list(ims) for _, ims in chunk],
                return_tensors="pt",
                padding=True,
            )
            generated = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=processor.tokenizer.pad_token_id,
            )
            replies += processor.tokenizer.batch_decode(
                generated[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
            )
    return replies


def caption_pairs(
    model_dir: str | Path, pairs: list[WorldPair], batch_size: int = 64, max_new_tokens: int = 24
) -> list[str | None]:
    """One instruction per pair (None where the reply held none), with the project's instruction prompt."""
    questions = [(instruction_messages(), list(images(p))) for p in pairs]
    return [parse_instruction(r) for r in answer(model_dir, questions, batch_size, max_new_tokens)]


def score_candidates(
    model_dir: str | Path, pairs: list[WorldPair], candidates: list[str], score_range: int = 25
) -> list[Score]:
    """EditScore `Score` of each pair's candidate instruction: one semantic-consistency and one
    perceptual-quality pass, parsed and combined exactly as the synthesis stage does."""
    sc = [
        (semantic_consistency_messages(c, score_range), list(images(p)))
        for p, c in zip(pairs, candidates, strict=True)
    ]
    pq = [(perceptual_quality_messages(score_range), [images(p)[1]]) for p in pairs]
    replies = answer(model_dir, sc + pq, max_new_tokens=32)
    return [
        aggregate_editscore(p.pair_id, "0", str(model_dir), [s], [q], score_range)
        for p, s, q in zip(pairs, replies[: len(pairs)], replies[len(pairs) :], strict=True)
    ]
