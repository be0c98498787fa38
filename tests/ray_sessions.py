"""Ending a Ray session whose driver was SIGKILLed, for the tests that kill runs on purpose."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def kill_ray_session(ray_tmp: Path) -> None:
    """Ray's daemons and workers outlive a SIGKILLed driver (workers rename themselves `ray::…`),
    so find every process whose environment carries this run's RAY_TMPDIR and end it."""
    marker = f"RAY_TMPDIR={ray_tmp}".encode()
    for _ in range(3):
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue
        time.sleep(0.5)
