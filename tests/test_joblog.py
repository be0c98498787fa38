"""Quiet jobs (`joblog.py`) and the synthesis progress line (`progress.py`), without Ray.

The capture is at the file-descriptor level, so it is exercised in a child Python process whose own
children print too, as Ray's workers and vLLM's engine processes do.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem
from rich.console import Console

from editcaption.progress import SynthesisProgress, count_pairs
from editcaption.synthesis.shards import commit_shard

SCRIPT = """
import subprocess, sys
from pathlib import Path
from editcaption.joblog import job_output

verbose = sys.argv[2] == "verbose"
try:
    with job_output(Path(sys.argv[1]), verbose=verbose, expected=(KeyError,)) as log:
        print("from python", flush=True)
        subprocess.run(["sh", "-c", "echo from a child; echo child warning >&2"], check=True)
        log.console.print("for the terminal")
        if sys.argv[3] != "ok":
            raise {"fail": RuntimeError, "expected": KeyError}[sys.argv[3]]("boom")
except (RuntimeError, KeyError):
    pass
print("after the job")
"""


def _job(tmp_path: Path, mode: str, outcome: str = "ok") -> tuple[str, str]:
    log = tmp_path / "logs" / "job.log"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), mode, outcome], capture_output=True, text=True, check=True
    )
    return proc.stdout + proc.stderr, log.read_text() if log.exists() else ""


def test_everything_a_job_and_its_children_print_goes_to_the_log(tmp_path):
    terminal, log = _job(tmp_path, "quiet")
    assert sorted(terminal.splitlines()) == ["after the job", "for the terminal"]
    for line in ("from python", "from a child", "child warning"):
        assert line in log


def test_verbose_leaves_everything_on_the_terminal(tmp_path):
    terminal, log = _job(tmp_path, "verbose")
    for line in ("from python", "from a child", "child warning", "for the terminal", "after the job"):
        assert line in terminal
    assert log == ""


def test_a_failed_job_shows_the_end_of_its_log_unless_the_error_speaks_for_itself(tmp_path):
    terminal, _ = _job(tmp_path, "quiet", "fail")
    assert "the job failed" in terminal and "child warning" in terminal and "job.log" in terminal
    terminal, _ = _job(tmp_path / "2", "quiet", "expected")
    assert "the job failed" not in terminal and "child warning" not in terminal


def _commit(output: Path, statuses: list[str], start: int) -> None:
    ids = [f"p{start + i}" for i in range(len(statuses))]
    commit_shard(LocalFileSystem(), str(output / "pairs"), pa.table({"pair_id": ids, "status": statuses}))


def test_progress_counts_committed_pairs_by_status(tmp_path):
    _commit(tmp_path, ["kept"], 0)  # committed by an earlier run: a resume starts from it
    screen = io.StringIO()
    progress = SynthesisProgress(str(tmp_path), total=5, console=Console(file=screen, width=200), poll_s=0.05)
    assert progress.resumed == 1
    with progress:
        _commit(tmp_path, ["kept", "filtered"], 1)
        time.sleep(0.3)
        _commit(tmp_path, ["quarantined", "kept"], 3)
        time.sleep(1.2)
        assert progress.done == 5 and progress._rate() is not None
    text = screen.getvalue()
    assert "5/5" in text and "kept 3 · filtered 1 · quarantined 1" in text and "ETA 0:00" in text


def test_counting_pairs_for_the_display(tmp_path):
    for name in ("a", "b", ".hidden"):
        (tmp_path / "folders" / name).mkdir(parents=True)
        (tmp_path / "folders" / name / "source.png").write_bytes(b"")
    for role in ("source", "target"):
        (tmp_path / "twin" / role).mkdir(parents=True)
        for name in ("x", "y", "z"):
            (tmp_path / "twin" / role / f"{name}.png").write_bytes(b"")
    (tmp_path / "m.jsonl").write_text(
        "\n".join(json.dumps({"source": "s", "target": "t"}) for _ in range(4)) + "\n\n"
    )
    assert count_pairs(str(tmp_path / "folders")) == 2
    assert count_pairs(str(tmp_path / "twin")) == 3
    assert count_pairs(str(tmp_path / "m.jsonl")) == 4
    assert count_pairs(str(tmp_path / "m.jsonl"), limit=3) == 3
    assert count_pairs(str(tmp_path / "missing")) is None
