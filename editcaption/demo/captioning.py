"""Caption world pairs with a miniature model in-process (transformers, greedy, batched).

The demo's models are a few MB and the world's images 128×128, so one process captions hundreds of
pairs in seconds on a CPU; the project's engines (vLLM, Ray) serve the same folders at scale.
"""

from __future__ import annotations

from pathlib import Path

from editcaption.demo.world import WorldPair, images
from editcaption.prompts.instruction import instruction_messages, parse_instruction


def caption_pairs(
    model_dir: str | Path, pairs: list[WorldPair], batch_size: int = 64, max_new_tokens: int = 24
) -> list[str | None]:
    """One instruction per pair (None where the reply held none), with the project's instruction prompt."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = processor.apply_chat_template(instruction_messages(), add_generation_prompt=True, tokenize=False)
    out: list[str | None] = []
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            enc = processor(
                text=[prompt] * len(chunk),
                images=[list(images(p)) for p in chunk],
                return_tensors="pt",
                padding=True,
            )
            generated = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=processor.tokenizer.pad_token_id,
            )
            replies = processor.tokenizer.batch_decode(
                generated[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
            )
            out += [parse_instruction(r) for r in replies]
    return out
