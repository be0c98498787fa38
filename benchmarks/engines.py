"""Engine throughput on the tiny Qwen3-VL: pairs/s per backend, and the Ray Data vLLM path as a ratio
of bare `vllm.LLM.generate` on the same requests, measured in the same run.

    python benchmarks/engines.py --model .cache/tiny-qwen3vl --out benchmarks/results/engines.json

Every backend answers the same greedy requests built from the bundled sample pairs. Wall times
include each backend's start-up (engine load, actor start) because that is what a job pays; the bare
vLLM baseline also reports its generate-only time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MAX_PIXELS = 256 * 256
MAX_MODEL_LEN = 2048


def sample_requests(n: int, max_tokens: int) -> list:
    from editcaption.engines import EngineRequest, SamplingSettings
    from editcaption.prompts.instruction import instruction_messages

    root = Path(__file__).resolve().parents[1] / "editcaption" / "data" / "sample_pairs"
    pairs = sorted(p for p in root.iterdir() if (p / "source.png").exists())
    sampling = SamplingSettings(max_tokens=max_tokens, temperature=0.0)
    return [
        EngineRequest(
            request_id=f"r{i}",
            images=[
                (pairs[i % len(pairs)] / "source.png").read_bytes(),
                (pairs[i % len(pairs)] / "target.png").read_bytes(),
            ],
            messages=instruction_messages(),
            sampling=sampling,
        )
        for i in range(n)
    ]


def bare_vllm(model: str, requests: list) -> dict:
    """The baseline: one in-process `vllm.LLM`, the same prompts, pixels and sampling."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from editcaption.engines.base import request_images
    from editcaption.engines.vllm_engine import shutdown_llm

    started = time.perf_counter()
    llm = LLM(
        model=model, dtype="float32", enforce_eager=True, max_model_len=MAX_MODEL_LEN, max_num_seqs=16,
        limit_mm_per_prompt={"image": 2, "video": 0},
    )  # fmt: skip
    loaded = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = [
        {
            "prompt": tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True),
            "multi_modal_data": {"image": request_images(r.to_row(), MAX_PIXELS, 3136)},
        }
        for r in requests
    ]
    params = SamplingParams(max_tokens=requests[0].sampling.max_tokens, temperature=0.0)
    gen_start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    done = time.perf_counter()
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    shutdown_llm(llm)
    return {
        "load_s": round(loaded - started, 2),
        "generate_s": round(done - gen_start, 2),
        "wall_s": round(done - started, 2),
        "pairs_per_s": round(len(requests) / (done - started), 3),
        "generate_pairs_per_s": round(len(requests) / (done - gen_start), 3),
        "output_tokens": tokens,
    }


def through_engine(engine, requests: list) -> dict:
    """Wall time includes start-up (actors, engine load), as a job pays it. Ray Data hands results
    over in blocks, so per-row arrival times say nothing about the rate; see `marginal`."""
    import ray.data

    started = time.perf_counter()
    rows = engine.apply(ray.data.from_items([r.to_row() for r in requests])).take_all()
    wall = time.perf_counter() - started
    return {
        "requests": len(requests),
        "wall_s": round(wall, 2),
        "pairs_per_s": round(len(requests) / wall, 3),
        "output_tokens": sum(int(r["num_output_tokens"] or 0) for r in rows),
        "errors": sum(bool(r["error"]) for r in rows),
    }


def marginal(small: dict, large: dict) -> float:
    """Pairs/s on the requests the large run adds: fixed start-up costs cancel out."""
    return round((large["requests"] - small["requests"]) / (large["wall_s"] - small["wall_s"]), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="tiny Qwen3-VL folder (editcaption fixtures build)")
    parser.add_argument("--out", default="benchmarks/results/engines.json")
    parser.add_argument("--requests", type=int, default=192, help="requests for the vLLM paths")
    parser.add_argument("--hf-requests", type=int, default=24, help="requests for transformers (slower)")
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()

    import ray

    from editcaption.engines import (
        OpenAIEngineConfig,
        TransformersEngineConfig,
        VLLMEngineConfig,
        make_engine,
    )
    from editcaption.engines.local_server import vllm_openai_server
    from editcaption.ray_setup import init_ray

    requests = sample_requests(args.requests, args.max_tokens)
    hf_requests = requests[: args.hf_requests]
    report: dict = {
        "model": args.model,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }

    print("bare vllm.LLM.generate ...", flush=True)
    report["bare_vllm"] = bare_vllm(args.model, requests)

    init_ray()
    try:
        vllm_cfg = VLLMEngineConfig(
            model=args.model, device="cpu", dtype="float32", enforce_eager=True, max_model_len=MAX_MODEL_LEN,
            max_num_seqs=16, batch_size=16, max_pixels=MAX_PIXELS,
        )  # fmt: skip
        print("ray.data.llm vLLM, at N and 3N requests ...", flush=True)
        report["ray_data_vllm"] = small = through_engine(make_engine(vllm_cfg), requests)
        report["ray_data_vllm_3x"] = large = through_engine(make_engine(vllm_cfg), requests * 3)
        report["ray_data_vllm_marginal_pairs_per_s"] = marginal(small, large)

        print("OpenAI-compatible client → local vLLM server ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            server_args = ["--max-model-len", str(MAX_MODEL_LEN), "--max-num-seqs", "16", "--dtype", "float32", "--enforce-eager"]  # fmt: skip
            with vllm_openai_server(args.model, "tiny", Path(tmp) / "server.log", server_args) as base:
                http_cfg = OpenAIEngineConfig(
                    base_url=base, model="tiny", api_key_env=None, max_concurrency=16, max_pixels=MAX_PIXELS
                )
                report["openai_http"] = {
                    **through_engine(make_engine(http_cfg), requests),
                    "note": "server start-up (like bare load_s) is not in wall_s",
                }

        print("transformers generate ...", flush=True)
        hf_cfg = TransformersEngineConfig(model=args.model, max_pixels=MAX_PIXELS, batch_size=8)
        report["transformers"] = {
            **through_engine(make_engine(hf_cfg), hf_requests),
            "requests": len(hf_requests),
        }
    finally:
        ray.shutdown()

    bare = report["bare_vllm"]
    report["ratios"] = {
        "ray_data_vllm_vs_bare_wall": round(report["ray_data_vllm"]["pairs_per_s"] / bare["pairs_per_s"], 3),
        "ray_data_vllm_marginal_vs_bare_generate": round(
            report["ray_data_vllm_marginal_pairs_per_s"] / bare["generate_pairs_per_s"], 3
        ),
        "openai_http_vs_bare_generate": round(
            report["openai_http"]["pairs_per_s"] / bare["generate_pairs_per_s"], 3
        ),
        "transformers_vs_bare_wall": round(report["transformers"]["pairs_per_s"] / bare["pairs_per_s"], 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
