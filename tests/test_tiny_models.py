"""The tiny Qwen3-VL fixtures must behave like real checkpoints for every consumer in the stack:
transformers, TRL and vLLM. If one of these breaks, every higher-level test would fail obscurely."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from PIL import Image

from editcaption.demo.tiny_models import build_tiny_qwen3vl

if TYPE_CHECKING:
    from transformers import PreTrainedModel, ProcessorMixin

TWO_IMAGE_MESSAGES = [
    {
        "role": "user",
        "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Describe the edit."}],
    }
]
# Images are width x height = 128 x 96: 8 x 6 patches of 16 px, merged 2 x 2 -> 12 tokens each.
IMAGE_SIZE = (128, 96)
TOKENS_PER_IMAGE = (128 // 32) * (96 // 32)


def two_images() -> list[Image.Image]:
    return [Image.new("RGB", IMAGE_SIZE, "red"), Image.new("RGB", IMAGE_SIZE, "blue")]


def file_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def load(folder: Path) -> tuple[ProcessorMixin, PreTrainedModel]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoProcessor.from_pretrained(folder), AutoModelForImageTextToText.from_pretrained(folder)


def assert_greedy(model: PreTrainedModel, enc: dict, out: torch.Tensor, max_new_tokens: int) -> None:
    """`generate`'s greedy tokens are, one by one, the argmax of one forward pass over the prompt and
    the tokens before them (teacher forcing), and it stopped at its budget or at end-of-sequence."""
    prompt_len = enc["input_ids"].shape[1]
    new = out[0, prompt_len:]
    eos = model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos or [])
    assert len(new) == max_new_tokens or (len(new) >= 1 and int(new[-1]) in eos), new.tolist()
    # per-token inputs (attention mask, token types) extended over the new tokens, which are all text
    forced = {
        k: torch.cat([v, torch.full((1, len(new)), int(k == "attention_mask"), dtype=v.dtype)], dim=1)
        if v.shape == enc["input_ids"].shape
        else v
        for k, v in enc.items()
        if k != "input_ids"
    }
    with torch.no_grad():
        logits = model(input_ids=out, **forced).logits[0]
    assert logits[prompt_len - 1 : out.shape[1] - 1].argmax(-1).tolist() == new.tolist()


def test_same_seed_gives_byte_identical_files(tmp_path: Path, tiny_model: Path, tiny_moe_model: Path) -> None:
    assert file_digests(build_tiny_qwen3vl(tmp_path / "dense", seed=0)) == file_digests(tiny_model)
    assert file_digests(build_tiny_qwen3vl(tmp_path / "moe", seed=0, moe=True)) == file_digests(
        tiny_moe_model
    )

    other = file_digests(build_tiny_qwen3vl(tmp_path / "seed1", seed=1))
    same = file_digests(tiny_model)
    assert other["model.safetensors"] != same["model.safetensors"]
    assert other["tokenizer.json"] == same["tokenizer.json"]
    assert other["config.json"] == same["config.json"]


def test_folder_is_a_small_complete_checkpoint(tiny_model: Path) -> None:
    names = {p.name for p in tiny_model.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
    } <= names
    assert (tiny_model / "model.safetensors").stat().st_size < 5 * 2**20
    assert "Random weights" in (tiny_model / "README.md").read_text()

    generation = json.loads((tiny_model / "generation_config.json").read_text())
    processor, model = load(tiny_model)
    tok = processor.tokenizer
    assert generation["eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert generation["pad_token_id"] == tok.convert_tokens_to_ids("<|endoftext|>")

    cfg = model.config
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert cfg.text_config.vocab_size == len(tok)
    assert 1000 <= len(tok) <= 2048
    assert cfg.text_config.head_dim == 64
    assert sum(cfg.text_config.rope_parameters["mrope_section"]) == cfg.text_config.head_dim // 2
    assert cfg.vision_config.out_hidden_size == cfg.text_config.hidden_size
    assert max(cfg.vision_config.deepstack_visual_indexes) < cfg.vision_config.depth
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert type(processor.video_processor).__name__ == "Qwen3VLVideoProcessor"


def test_tokenizer_is_compact_on_editing_text_and_round_trips(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    for text, most in [
        ("Move the red circle to the viewer's left.", 10),
        ('{"instruction": "Rotate the cat 90 degrees clockwise.", "score": 17}', 20),
        ("The camera pans to the subject's right.", 9),
    ]:
        ids = tok(text)["input_ids"]
        assert len(ids) <= most, [tok.decode([i]) for i in ids]
        assert tok.decode(ids) == text
    assert tok.decode(tok("Ünïcode zebra ✓")["input_ids"]) == "Ünïcode zebra ✓"


def test_chat_template_and_image_pad_expansion(tiny_model: Path) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        *TWO_IMAGE_MESSAGES,
        {"role": "assistant", "content": [{"type": "text", "text": "Move the cat left."}]},
    ]
    vision = "<|vision_start|><|image_pad|><|vision_end|>"
    assert processor.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{vision}{vision}Describe the edit.<|im_end|>\n"
        "<|im_start|>assistant\nMove the cat left.<|im_end|>\n"
    )
    prompt = processor.apply_chat_template(TWO_IMAGE_MESSAGES, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")

    enc = processor(text=[prompt], images=[two_images()], return_tensors="pt")
    assert enc["image_grid_thw"].tolist() == [[1, 6, 8], [1, 6, 8]]
    n_pads = int((enc["input_ids"][0] == processor.image_token_id).sum())
    assert n_pads == 2 * TOKENS_PER_IMAGE
    assert enc["pixel_values"].shape == (2 * 4 * TOKENS_PER_IMAGE, 3 * 2 * 16 * 16)


def test_greedy_generate_with_two_images(tiny_model: Path) -> None:
    processor, model = load(tiny_model)
    prompt = processor.apply_chat_template(TWO_IMAGE_MESSAGES, tokenize=False, add_generation_prompt=True)
    enc = processor(text=[prompt], images=[two_images()], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=6, do_sample=False)
    assert_greedy(model, enc, out, max_new_tokens=6)


def test_sft_trainer_runs_two_steps(tiny_model: Path, tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    answers = [
        "Move the red circle to the viewer's left.",
        "Remove the blue square.",
        "Add a hat.",
        "Zoom in.",
    ]
    rows = [
        {
            "images": two_images(),
            # Content is always a list of parts: Arrow cannot hold strings and lists in one column.
            "messages": [
                *TWO_IMAGE_MESSAGES,
                {"role": "assistant", "content": [{"type": "text", "text": a}]},
            ],
        }
        for a in answers
    ]
    args = SFTConfig(
        output_dir=str(tmp_path / "sft"),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        max_length=None,
        report_to="none",
        save_strategy="no",
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=AutoModelForImageTextToText.from_pretrained(tiny_model),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoProcessor.from_pretrained(tiny_model),
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2
    # Random weights predict about uniformly, so the first step's loss is near ln(vocabulary) (measured
    # 7.15 for ln 1302 = 7.17); a loss over the wrong tokens (the prompt, padding) or not averaged is
    # far from it. The second batch, after a step at lr 1e-3, is already lower (measured 6.24).
    vocab = len(AutoProcessor.from_pretrained(tiny_model).tokenizer)
    assert losses[0] == pytest.approx(math.log(vocab), abs=0.5)
    assert losses[1] < losses[0]


def test_moe_checkpoint_uses_published_expert_layout(tiny_moe_model: Path) -> None:
    """vLLM reads fused experts as [experts, in, out]; transformers must transpose them back on load."""
    from safetensors import safe_open

    processor, model = load(tiny_moe_model)
    text = model.config.text_config
    assert type(model).__name__ == "Qwen3VLMoeForConditionalGeneration"
    assert (text.num_experts, text.num_experts_per_tok) == (4, 2)

    params = dict(model.named_parameters())
    with safe_open(tiny_moe_model / "model.safetensors", "pt") as f:
        for name, shape in [
            ("gate_up_proj", (text.num_experts, text.hidden_size, 2 * text.moe_intermediate_size)),
            ("down_proj", (text.num_experts, text.moe_intermediate_size, text.hidden_size)),
        ]:
            key = f"model.language_model.layers.0.mlp.experts.{name}"
            stored = f.get_tensor(key)
            assert tuple(stored.shape) == shape
            assert torch.equal(params[key].detach(), stored.transpose(1, 2))

    prompt = processor.apply_chat_template(TWO_IMAGE_MESSAGES, tokenize=False, add_generation_prompt=True)
    enc = processor(text=[prompt], images=[two_images()], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert_greedy(model, enc, out, max_new_tokens=4)


# Runs in its own interpreter: vLLM spawns engine processes and leaves state we keep out of pytest.
VLLM_SCRIPT = """
import json, sys
from PIL import Image
from vllm import LLM, SamplingParams

