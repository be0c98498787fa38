"""`make demo` (`editcaption quickstart`): Stage 1 with the committed miniature models on pairs whose right
instruction is known, graded, quiet, followed by the whole loop on its output.

The unit tests build their inputs by hand. The slow tests run the real commands as a user would, from
the repository root, as child processes: the demo once (module fixture), then every command it prints
(review import → SFT → DPO → eval → serve) on its output, with relative `--set model=` paths.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from fsspec.implementations.local import LocalFileSystem
from serve_process import ROOT, Server, free_port

from editcaption.demo import quickstart
from editcaption.synthesis.shards import commit_shard

# Issue #20's bar for `make demo` on the bundled world pairs.
MIN_KEPT_SHARE = 0.5  # of the world pairs, kept by the scorer's filter
MIN_CORRECT_SHARE = 0.8  # of the kept world instructions, exactly right against the ground truth
# `make demo` prints at most 60 lines: its own two command echoes and setup's "up to date" line,
# then what `editcaption quickstart` prints.
MAX_DEMO_LINES = 60 - 3
LOOP_STEPS = ["--set", "max_steps=2", "--set", "checkpoint.save_steps=2", "--set", "logging_steps=1"]


def _shard(root: Path, rows: list[dict]) -> None:
    commit_shard(LocalFileSystem(), str(root / "pairs"), pa.Table.from_pylist(rows))


class SetModelServer(Server):
    """`editcaption serve … --set model=MODEL` (the shared helper passes `--model`)."""

    def __init__(self, config: Path, model: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "editcaption", "serve", "--config", str(config)]
        cmd += ["--port", str(self.port), "--set", f"model={model}"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.stopped = False


def test_inputs_are_world_pairs_with_ground_truth_beside_the_samples(tmp_path):
    world = quickstart.write_inputs(tmp_path, world_pairs=12)
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 12 + 30 and sum(name.startswith("world-") for name in folders) == 12
    again = quickstart.write_inputs(tmp_path / "again", world_pairs=12)
    assert [p.model_dump() for p in again] == [p.model_dump() for p in world]  # same seed, same pairs
    meta = json.loads((tmp_path / world[0].pair_id / "meta.json").read_text())
    assert meta["instruction"] == world[0].instruction and meta["variants"]


def test_kept_instructions_are_graded_against_the_ground_truth(tmp_path):
    world = quickstart.write_inputs(tmp_path / "inputs", world_pairs=4)
    flipped, right = world[0], world[1]  # a move (it has a direction to flip), a recolour
    flip = next(v.text for v in flipped.variants if v.error_type == "orientation")
    rows = [
        {"pair_id": right.pair_id, "status": "kept", "best_instruction": right.instruction},
        {"pair_id": flipped.pair_id, "status": "kept", "best_instruction": flip},
        {"pair_id": world[2].pair_id, "status": "filtered", "best_instruction": world[2].instruction},
        {"pair_id": world[3].pair_id, "status": "filtered", "best_instruction": None},
        {
            "pair_id": "000-move",
            "status": "kept",
            "best_instruction": "Anything.",
        },  # a sample pair: not graded
    ]
    _shard(tmp_path, [{**r, "best_overall": 8.0, "filter_reason": None} for r in rows])
    result = quickstart.grade_kept(tmp_path, world)
    assert (result["kept"], result["kept_correct"], result["filtered"], result["filtered_correct"]) == (
        2,
        1,
        2,
        1,
    )
    assert result["kept_share"] == 0.5 and result["kept_correct_share"] == 0.5
    assert result["kept_errors"] == {"orientation": 1}
    assert [e["verdict"] for e in result["examples"]] == ["orientation error (critical)", "correct"]


def test_the_ground_truth_section_goes_before_the_config_dump(tmp_path):
    report = tmp_path / "report.md"
    report.write_text("# Synthesis run report\n\n## Scores\n\nx\n\n## Config\n\n```yaml\na: 1\n```\n")
    result = {
        "world_pairs": 80,
        "world_seed": quickstart.WORLD_SEED,
        "kept": 40,
        "kept_share": 0.5,
        "kept_correct": 36,
        "kept_correct_share": 0.9,
        "kept_errors": {"orientation": 4},
        "filtered": 40,
        "filtered_correct": 3,
    }
    quickstart.add_to_report(report, quickstart.report_section(result))
    text = report.read_text()
    assert text.index("**correct share of kept instructions: 90%**") < text.index("## Config")
    assert "| orientation | 4 |" in text and text.endswith("a: 1\n```\n")


def test_next_steps_point_the_demo_configs_at_another_output():
    default = " ".join(c for _, c in quickstart.next_steps("runs/demo"))
    assert "--set input" not in default and "--from runs/demo" in default
    moved = " ".join(c for _, c in quickstart.next_steps("/tmp/elsewhere"))
    assert (
        "--set input=/tmp/elsewhere " in moved + " "
        and "--set benchmarks.0.uri=/tmp/elsewhere/inputs" in moved
    )


# ---------------------------------------------------------------- the real demo and the loop after it


def _run(cmd: list[str], log: Path, timeout: float = 900, stdin: str | None = None) -> tuple[str, float]:
    """Run an `editcaption` command from the repo root; returns (its stdout+stderr, seconds)."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "editcaption", *cmd],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    log.write_text(output)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-4000:]}"
    return output, time.monotonic() - started


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`editcaption quickstart` (what `make demo` runs after setup) into a temp folder, once."""
    out = tmp_path_factory.mktemp("quickstart") / "demo"
    output, seconds = _run(["quickstart", "--out", str(out)], out.parent / "quickstart.out")
    return {
        "out": out,
        "output": output,
        "seconds": seconds,
        "ground_truth": json.loads((out / quickstart.GROUND_TRUTH).read_text()),
        "summary": json.loads((out / "summary.json").read_text()),
    }


@pytest.mark.slow
def test_the_demo_is_quiet_and_prints_the_ground_truth_figure(demo):
    lines = demo["output"].splitlines()
    assert len(lines) <= MAX_DEMO_LINES, demo["output"]
    gt, summary = demo["ground_truth"], demo["summary"]
    assert (
        summary["pairs"]
        == gt["world_pairs"] + 30
        == summary["kept"] + summary["filtered"] + summary["quarantined"]
    )
    figure = f"correct share of kept instructions: {gt['kept_correct_share']:.0%}"
    assert figure in demo["output"] and f"**{figure}**" in (demo["out"] / "report.md").read_text()
    for command in ("review serve", "train sft", "train dpo", "editcaption eval", "editcaption serve"):
        assert command in demo["output"]
    log = (demo["out"] / "logs" / "quickstart.log").read_text()
    assert "GroupedCall" in log  # Ray's and vLLM's lines went to the log, not the terminal
    assert "GroupedCall" not in demo["output"] and "WARNING" not in demo["output"]


@pytest.mark.slow
def test_the_demo_keeps_at_least_half_of_the_world_pairs(demo):
    assert demo["ground_truth"]["kept_share"] >= MIN_KEPT_SHARE, demo["ground_truth"]


@pytest.mark.slow
def test_the_demo_keeps_mostly_correct_instructions(demo):
    # Issue #20's 0.8. Four candidates per pair, pairs whose candidates contradict each other filtered,
    # the filter at overall 9 chosen on dev. With the scorer before its 7 Dec retrain: six runs here
    # 0.90-0.96 (two candidates had given 0.83-0.93 here and 0.78 on CI's machine); with the committed
    # scorer, which reads rotations and raised arms: five runs 0.92-0.96, keeping 0.60-0.61 of the world
    # pairs, every miss a misread colour or shape (Ray's batches vary the sampled candidates from run to
    # run, as a CPU's float order would). The worst run left 4 errors where 0.8 allows 9.
    assert demo["ground_truth"]["kept_correct_share"] >= MIN_CORRECT_SHARE, demo["ground_truth"]


# `make test-extra`: 10-15 min on CI's machines, beyond its budget (it timed out there at 900 s). CI runs
# each stage for real elsewhere (test_train_ray.py: SFT and HAE-DPO under ZeRO-3 on two workers, then
# vLLM; test_eval_job.py; test_serve_miniature.py: serve_configs/miniature.yaml) and checks what each
# command ships for a relative `--set model=` (test_paths.py).
@pytest.mark.slow
@pytest.mark.ci_extra
@pytest.mark.timeout(1800)
def test_the_whole_loop_runs_on_the_demo_output(demo, tmp_path):
    """review import → SFT → DPO → eval → serve, each the command the demo printed, with relative model
    paths given through --set from the repo root (what issue #20 found broken in Ray Train workers)."""
    out, rel = demo["out"], lambda p: os.path.relpath(p, ROOT)
    seconds: dict[str, float] = {}
    store = f"sqlite:///{tmp_path / 'review.db'}"
    _run(
        ["review", "user", "add", "rev", "--store", store, "--password-stdin"],
        tmp_path / "user.out",
        stdin="pw-for-review\n",
    )
    output, seconds["review import"] = _run(
        ["review", "import", "--store", store, "--from", str(out), "--kind", "refine"],
        tmp_path / "import.out",
    )
    # Every routed pair is imported, or skipped with its reason (a draft with no parsed candidate).
    imported = int(re.search(r"(\d+) refine items", output).group(1))
    skipped = re.search(r"skipped (\{.*\}|none)", output).group(1)
    skipped_n = 0 if skipped == "none" else sum(ast.literal_eval(skipped).values())
    assert imported > 0 and imported + skipped_n == demo["summary"]["routed_to_review"], output

    train = ["--set", f"storage_path={tmp_path / 'train'}", *LOOP_STEPS]
    sft_model, dpo_model = tmp_path / "sft" / "model", tmp_path / "dpo" / "model"
    _, seconds["train sft"] = _run(
        ["train", "sft", "--config", "ray_jobs/configs/train-sft-demo.yaml", "--set", "model=editcaption/data/miniature/annotator",
         "--set", f"input={rel(out)}", "--set", f"output={rel(sft_model)}", *train],
        tmp_path / "sft.out",
    )  # fmt: skip
    assert (sft_model / "config.json").is_file()
    _, seconds["train dpo"] = _run(
        ["train", "dpo", "--config", "ray_jobs/configs/train-dpo-demo.yaml", "--set", f"model={rel(sft_model)}",
         "--set", f"input={rel(out / quickstart.INPUTS)}", "--set", f"output={rel(dpo_model)}", *train],
        tmp_path / "dpo.out",
    )  # fmt: skip
    assert (dpo_model / "config.json").is_file()

    _, seconds["eval"] = _run(
        ["eval", "--config", "ray_jobs/configs/eval-demo.yaml", "--set", f"model={rel(dpo_model)}",
         "--set", f"benchmarks.0.uri={rel(out / quickstart.INPUTS)}", "--limit", "16", "--output", str(tmp_path / "eval")],
        tmp_path / "eval.out",
    )  # fmt: skip
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["meta"]["pairs_evaluated"] == 16

    started = time.monotonic()
    server = SetModelServer(ROOT / "serve_configs" / "miniature.yaml", rel(dpo_model), tmp_path / "serve.log")
    try:
        server.wait_ready()
        pair = sorted((out / quickstart.INPUTS).glob(f"{quickstart.WORLD_PREFIX}-*"))[0]
        images = {name: (f"{name}.png", (pair / f"{name}.png").read_bytes()) for name in ("source", "target")}
        reply = httpx.post(f"{server.url}/v1/instructions", files=images, timeout=120)
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == "miniature-annotator" and reply.json()["candidates"]
    finally:
        assert server.stop() == []
    seconds["serve (start, one request, stop)"] = time.monotonic() - started
    (tmp_path / "loop-seconds.json").write_text(json.dumps(seconds, indent=1))
    print("loop seconds:", json.dumps({k: round(v) for k, v in seconds.items()}))
