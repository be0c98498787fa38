"""No secret leaks: secrets planted in the environment, in a review-store URL and on the process's
command line never show up in anything synthesis, eval or review wrote, printed or logged.

One Ray session (its own folder, searched too) runs Stage 1 synthesis and the eval job on the tiny
Qwen3-VL (transformers, in-process), each with a second engine behind the real OpenAI-compatible
client that answers every call with an error echoing the API key it was sent (as a misbehaving
proxy would), so that engine errors carrying a key reach the outputs. The eval reads human verdicts
from a real PostgreSQL through a URL with a password; the review commands and the web app use that
URL too, and one command gets a URL naming a database that does not exist, to make it fail. Serve
gets the same planted environment in `test_serve.py`, whose last test searches its logs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from planted_secrets import DB_PASSWORD, PLANTED_ENV, SECRETS, find_secrets, searched_files
from ray_sessions import kill_ray_session
from review_servers import local_postgres, running_app
from typer.testing import CliRunner

from editcaption.cli import app as cli
from editcaption.review.app import ReviewAppConfig
from editcaption.review.seed import seed_judgments
from editcaption.schema import Judgment

pytestmark = pytest.mark.slow


@contextmanager
def echoing_api() -> Iterator[str]:
    """An OpenAI-compatible URL whose every answer is a 401 quoting the Authorization header."""

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.dumps(
                {"error": f"rejected credentials: {self.headers.get('authorization')}"}
            ).encode()
            self.send_response(401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        thread.join()


@contextmanager
def command_line_with(*extra: str) -> Iterator[None]:
    """This process's command line, as psutil reads it (and Ray records it as a job's entrypoint), with
    `extra` appended. A stand-in: a running process cannot portably rewrite its own argv (setproctitle
    did not change /proc/self/cmdline inside the whole suite), so psutil's reading of it is extended."""
    import psutil

    read = psutil.Process.cmdline
    me = os.getpid()

    def cmdline(self: psutil.Process) -> list[str]:
        return [*read(self), *extra] if self.pid == me else read(self)

    psutil.Process.cmdline = cmdline
    try:
        yield
    finally:
        psutil.Process.cmdline = read


def _cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """This test's Ray session folder (short: Ray's socket paths), searched too, then removed."""
    path = Path(tempfile.mkdtemp(prefix="ecsec-", dir="/tmp"))
    yield path
    kill_ray_session(path)
    shutil.rmtree(path, ignore_errors=True)


