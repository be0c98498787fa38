"""Review app under load: submissions/s and page latency with 8 concurrent simulated annotators.

    python benchmarks/review.py --out benchmarks/results/review.json [--per-annotator 100] [--no-postgres]

Each simulated annotator does what a person does per task, as fast as it can: load the task page
(HTML), load its two images, submit the answer (a form POST answered with a redirect). The server is
`editcaption review serve` in its own process on a throw-away store (SQLite, and a local PostgreSQL
when its binaries are installed). The baseline, measured in the same run on the same store kind, is
one annotator alone: the ratios say what sharing the server with seven others costs.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

# the review app and PostgreSQL runners the review tests use (tests/review_servers.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

_ACTION = re.compile(r'<form method="post" action="/task/(\d+)" class="card answer"')
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def annotate(base: str, name: str, tasks: int, timings: dict[str, list[float]], lock: threading.Lock) -> None:
    """Work through `tasks` judge tasks like a person would, recording each request's latency."""
    mine: dict[str, list[float]] = {"page": [], "image": [], "submit": []}
    with httpx.Client(base_url=base, timeout=120) as client:
        token = _TOKEN.search(client.get("/login").text).group(1)
        client.post("/login", data={"name": name, "password": f"{name}-password", "csrf_token": token})
        url = "/next?kind=judge"
        for n in range(tasks):
            start = time.perf_counter()
            page = client.get(url, follow_redirects=True)
            mine["page"].append(time.perf_counter() - start)
            aid = _ACTION.search(page.text).group(1)
            token = _TOKEN.search(page.text).group(1)
            for which in ("source", "target"):
                start = time.perf_counter()
                client.get(f"/task/{aid}/image/{which}").raise_for_status()
                mine["image"].append(time.perf_counter() - start)
            answer = (
                {"verdict": "correct"} if n % 3 else {"verdict": "minor_error", "error_types": ["attribute"]}
            )
            start = time.perf_counter()
            reply = client.post(f"/task/{aid}", data={**answer, "csrf_token": token})
            mine["submit"].append(time.perf_counter() - start)
            if reply.status_code != 303:
                raise RuntimeError(f"{name}: submission refused: {reply.status_code} {reply.text[:200]}")
            url = reply.headers["location"]
    with lock:
        for k, v in mine.items():
            timings[k] += v


def run(store_url: str, annotators: int, per_annotator: int, queue: Path) -> dict:
    from argon2 import PasswordHasher
    from review_servers import serve_process

    from editcaption.review.importers import import_tasks
    from editcaption.review.store import Store

    names = [f"ann{i}" for i in range(annotators)]
    # cheap argon2 for the simulated accounts: logins are not what is measured
    with Store(store_url, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)) as store:
        for name in names:
            store.add_user(name, f"{name}-password")
        for name in names:  # each annotator gets their own copy of the queue
            import_tasks(store, queue, "judge", project=f"bench-{name}", annotators=[name])
    timings: dict[str, list[float]] = {"page": [], "image": [], "submit": []}
    lock = threading.Lock()
    with serve_process(store_url) as base:
        threads = [
            threading.Thread(target=annotate, args=(base, name, per_annotator, timings, lock))
            for name in names
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    submissions = len(timings["submit"])
    if submissions != annotators * per_annotator:
        raise RuntimeError(f"{submissions} submissions recorded, expected {annotators * per_annotator}")
    with Store(store_url) as store:
        stored = sum(1 for _ in store.done("judge"))
    return {
        "annotators": annotators,
        "submissions": submissions,
        "stored": stored,
        "wall_s": round(wall, 2),
        "submissions_per_s": round(submissions / wall, 1),
        "latency_ms": {k: _summary(v) for k, v in timings.items()},
    }


def _summary(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {
        "p50": round(statistics.median(ms), 1),
        "p95": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1),
        "max": round(ms[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/review.json")
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--per-annotator", type=int, default=100, help="tasks each annotator submits")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()

    from review_servers import local_postgres, postgres_bin, write_review_queue

    results: dict = {
        "what": "review app, simulated annotators: task page + 2 images + form POST per task (judge tasks)",
        "per_annotator": args.per_annotator,
        "machine": {"cpus": _cpus(), "platform": platform.platform()},
        "note": "measured on a 2-core machine shared with other work (tests and benchmarks of other "
        "developers running at the same time); server and load generator share those cores",
        "backends": {},
    }
    backends = ["sqlite"]
    if not args.no_postgres:
        try:
            postgres_bin()
            backends.append("postgresql")
        except RuntimeError as exc:
            results["postgresql_skipped"] = str(exc)
    with tempfile.TemporaryDirectory() as tmp:
        queue = write_review_queue(Path(tmp) / "review_queue.parquet", args.per_annotator, size=(512, 320))
        for backend in backends:
            measured = {}
            for label, count in (
                ("baseline_1_annotator", 1),
                (f"{args.annotators}_annotators", args.annotators),
            ):
                with ExitStack() as stack:
                    if backend == "sqlite":
                        url = f"sqlite:///{Path(tmp) / f'{backend}-{count}.db'}"
                    else:
                        url = stack.enter_context(local_postgres())
                    measured[label] = run(url, count, args.per_annotator, queue)
            base, loaded = measured["baseline_1_annotator"], measured[f"{args.annotators}_annotators"]
            measured["ratios_vs_baseline"] = {
                "submissions_per_s": round(loaded["submissions_per_s"] / base["submissions_per_s"], 2),
                "page_p95": round(loaded["latency_ms"]["page"]["p95"] / base["latency_ms"]["page"]["p95"], 2),
                "submit_p95": round(
                    loaded["latency_ms"]["submit"]["p95"] / base["latency_ms"]["submit"]["p95"], 2
                ),
            }
            results["backends"][backend] = measured
            print(
                backend,
                json.dumps(measured["ratios_vs_baseline"]),
                loaded["submissions_per_s"],
                "submissions/s",
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
