"""The shipped Serve configs, served on CPU by one `editcaption serve`: the CPU demo (`captioner.yaml`),
Qwen3-VL-8B on one GPU (`captioner-qwen3vl-8b.yaml`) and Qwen3-VL-235B-A22B tensor-parallel over 8 GPUs
(`captioner-qwen3vl-235b-a22b.yaml`, with its `engine_kwargs`: vLLM's mp executor and expert
parallelism).

Each file's application is taken as shipped and changed only through the configs' override mechanism
(`config.set_overrides`, what `editcaption serve --set` does): the model path (a tiny checkpoint of the
same architecture: Qwen3-VL, Qwen3-VL-MoE for the 235B-A22B), the CPU device (dtype float32, eager,
tensor parallelism 1), sizes (context, batch, pixel and token budgets, at most one replica each), the
API-key digest file, and a route prefix per application so the three share one Serve instance and one
Ray session. Auth, limits, URL fetching, timeouts and backpressure are the shipped ones.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image
from serve_process import ROOT, Server, free_port

from editcaption.config import set_overrides
from editcaption.serving.security import hash_key

# Three vLLM engines in one Serve take minutes to start: beyond CI's 25-minute budget, `make test-production`.
pytestmark = [pytest.mark.slow, pytest.mark.production_extra]
KEY = "production-serve-config-test-key"
CPU_ENGINE = {
    "device": "cpu",
    "dtype": "float32",
    "enforce_eager": True,
    "tensor_parallel_size": 1,
    "max_model_len": 2048,
    "max_num_seqs": 8,
    "max_pixels": 65536,
}
STYLE = {"short_tokens": 12, "medium_tokens": 16, "long_tokens": 24}


class ConfigServer(Server):
    """`editcaption serve --config C` with no `--model`: each application keeps the model its args name."""

    def __init__(self, config: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [
            sys.executable,
            "-m",
            "editcaption",
            "serve",
            "--config",
            str(config),
            "--port",
            str(self.port),
        ]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.stopped = False

    def wait_ready_at(self, prefixes: list[str], timeout_s: float = 2400) -> None:
        deadline = time.monotonic() + timeout_s
        waiting = list(prefixes)
        while waiting and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`editcaption serve` exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                waiting = [
                    p for p in waiting if httpx.get(f"{self.url}{p}/readyz", timeout=5).status_code != 200
                ]
            time.sleep(2)
        if waiting:
            raise TimeoutError(f"{waiting} not ready after {timeout_s} s:\n{self.tail()}")


# file -> (route prefix, model fixture, whether auth is on as shipped)
SERVED = {
    "captioner.yaml": ("/demo", "tiny_model", False),
    "captioner-qwen3vl-8b.yaml": ("/qwen3vl-8b", "tiny_model", True),
    "captioner-qwen3vl-235b-a22b.yaml": ("/qwen3vl-235b", "tiny_moe_model", True),
}


def _application(name: str, model: Path, keys: Path) -> dict:
    shipped = yaml.safe_load((ROOT / "serve_configs" / name).read_text())
    (app,) = shipped["applications"]
    sets = [f"captioner.engine.model={json.dumps(str(model))}"]
    sets += [f"captioner.engine.{k}={json.dumps(v)}" for k, v in CPU_ENGINE.items()]
    sets += [f"style.{k}={v}" for k, v in STYLE.items()]
    sets += ["captioner.batching.max_batch_size=8"]
    if app["args"].get("auth", {}).get("mode") == "required":
        sets.append(f"auth.key_hashes_file={json.dumps(str(keys))}")
    app["args"].update(set_overrides(app["args"], sets))
    for deployment in app.get("deployments", []):
        scaling = deployment.get("autoscaling_config")
        if scaling:
            scaling.update(min_replicas=1, max_replicas=1)
    app["name"] = name.removesuffix(".yaml")
    app["route_prefix"] = SERVED[name][0]
    return app


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ConfigServer]:
    tmp = tmp_path_factory.mktemp("production-serve")
    keys = tmp / "api-keys.sha256"
    keys.write_text(f"{hash_key(KEY)}\n")
    apps = [
        _application(name, request.getfixturevalue(fixture), keys) for name, (_, fixture, _) in SERVED.items()
    ]
    config = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": 8000},
        "applications": apps,
    }
    path = tmp / "production-configs.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    srv = ConfigServer(path, tmp / "serve.log")
    try:
        srv.wait_ready_at([prefix for prefix, _, _ in SERVED.values()])
        yield srv
    finally:
        srv.stop()


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.timeout(2700)  # the first test waits for the three engines (minutes on a loaded machine)
@pytest.mark.parametrize("name", list(SERVED))
def test_shipped_serve_config_answers_on_cpu(server: ConfigServer, name: str):
    prefix, _, auth = SERVED[name]
    url = f"{server.url}{prefix}"
    body = {"source": base64.b64encode(_png(1)).decode(), "target": base64.b64encode(_png(2)).decode()}
    headers = {"Authorization": f"Bearer {KEY}"} if auth else {}
    reply = httpx.post(f"{url}/v1/instructions", json=body, headers=headers, timeout=300)
    assert reply.status_code == 200, reply.text
    (candidate,) = reply.json()["candidates"]
    assert candidate["raw_text"] and candidate["error"] is None
    if auth:  # shipped with auth required: no key, no answer
        refused = httpx.post(f"{url}/v1/instructions", json=body, timeout=60)
        assert refused.status_code == 401, refused.text
    chat = {
        "model": reply.json()["model"],
        "max_tokens": 6,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + body["source"]}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + body["target"]}},
                    {"type": "text", "text": "Describe the edit."},
                ],
            }
        ],
    }
    completion = httpx.post(f"{url}/v1/chat/completions", json=chat, headers=headers, timeout=300)
    assert completion.status_code == 200, completion.text
    assert completion.json()["choices"][0]["message"]["role"] == "assistant"


def test_the_235b_config_runs_its_engine_kwargs_on_the_moe_checkpoint(server: ConfigServer):
    shipped = yaml.safe_load((ROOT / "serve_configs" / "captioner-qwen3vl-235b-a22b.yaml").read_text())
    kwargs = shipped["applications"][0]["args"]["captioner"]["engine"]["engine_kwargs"]
    assert kwargs == {"distributed_executor_backend": "mp", "enable_expert_parallel": True}
    models = httpx.get(f"{server.url}/qwen3vl-235b/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["qwen3vl-235b-a22b"]
    assert not server.stop(), "no process outlived the server"