def test_no_planted_secret_in_any_output_log_or_job_metadata(
    tmp_path: Path,
    ray_tmp: Path,
    tiny_model: Path,
    sample_pairs_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    import ray

    from editcaption.evaluation.job import EvalConfig, evaluate
    from editcaption.ray_setup import init_ray
    from editcaption.synthesis.config import SynthesisConfig
    from editcaption.synthesis.job import run_synthesis

    caplog.set_level("DEBUG")
    for name, value in PLANTED_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.setenv("EDITCAPTION_REVIEW_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    pairs = tmp_path / "pairs"
    for pair in sorted(p for p in sample_pairs_dir.iterdir() if p.is_dir())[:2]:
        shutil.copytree(pair, pairs / pair.name)
    tiny = {"backend": "transformers", "model": str(tiny_model), "max_pixels": 160 * 128}
    shown: list[str] = []  # everything printed or answered, searched at the end

    with local_postgres() as plain_url, echoing_api() as api:
        store = plain_url.replace("postgres@", f"postgres:{DB_PASSWORD}@")  # trust auth ignores it
        assert DB_PASSWORD in store
        echo = {"backend": "openai", "base_url": api, "model": "api-model", "max_retries": 0}
        try:
            ray.shutdown()  # an earlier test's Ray in this process would keep its own entrypoint
            with command_line_with("--store", store):
                init_ray()
            entrypoints = [job["Entrypoint"] for job in ray._private.state.state.job_table()]
            assert any("--store" in e and "***" in e for e in entrypoints), entrypoints
            shown += entrypoints

            synthesis = SynthesisConfig.model_validate(
                {
                    "input": str(pairs), "output": str(tmp_path / "synthesis"), "candidates_per_pair": 1,
                    "sampling": {"max_tokens": 4}, "annotator": tiny, "scorer": echo,
                    "routing": {"review_share": 1.0}, "pairs_per_batch": 2,
                }
            )  # fmt: skip
            summary = run_synthesis(synthesis)
            assert summary["pairs"] == 2

            seed_judgments(store, [
                Judgment(pair_id=p.name, instruction="Move it left.", model="tiny", benchmark="secrets",
                         judge="human:ann", verdict="correct", error_types=[])
                for p in pairs.iterdir()
            ])  # fmt: skip
            judgments = tmp_path / "review" / "judgments.parquet"  # eval reads the export, not the store
            shown.append(
                _cli("review", "export", "--store", store, "--kind", "judgment", "--out", str(judgments))
            )
            evaluation = EvalConfig.model_validate(
                {
                    "captioners": [
                        {"name": "tiny", "engine": tiny, "sampling": {"max_tokens": 4}},
                        {"name": "api", "engine": echo, "sampling": {"max_tokens": 4}},
                    ],
                    "benchmarks": [{"name": "secrets", "format": "eval-n", "uri": str(pairs)}],
                    "human": {"parquet": str(judgments)},
                    "output": str(tmp_path / "eval"),
                }
            )
            metrics = evaluate(evaluation, progress=False)
            assert metrics["meta"]["pairs_evaluated"] == 2
        finally:
            ray.shutdown()
        rows = pq.read_table(tmp_path / "eval" / "instructions.parquet").to_pylist()
        errors = [json.dumps(r) for r in rows if r["error"]]
        assert errors and all("rejected credentials: Bearer ***" in e for e in errors), errors[:1]

        shown.append(_cli("review", "user", "add", "lee", "--store", store))  # password from the planted env
        shown.append(_cli("review", "user", "add", "root", "--admin", "--store", store))
        queue = str(tmp_path / "synthesis")
        shown.append(
            _cli(
                "review",
                "import",
                "--store",
                store,
                "--from",
                queue,
                "--kind",
                "judge",
                "--annotators",
                "lee",
            )
        )
        export = tmp_path / "review" / "judgments.jsonl"
        shown.append(_cli("review", "export", "--store", store, "--kind", "judgment", "--out", str(export)))
        shown.append(_cli("review", "stats", "--store", store))
        shown.append(_cli("review", "audit", "--store", store))
        missing = store.rsplit("/", 1)[0] + "/no_such_database"
        failed = _cli("review", "stats", "--store", missing, code=2)
        assert "error:" in failed and "no_such_database" in failed
        shown.append(failed)

        with (
            running_app(ReviewAppConfig(store=store)) as base,
            httpx.Client(base_url=base, timeout=60) as web,
        ):
            token = web.get("/login", headers={"accept": "application/json"}).json()["csrf_token"]
            for password in ("a-wrong-password", PLANTED_ENV["EDITCAPTION_REVIEW_PASSWORD"]):
                reply = web.post("/login", data={"name": "root", "password": password, "csrf_token": token})
                shown.append(reply.text)
            token = web.get("/login", headers={"accept": "application/json"}).json()["csrf_token"]
            assert web.get("/admin").status_code == 200
            for path in ("/admin", "/admin/stats.json", "/admin/export?kind=judgment&format=jsonl", "/queue"):
                shown.append(web.get(path).text)
            shown.append(web.get("/admin/export?kind=nope").text)

    out, err = capfd.readouterr()
    (tmp_path / "shown.txt").write_text("\n".join([*shown, out, err, caplog.text]))
    roots = [tmp_path, ray_tmp]
    assert searched_files(roots) > 50
    found = find_secrets(roots)
    assert found == [], found
    assert not any(s in text for s in SECRETS for text in shown)
