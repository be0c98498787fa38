"""What the engine benchmarks share: a baseline timed as a fresh process, and same-run ratios.

A user's script pays for Python, the imports and the model load; a pipeline's wall clock includes
its own start-up, so the fair baseline for it is the bare engine launched the same way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def run_json_script(args: list[str], what: str, timeout_s: int = 3600) -> tuple[dict, float]:
    """Run `python ARGS` as a fresh process; return the last JSON object line it printed and its wall
    clock from launch to exit. A failure exits with its stderr's tail."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("{"))), wall


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b to three places; None when either is missing or zero."""
    return round(a / b, 3) if a and b else None