def main():
    model, messages, size = sys.argv[1], json.loads(sys.argv[2]), tuple(json.loads(sys.argv[3]))
    llm = LLM(model=model, limit_mm_per_prompt={"image": 2, "video": 0}, enforce_eager=True,
              dtype="float32", max_model_len=2048)
    prompt = llm.get_tokenizer().apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    images = [Image.new("RGB", size, "red"), Image.new("RGB", size, "blue")]
    params = SamplingParams(max_tokens=8, temperature=0.0, prompt_logprobs=0)
    out = llm.generate([{"prompt": prompt, "multi_modal_data": {"image": images}}], params)[0]
    logprobs = [None if d is None else d[t].logprob for t, d in zip(out.prompt_token_ids, out.prompt_logprobs)]
    print("RESULT " + json.dumps({"prompt_ids": list(out.prompt_token_ids), "prompt_logprobs": logprobs,
                                  "text": out.outputs[0].text, "n_out": len(out.outputs[0].token_ids),
                                  "finish_reason": out.outputs[0].finish_reason}), flush=True)

if __name__ == "__main__":
    main()
"""


def run_vllm(model: Path, tmp_path: Path, timeout: float = 420) -> dict:
    """Run VLLM_SCRIPT in a fresh process group, so that a hung engine can be killed with its children."""
    script = tmp_path / "vllm_two_images.py"
    script.write_text(VLLM_SCRIPT)
    argv = [sys.executable, str(script), str(model), json.dumps(TWO_IMAGE_MESSAGES), json.dumps(IMAGE_SIZE)]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"vLLM did not finish in {timeout} s:\n{output[-4000:]}")
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, output[-4000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.mark.slow
@pytest.mark.parametrize(
    "fixture",
    # the MoE model on vLLM (38 s) is `make test-extra`, beyond CI's budget; its expert layout is checked above
    ["tiny_model", pytest.param("tiny_moe_model", marks=pytest.mark.ci_extra)],
)
def test_vllm_loads_and_matches_transformers(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Same prompt ids and the same prompt log-probs as transformers: weights, layout and mrope all agree."""
    model_dir: Path = request.getfixturevalue(fixture)
    result = run_vllm(model_dir, tmp_path)
    # temperature 0 and max_tokens 8: eight tokens, unless the reply ended on its own before
    assert isinstance(result["text"], str) and (result["n_out"] == 8 or result["finish_reason"] == "stop")

    processor, model = load(model_dir)
    prompt = processor.apply_chat_template(TWO_IMAGE_MESSAGES, tokenize=False, add_generation_prompt=True)
    enc = processor(text=[prompt], images=[two_images()], return_tensors="pt")
    ids = enc["input_ids"][0]
    assert ids.tolist() == result["prompt_ids"]
    assert int((ids == processor.image_token_id).sum()) == 2 * TOKENS_PER_IMAGE
    with torch.no_grad():
        logprobs = torch.log_softmax(model(**enc).logits[0, :-1].float(), dim=-1)
    ours = logprobs.gather(1, ids[1:, None])[:, 0]
    theirs = torch.tensor(result["prompt_logprobs"][1:])
    torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=0)
