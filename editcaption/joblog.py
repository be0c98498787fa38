"""Quiet jobs: what Ray, vLLM and the trainers print goes to a log file in the job's output folder.

A job on a laptop prints thousands of lines (one vLLM warning about thread binding came 634 times in
one demo), from processes we do not control: Ray workers, whose output the driver relays, vLLM engine
processes, Ray's own daemons started by `ray.init`. So the capture is at the file-descriptor level:
while a job runs, this process's stdout and stderr (and, through inheritance, every process it
starts) point at the log file, and the terminal gets only what the job's display writes to it.
`verbose=True` leaves everything on the terminal, as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from rich.console import Console

from editcaption.paths import is_uri

LOG_FOLDER = "logs"
T = TypeVar("T")
TAIL_LINES_ON_ERROR = 15
NON_TERMINAL_WIDTH = 120  # a log or a pipe: one progress line, not cut at 80 columns


@dataclasses.dataclass
class JobLog:
    """Where a job's output went and the console that still reaches the terminal."""

    console: Console
    path: Path | None  # None: verbose, nothing captured


def log_path_for(output: str, job: str) -> Path:
    """`<output>/logs/<job>.log` for a local output folder; object-store outputs log under ./logs/."""
    folder = Path(LOG_FOLDER) if is_uri(output) else Path(output) / LOG_FOLDER
    return (folder / f"{job}.log").absolute()


@contextlib.contextmanager
def job_output(
    log_path: Path, verbose: bool = False, expected: tuple[type[BaseException], ...] = ()
) -> Iterator[JobLog]:
    """Run the body with stdout/stderr (fds 1 and 2) appended to `log_path`, unless `verbose`.

    Yields a `JobLog` whose console writes to the real terminal. When the body raises anything but the
    `expected` errors (which carry their own clear message), the log's last lines and its path are
    shown on the terminal before the exception goes on.
    """
    if verbose:
        yield JobLog(Console(stderr=True), None)
        return
    _quiet_ray_data()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1)
    console = Console(file=terminal, width=None if terminal.isatty() else NON_TERMINAL_WIDTH)
    with open(log_path, "a", buffering=1) as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
        log.flush()
        for fd in (1, 2):
            os.dup2(log.fileno(), fd)
        try:
            yield JobLog(console, log_path)
        except expected:
            raise
        except BaseException:
            _restore(saved)
            _show_tail(console, log_path)
            raise
        finally:
            _restore(saved)
            terminal.close()


def _restore(saved: dict[int, int]) -> None:
    """Point fds 1 and 2 back at what they were (idempotent: the saved copies are closed once)."""
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in list(saved.items()):
        os.dup2(copy, fd)
        os.close(copy)
        del saved[fd]


def _show_tail(console: Console, log_path: Path) -> None:
    lines = log_path.read_text(errors="replace").splitlines()[-TAIL_LINES_ON_ERROR:]
    console.print(f"[red]the job failed[/red]; last lines of {log_path}:", highlight=False)
    for line in lines:
        console.print(f"  {line}", markup=False, highlight=False)


def _quiet_ray_data() -> None:
    """Ray Data's own progress bars would only fill the log with carriage returns."""
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    context = sys.modules.get("ray.data.context")
    if context is not None:
        context.DataContext.get_current().enable_progress_bars = False


def run_job(
    job: Callable[[], T],
    log_path: Path,
    verbose: bool,
    status: str,
    expected: tuple[type[BaseException], ...] = (),
) -> tuple[T, Path | None]:
    """`job()` with its output in `log_path` and a spinner saying `status` on the terminal (everything
    on the terminal with `verbose`); a Ray the job started is shut down inside, so its exit messages
    are captured too. Returns (what `job` returned, the log path or None)."""
    from editcaption.ray_setup import shutdown_if_started

    with job_output(log_path, verbose, expected) as log, shutdown_if_started():
        if verbose:
            return job(), None
        with log.console.status(f"{status} (log: {log_path})"):
            return job(), log.path
