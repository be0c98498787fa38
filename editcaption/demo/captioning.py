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
from editcaption.prompts.scoring import aggregate_editscore
from editcaption.schema import ERROR_TYPES, Score

Question = tuple[list[dict[str, Any]], list[Image.Image]]  # chat messages and their images


def _load(model_dir: str | Path, padding_side: str) -> tuple[Any, Any]:
    """(processor, float32 model in eval mode) of a miniature model folder."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = padding_side
    return processor, AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()


def answer(
    model_dir: str | Path, questions: Sequence[Question], batch_size: int = 64, max_new_tokens: int = 24
) -> list[str]:
    """The model's greedy reply to each (messages, images) question."""
    import torch

    processor, model = _load(model_dir, padding_side="left")
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
    """EditScore `Score` of each pair's candidate instruction: one semantic-consistency pass per
    candidate and one perceptual-quality pass per distinct pair (it sees only the target, so every
    candidate of a pair shares it), parsed and combined exactly as the synthesis stage does."""
    sc = [
        (semantic_consistency_messages(c, score_range), list(images(p)))
        for p, c in zip(pairs, candidates, strict=True)
    ]
    targets = {p.pair_id: p for p in pairs}
    pq = [(perceptual_quality_messages(score_range), [images(p)[1]]) for p in targets.values()]
    replies = answer(model_dir, sc + pq, max_new_tokens=64)  # a reply with `records.seen_facts` runs to 51
    perceptual = dict(zip(targets, replies[len(sc) :], strict=True))
    return [
        aggregate_editscore(p.pair_id, "0", str(model_dir), [s], [perceptual[p.pair_id]], score_range)
        for p, s in zip(pairs, replies[: len(sc)], strict=True)
    ]


def completion_logprobs(
    model_dir: str | Path, questions: Sequence[Question], completions: Sequence[str], batch_size: int = 32
) -> list[float]:
    """log π(completion | question), summed over the completion's tokens (its end-of-turn included),
    with the completion cut from the chat template exactly as TRL's preference trainers cut it."""
    import torch

    processor, model = _load(model_dir, padding_side="right")
    texts, lengths = [], []
    for (messages, _), completion in zip(questions, completions, strict=True):
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        reply = {"role": "assistant", "content": [{"type": "text", "text": completion}]}
        full = processor.apply_chat_template([*messages, reply], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError(f"{model_dir}: the chat template does not extend the prompt with the reply")
        texts.append(full)
        lengths.append(len(processor.tokenizer(full[len(prompt) :], add_special_tokens=False).input_ids))
    totals: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            stop = start + batch_size
            enc = processor(
                text=texts[start:stop],
                images=[list(ims) for _, ims in questions[start:stop]],
                return_tensors="pt",
                padding=True,
            )
            logps = torch.log_softmax(model(**enc).logits[:, :-1].float(), dim=-1)
            token_logps = logps.gather(-1, enc["input_ids"][:, 1:, None])[..., 0]
            # token_logps[j] scores input token j + 1, so the last real token's score sits at length − 2.
            ends = enc["attention_mask"].sum(dim=1) - 2
            for row, (end, n) in enumerate(zip(ends.tolist(), lengths[start:stop], strict=True)):
                totals.append(float(token_logps[row, end - n + 1 : end + 1].sum()))
    return totals


def preference_flags(model_dir: str | Path, pairs: list[WorldPair]) -> list[list[tuple[str, bool]]]:
    """Per pair, for each labelled wrong variant: (its error type, whether the model finds it at least as
    likely as the canonical instruction). The choice DPO trains, measured on every variant rather than
    on the few a greedy caption happens to reach."""
    questions, texts = [], []
    for pair in pairs:
        question = (instruction_messages(), list(images(pair)))
        for text in [pair.instruction, *(v.text for v in pair.variants)]:
            questions.append(question)
            texts.append(text)
    logps = iter(completion_logprobs(model_dir, questions, texts))
    flags = []
    for pair in pairs:
        canonical = next(logps)
        flags.append([(v.error_type, next(logps) >= canonical) for v in pair.variants])
    return flags


def preference_error_rates(flags: list[list[tuple[str, bool]]]) -> dict[str, float | None]:
    """Per error type, the share of variants preferred to the canonical instruction (None: no variant)."""
    wrong: dict[str, list[bool]] = {}
    for pair_flags in flags:
        for error_type, preferred in pair_flags:
            wrong.setdefault(error_type, []).append(preferred)
    return {t: (sum(v) / len(v) if (v := wrong.get(t)) else None) for t in ERROR_TYPES}


def preference_errors(model_dir: str | Path, pairs: list[WorldPair]) -> dict[str, float | None]:
    """Per error type, the share of the pairs' labelled wrong variants the model finds at least as
    likely as the canonical instruction."""
    return preference_error_rates(preference_flags(model_dir, pairs))
