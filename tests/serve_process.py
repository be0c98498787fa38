"""`editcaption serve` as a child process for the Serve tests: start on a free loopback port, wait
until /readyz answers, stop with SIGTERM and report any process that outlived it."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]


# Ports Ray binds by default once the server starts it (GCS, dashboard, client server, dashboard
# agent): a port free now but one of these would be taken by Ray before Serve's proxy binds it (seen:
# "Failed to bind to address '127.0.0.1:52365'").
RAY_DEFAULT_PORTS = {6379, 8265, 10001, 52365}


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `timeout` seconds; always reaped."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RAY_DEFAULT_PORTS:
            return port


class Server:
    """`editcaption serve` as a child process; `stop()` says which of its processes outlived it."""

    def __init__(self, config: Path, model: Path, log: Path, env: dict[str, str] | None = None) -> None:
        """`env`: the command's whole environment (default: this process's)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "editcaption", "serve", "--config", str(config)]
        cmd += ["--port", str(self.port), "--model", str(model)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
        self.stopped = False

    def wait_ready(self, timeout_s: float = 400) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`editcaption serve` exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):  # not listening yet
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            time.sleep(2)
        raise TimeoutError(f"the app was not ready after {timeout_s} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> list[str]:
        """SIGTERM the command, wait for it, and list its descendants still running (killing them)."""
        if self.stopped:
            return []
        self.stopped = True
        try:
            descendants = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        _, alive = psutil.wait_procs(descendants, timeout=10)
        left = []
        for p in alive:
            try:
                left.append(f"{p.pid} {p.name()} ({p.status()})")
                if p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
            except psutil.NoSuchProcess:
                continue
        return [entry for entry in left if "zombie" not in entry]
