"""One live line per job: how far a synthesis run is, read from the shards it commits.

The pipeline runs in Ray workers; what the driver can see cheaply is the output folder, where every
finished block of pairs lands as one committed shard (`synthesis/shards.py`). A thread lists the new
shards every half second and reads only their `status` column, so the display costs nothing the
pipeline would notice and shows exactly what is safely written: pairs done of the total, the rate
since the first shard (start-up excluded), the time left at that rate, and kept / filtered /
quarantined so far.
"""

from __future__ import annotations

import posixpath
import threading
import time
from collections import Counter
from typing import Any

import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from editcaption.io.fs import open_fs
from editcaption.synthesis.shards import SHARD_PREFIX

POLL_S = 0.5


class SynthesisProgress:
    """A rich progress display of the synthesis run writing into `output` (a context manager)."""

    def __init__(self, output: str, total: int | None, console: Console, poll_s: float = POLL_S) -> None:
        self.fs, self.root = open_fs(output.rstrip("/") + "/pairs")
        self.total, self.poll_s = total, poll_s
        self.seen: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.first_shard: tuple[float, int] | None = None  # (time, pairs done) when the first new shard came
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("pairs · {task.fields[rate]} · ETA {task.fields[eta]} ·"),
            TextColumn(
                "kept {task.fields[kept]} · filtered {task.fields[filtered]}{task.fields[quarantined]}"
            ),
            TimeElapsedColumn(),
            console=console,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._read_new_shards()  # a resumed run starts from what is committed
        self.resumed = sum(self.counts.values())
        self.task = self.progress.add_task("starting", total=total, completed=self.resumed, **self._fields())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="synthesis-progress", daemon=True)

    def __enter__(self) -> SynthesisProgress:
        self.progress.start()
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.update(final=exc_type is None)  # a failed run keeps its total: it did not finish
        self.progress.stop()

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def update(self, final: bool = False) -> None:
        if self._read_new_shards() and self.first_shard is None:
            self.first_shard = (time.monotonic(), self.done)
        description = "synthesis" if self.done > self.resumed or final else "starting Ray and the engines"
        total = self.total if self.total is None else max(self.total, self.done)
        if final:
            total = self.done
        self.progress.update(
            self.task, description=description, total=total, completed=self.done, **self._fields()
        )

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.update()
            except OSError:  # a shard renamed under us: read it next time
                continue

    def _read_new_shards(self) -> int:
        """Counts the statuses of shards not seen before; returns how many there were."""
        if not self.fs.exists(self.root):
            return 0
        new = 0
        for path in sorted(self.fs.ls(self.root, detail=False)):
            name = posixpath.basename(path)
            if name in self.seen or not (name.startswith(SHARD_PREFIX) and name.endswith(".parquet")):
                continue
            with self.fs.open(path, "rb") as f:
                self.counts.update(pq.read_table(f, columns=["status"]).column("status").to_pylist())
            self.seen.add(name)
            new += 1
        return new

    def _fields(self) -> dict[str, str]:
        rate = self._rate()
        left = None if self.total is None else max(0, self.total - self.done)
        eta = "0:00" if left == 0 else "?"
        if rate and left:
            eta = _clock(left / rate)
        quarantined = self.counts["quarantined"]
        return {
            "rate": f"{rate:.2f}/s" if rate else "?/s",
            "eta": eta,
            "kept": str(self.counts["kept"]),
            "filtered": str(self.counts["filtered"]),
            "quarantined": f" · quarantined {quarantined}" if quarantined else "",
        }

    def _rate(self) -> float | None:
        """Pairs per second since the first shard of this run: start-up (Ray, engine loading) excluded."""
        if self.first_shard is None:
            return None
        since, done_then = self.first_shard
        seconds = time.monotonic() - since
        return (self.done - done_then) / seconds if seconds > 1 and self.done > done_then else None


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def count_pairs(uri: str, format: str = "auto", limit: int | None = None) -> int | None:
    """How many pairs a job will read, when that is cheap to know (a folder of pair folders, twin
    folders, a JSONL manifest); None otherwise. Only for the display: the job counts for itself."""
    from editcaption.io import detect_format

    try:
        chosen = detect_format(uri) if format == "auto" else format
        fs, path = open_fs(uri)
        if chosen == "folder":
            entries = [
                e for e in fs.ls(path, detail=True) if not posixpath.basename(e["name"]).startswith(".")
            ]
            names = {posixpath.basename(e["name"]) for e in entries if e["type"] == "directory"}
            if {"source", "target"} <= names:
                found = len(
                    [
                        p
                        for p in fs.ls(posixpath.join(path, "source"))
                        if not posixpath.basename(p).startswith(".")
                    ]
                )
            else:
                found = len(names)
        elif chosen == "manifest" and path.endswith((".jsonl", ".ndjson")):
            with fs.open(path, "rt") as f:
                found = sum(1 for line in f if line.strip())
        else:
            return None
    except (OSError, ValueError):
        return None
    return found if limit is None else min(found, limit)


def run_synthesis_job(cfg: Any, verbose: bool = False, job: str = "synthesize") -> tuple[dict[str, Any], Any]:
    """`run_synthesis(cfg)` with its output (ours, Ray's, vLLM's) in `<output>/logs/<job>.log` and one
    progress line on the terminal; `verbose` prints everything instead. Returns (summary, log path or
    None). A Ray the job started is shut down inside the capture, so its exit messages land in the log
    too."""
    from editcaption.joblog import job_output, log_path_for
    from editcaption.ray_setup import shutdown_if_started
    from editcaption.synthesis.job import run_synthesis
    from editcaption.synthesis.shards import ShardFormatError

    total = count_pairs(cfg.input, cfg.format, cfg.limit)
    log_path = log_path_for(cfg.output, job)
    with job_output(log_path, verbose, expected=(ShardFormatError,)) as log, shutdown_if_started():
        if verbose:
            summary = run_synthesis(cfg)
        else:
            with SynthesisProgress(cfg.output, total, log.console):
                summary = run_synthesis(cfg)
    return summary, log.path
