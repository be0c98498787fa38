"""Run the review app and a throw-away PostgreSQL locally, for tests and `benchmarks/review.py`.

`running_app` serves the app with uvicorn in a background thread on a free loopback port.
`local_postgres` initialises a cluster in a temp folder and starts it on a free loopback port with
trust auth; when the process runs as root (as CI does) the server runs as the `postgres` system user,
since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from serve_process import free_port, stop_process

from editcaption.review.app import ReviewAppConfig, create_app


@contextmanager
def running_app(
    config: ReviewAppConfig, timeout: float = 30.0, clock: Callable[[], datetime] | None = None
) -> Iterator[str]:
    """The app's base URL while it runs; stopped (and its store closed) on exit. `clock`: see `create_app`."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, clock),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            proxy_headers=False,  # as `review serve`: client addresses come from config.trusted_proxies
        )
    )
    thread = threading.Thread(target=server.run, name=f"review-app-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"review app did not start on port {port} within {timeout} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


@contextmanager
def serve_process(store: str, data: str | Path | None = None, timeout: float = 60.0) -> Iterator[str]:
    """`editcaption review serve` in a child process (its own interpreter, so load generators in this
    process do not compete with it for the GIL); yields the base URL, terminates and waits on exit."""
    import sys

    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "editcaption", "review", "serve", "--store", store, "--port", str(port)]
    if data is not None:
        cmd += ["--data", str(data)]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"review server exited: {log.read().decode()[-2000:]}")
                try:
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"review server did not answer on port {port} within {timeout} s")
                time.sleep(0.2)
            yield base
        finally:
            stop_process(proc, timeout=30)


def postgres_bin() -> Path:
    """Debian's PostgreSQL server binaries; a clear error when the package is missing."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: run `make setup`"
        )
    return Path(found[-1]).parent


@contextmanager
def local_postgres(timeout: float = 60.0) -> Iterator[str]:
    """A fresh PostgreSQL on 127.0.0.1; yields its SQLAlchemy URL and stops it (`-m fast`) on exit."""
    bindir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="editcaption-pg-"))
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    user = "postgres" if as_root else os.environ.get("USER", "postgres")
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()

    def pg(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, timeout=timeout)

    pg(str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=on"
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "start")
    try:
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "review")
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/review"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def write_review_queue(path: str | Path, n: int, size: tuple[int, int] = (96, 64)) -> Path:
    """A synthesis-shaped `review_queue.parquet` with `n` pairs of small drawn images and two candidates each.

    Pair i's source has a square on the left, its target the square on the right; candidate 0 says
    "left" (wrong), candidate 1 "right", and candidate 1 scores higher, so it is the best one.
    """
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image, ImageDraw

    from editcaption.schema import Candidate, ReviewQueueRow, Score

    w, h = size
    side = max(4, h // 3)

    def png(left: float, shade: int) -> bytes:
        img = Image.new("RGB", size, (240, 240, 235))
        x, y = int(left * w), (h - side) // 2
        ImageDraw.Draw(img).rectangle([x, y, x + side, y + side], fill=(shade, 40, 200 - shade))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()

    rows = []
    for i in range(n):
        pid = f"pair-{i:05d}"
        texts = [
            f"Move the square {i % 7 + 1} steps to the left.",
            f"Move the square {i % 7 + 1} steps to the right.",
        ]
        candidates = [
            Candidate(
                pair_id=pid,
                candidate_id=f"{pid}:{k}",
                instruction=t,
                raw_text=t,
                model="tiny-annotator",
                prompt_version="v1",
                parsed=True,
                outcome="not_best" if k == 0 else "kept",
            ).to_row()
            for k, t in enumerate(texts)
        ]
        scores = [
            Score(
                pair_id=pid,
                candidate_id=f"{pid}:{k}",
                scorer="tiny-scorer",
                semantic_consistency=sc,
                perceptual_quality=8.0,
                overall=(sc * 8.0) ** 0.5,
                num_pass=1,
                num_parsed=1,
            ).to_row()
            for k, sc in enumerate((3.0, 7.5))
        ]
        rows.append(
            {
                "pair_id": pid,
                "source": png(0.1, i % 200),
                "target": png(0.6, i % 200),
                "status": "kept",
                "review_priority": 1.0 - i / max(n, 1),
                "review_reasons": ["candidates_disagree", "direction_words"],
                "flip_verdict": None,
                "flip_reason": None,
                "best_candidate_id": f"{pid}:1",
                "best_instruction": texts[1],
                "best_overall": (7.5 * 8.0) ** 0.5,
                "reference_instruction": None,
                "candidates": candidates,
                "scores": scores,
            }
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=ReviewQueueRow.arrow_schema()), path)
    return path
