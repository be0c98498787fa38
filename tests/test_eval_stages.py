"""The eval job's pieces without Ray: sampling and sharding, configs, the caption and judge stages'
expand/merge steps, pass aggregation, the extra metrics cells, the human source and the CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from editcaption.checks.flip import mirror_pair
from editcaption.cli import app
from editcaption.config import ConfigError, load_config
from editcaption.engines import EngineResult, SamplingSettings
from editcaption.evaluation.benchmarks import (
    BenchmarkConfig,
    ShardConfig,
    choose_sample,
    in_shard,
    reader_format,
)
from editcaption.evaluation.captioning import EvalChecksConfig, caption_expand, caption_merge
from editcaption.evaluation.job import EvalConfig, HumanSourceConfig, read_human_judgments
from editcaption.evaluation.judging import (
    JudgeConfig,
    aggregate_passes,
    judge_expand,
    judge_merge,
    swap_outcome,
)
from editcaption.evaluation.summaries import caption_cells, comparison_cells, pass_cells
from editcaption.prompts.judge import parse_judgment

ROOT = Path(__file__).resolve().parents[1]
EVAL_CONFIGS = sorted((ROOT / "ray_jobs" / "configs").glob("eval-*.yaml"))
API = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": None}


def test_sample_is_seeded_and_independent_of_order():
    ids = [f"pair-{i}" for i in range(200)]
    first = choose_sample(ids, 50, seed=1)
    assert len(first) == 50 and first == choose_sample(reversed(ids), 50, seed=1)
    assert first != choose_sample(ids, 50, seed=2)
    assert choose_sample(ids, 500, seed=1) == set(ids) == choose_sample(ids, None, seed=1)
    # A larger sample contains the smaller one: growing a sample never swaps pairs out.
    assert first <= choose_sample(ids, 80, seed=1)


def test_shards_partition_the_pairs():
    ids = [f"pair-{i}" for i in range(300)]
    shards = [{i for i in ids if in_shard(i, ShardConfig(index=k, count=3), seed=0)} for k in range(3)]
    assert set().union(*shards) == set(ids) and sum(map(len, shards)) == len(ids)
    assert all(60 < len(s) < 140 for s in shards)
    with pytest.raises(ValueError, match="shard index 3 is out of range for 3 shards"):
        ShardConfig(index=3, count=3)


def test_eval_n_refuses_layouts_other_than_folder_or_manifest(tmp_path):
    pq.write_table(
        pa.table({"input_image": [b"x"], "output_image": [b"y"], "edit": ["e"]}), tmp_path / "a.parquet"
    )
    bench = BenchmarkConfig(name="mine", format="eval-n", uri=str(tmp_path / "a.parquet"))
    with pytest.raises(ValueError, match="benchmark 'mine': eval-n needs a pair folder or manifest"):
        reader_format(bench)
    assert reader_format(bench.model_copy(update={"format": "hqedit"})) == "hqedit"


@pytest.mark.parametrize("path", EVAL_CONFIGS, ids=lambda p: p.name)
def test_shipped_eval_configs_validate(path: Path):
    config = load_config(path, EvalConfig)
    assert config.output and config.captioners and config.benchmarks
    if path.name == "eval-paper-protocol.yaml":
        assert {p.benchmark for p in config.published if p.mean} == {b.name for b in config.benchmarks}
        assert config.judge.engine.backend == "openai" and config.judge.pairwise


def test_paper_protocol_published_rows_are_labelled_in_the_report(tmp_path):
    from editcaption.evaluation.report import summarise, write_eval_report

    config = load_config(ROOT / "ray_jobs" / "configs" / "eval-paper-protocol.yaml", EvalConfig)
    row = {"pair_id": "p", "instruction": "i", "model": "ours-8b-hae-dpo", "benchmark": "eval-400",
           "judge": "gemini-judge", "verdict": "correct", "error_types": [], "overall": 5.0}  # fmt: skip
    metrics = summarise([row], [p.model_dump(exclude_none=True) for p in config.published])
    write_eval_report(metrics, str(tmp_path))
    report = (tmp_path / "report.md").read_text()
    assert "| EditCaption-235B (published: arXiv 2604.08213) | 4.72 |" in report
    assert (
        "| published | Gemini-3-Pro (published: arXiv 2604.08213, human evaluation) |  |  | 66.0% | — | — |"
        in report
    )
    assert "47.8%" in report or "47.7%" in report  # before post-training, critical errors
    assert "Gemini-3-Pro" in (tmp_path / "report.html").read_text()


def test_eval_config_errors_name_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    captioner = {"name": "a", "engine": API}
    bench = {"name": "b", "format": "eval-n", "uri": "x"}
    path.write_text(json.dumps({"captioners": [captioner, captioner], "benchmarks": [bench]}))
    with pytest.raises(ConfigError, match="captioners: Value error, names must be unique, repeated: a"):
        load_config(path, EvalConfig)
    path.write_text(json.dumps({"captioners": [captioner], "benchmarks": [{**bench, "format": "coco"}]}))
    with pytest.raises(ConfigError, match=r"benchmarks\.0\.format"):
        load_config(path, EvalConfig)


def test_cli_reports_a_bad_config_and_documents_its_options(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("captioners: []\n")
    result = CliRunner().invoke(app, ["eval", "--config", str(path)])
    assert result.exit_code == 2 and "captioners" in result.output
    help_text = CliRunner().invoke(app, ["eval", "--help"]).output
    assert all(option in help_text for option in ("--config", "--output", "--limit"))


# ---------------------------------------------------------------- caption stage


def _pair(sample_pairs_dir: Path, name: str, **extra) -> dict:
    folder = sample_pairs_dir / name
    meta = json.loads((folder / "meta.json").read_text())
    return {
        "pair_id": name,
        "benchmark": "bench",
        "source": (folder / "source.png").read_bytes(),
        "target": (folder / "target.png").read_bytes(),
        "reference_instruction": meta["instruction"],
        "category": meta["category"],
        "quarantine_reason": None,
        "captions": "{}",
        **extra,
    }


def test_caption_stage_with_flip_lint_and_attributes(sample_pairs_dir):
    row = _pair(sample_pairs_dir, "000-move")  # reference: move the blue square to the viewer's left
    checks = EvalChecksConfig(flip_consistency=True)
    requests = caption_expand(row, "m", SamplingSettings(), flip=True)
    assert [r.request_id for r in requests] == ["000-move:m", "000-move:m:mirror"]
    assert requests[1].images == list(mirror_pair(row["source"], row["target"]))

    def merged(original: str, mirrored: str) -> dict:
        results = [EngineResult(request_id="a", text=original), EngineResult(request_id="b", text=mirrored)]
        return json.loads(caption_merge(row, results, "m", checks)["captions"])["m"]

    good = merged("Move the blue square to the viewer's left.", "Move the blue square to the viewer's right.")
    assert good["flip_verdict"] == "consistent" and good["lint"] == [] and good["attribute_score"] > 0.5
    bad = merged("Move the red doll to the left.", "Move the red doll to the left.")
    assert bad["flip_verdict"] == "inconsistent" and bad["lint"] == ["missing_frame"]
    assert "colour" in bad["attributes_wrong"]
    unparsed = merged("", "Move it to the right.")
    assert unparsed["instruction"] is None and unparsed["flip_verdict"] == "not_applicable"
    assert unparsed["lint"] is None and unparsed["attribute_score"] is None


def test_caption_stage_skips_quarantined_pairs(sample_pairs_dir):
    row = _pair(sample_pairs_dir, "000-move", quarantine_reason="empty_file")
    assert caption_expand(row, "m", SamplingSettings(), flip=True) == []
    assert caption_merge(row, [], "m", EvalChecksConfig()) == row


# ---------------------------------------------------------------- judge stage


def _judge_reply(overall: int, verdict: str, errors: list[str]) -> str:
    scores = dict.fromkeys(("correctness", "orientation", "viewpoint", "attributes", "conciseness"), overall)
    return json.dumps({"scores": scores, "overall": overall, "verdict": verdict, "error_types": errors})


def test_judge_stage_requests_and_merge(sample_pairs_dir):
    captions = {
        "a": {"instruction": "Move the blue square to the viewer's left."},
        "b": {"instruction": None},  # unparsed: not judged, not compared
        "c": {"instruction": "Move the square left."},
    }
    row = _pair(sample_pairs_dir, "000-move", captions=json.dumps(captions))
    cfg = JudgeConfig(name="j", engine=API, num_pass=2, pairwise=True, sampling={"seed": 5})
    requests = judge_expand(row, ["a", "b", "c"], cfg)
    assert [r.request_id for r in requests] == [
        "000-move:a:judge0",
        "000-move:a:judge1",
        "000-move:c:judge0",
        "000-move:c:judge1",
        "000-move:a:c:ab",
        "000-move:a:c:ba",
    ]
    assert [r.sampling.seed for r in requests[:2]] == [5, 6]
    assert "viewer's left" in json.dumps(requests[0].messages) and "<reference>" in json.dumps(
        requests[0].messages
    )
    replies = [
        _judge_reply(5, "correct", []),
        _judge_reply(4, "correct", []),
        "I think it is fine.",  # unparsed pass
        None,  # engine error
        '{"preferred": "A"}',
        '{"preferred": "B"}',
    ]
    results = [
        EngineResult(request_id=r.request_id, text=t, error=None if t is not None else "HTTP 500")
        for r, t in zip(requests, replies, strict=True)
    ]
    out = judge_merge(row, results, ["a", "b", "c"], cfg)
    judgments = {j["model"]: j for j in json.loads(out["judgments"])}
    assert judgments["a"]["overall"] == 4.5 and judgments["a"]["verdict"] == "correct"
    assert judgments["a"]["scores"]["correctness"] == 4.5 and judgments["a"]["parsed_passes"] == 2
    assert judgments["c"]["verdict"] is None and judgments["c"]["overall"] is None
    assert judgments["c"]["category"] == "move" and judgments["c"]["judge"] == "j"
    passes = json.loads(out["judge_passes"])
    assert [p["error"] for p in passes] == [None, None, "no_json", "engine_error"]
    (comparison,) = json.loads(out["comparisons"])
    assert (comparison["model_a"], comparison["model_b"], comparison["outcome"]) == ("a", "c", "A")


def test_aggregate_passes_breaks_ties_towards_the_more_severe_verdict():
    replies = [
        parse_judgment(_judge_reply(5, "correct", [])),
        parse_judgment(_judge_reply(2, "critical_error", ["orientation", "viewpoint"])),
    ]
    agg = aggregate_passes(replies)
    assert agg["verdict"] == "critical_error" and agg["error_types"] == ["orientation", "viewpoint"]
    assert agg["overall"] == 3.5
    replies.append(parse_judgment(_judge_reply(4, "correct", [])))
    assert (
        aggregate_passes(replies)["verdict"] == "correct" and aggregate_passes(replies)["error_types"] == []
    )
    assert aggregate_passes([])["verdict"] is None and aggregate_passes([])["scores"]["viewpoint"] is None


@pytest.mark.parametrize(
    ("ab", "ba", "outcome"),
    [("A", "B", "A"), ("B", "A", "B"), ("tie", "tie", "tie"), ("A", "A", "inconsistent"),
     ("tie", "B", "inconsistent"), (None, "A", None)],
)  # fmt: skip
def test_swap_outcome(ab, ba, outcome):
    assert swap_outcome(ab, ba) == outcome


# ---------------------------------------------------------------- metrics cells and sources


def test_caption_cells_count_and_rate():
    base = {"model": "m", "benchmark": "b", "error": None, "attributes_missing": [], "attributes_wrong": []}
    rows = [
        {**base, "instruction": "x", "flip_verdict": "consistent", "lint": [], "attribute_score": 1.0},
        {**base, "instruction": "y", "flip_verdict": "inconsistent", "lint": ["missing_frame"],
         "attribute_score": 0.5, "attributes_missing": ["colour"]},
        {**base, "instruction": None, "flip_verdict": "not_applicable", "lint": None, "attribute_score": None},
        {**base, "instruction": None, "error": "HTTP 500", "flip_verdict": None, "lint": None,
         "attribute_score": None},
    ]  # fmt: skip
    (cell,) = caption_cells(rows)
    assert (cell["pairs"], cell["parsed"], cell["unparsed"], cell["engine_errors"]) == (4, 2, 1, 1)
    assert cell["flip"]["rate"] == 0.5 and cell["flip"]["not_applicable"] == 1
    assert cell["viewpoint_lint"] == {"checked": 2, "flagged": 1, "rate": 0.5, "kinds": {"missing_frame": 1}}
    assert cell["attribute_coverage"]["mean"] == 0.75 and cell["attribute_coverage"]["missing"] == {
        "colour": 1
    }


def test_pass_and_comparison_cells():
    key = {"judge": "j", "model": "m", "benchmark": "b"}
    passes = [
        {**key, "pair_id": "p1", "overall": 5, "error": None},
        {**key, "pair_id": "p1", "overall": 3, "error": None},
        {**key, "pair_id": "p2", "overall": None, "error": "no_json"},
        {**key, "pair_id": "p2", "overall": 4, "error": None},
    ]
    (cell,) = pass_cells(passes)
    assert (cell["replies"], cell["parsed"], cell["failures"]) == (4, 3, {"no_json": 1})
    assert cell["self_consistency"]["items"] == 1 and cell["self_consistency"]["mean_abs_deviation"] == 1.0
    base = {"judge": "j", "model_a": "a", "model_b": "b", "benchmark": "x"}
    comparisons = [
        {**base, "ab": "A", "ba": "B", "outcome": "A"},
        {**base, "ab": "A", "ba": "A", "outcome": "inconsistent"},
        {**base, "ab": "tie", "ba": "tie", "outcome": "tie"},
        {**base, "ab": None, "ba": "B", "outcome": None},
    ]
    (cell,) = comparison_cells(comparisons)
    assert (cell["a_wins"], cell["b_wins"], cell["ties"], cell["inconsistent"], cell["unparsed"]) == (
        1,
        0,
        1,
        1,
        1,
    )
    assert cell["a_win_rate"] == 0.5 and cell["position_swap"]["first_position"] == 1


def test_human_source_from_a_review_export(tmp_path):
    """Human verdicts reach the eval as the review stage's judgment export (a file), never its database."""
    from editcaption.review.exports import export
    from editcaption.review.seed import seed_judgments
    from editcaption.schema import Judgment

    url = f"sqlite:///{tmp_path / 'review.db'}"
    records = [
        Judgment(pair_id=f"p{i}", instruction="Move the cup to the viewer's left.", model="m", benchmark="b",
                 judge=f"human:{who}", verdict=verdict, error_types=[] if verdict == "correct" else ["orientation"])
        for i, (who, verdict) in enumerate([("ann", "correct"), ("bob", "critical_error"), ("ann", "minor_error")])
    ]  # fmt: skip
    seed_judgments(url, records)
    exported = export(url, "judgment", tmp_path / "judgments.parquet")
    got = read_human_judgments(HumanSourceConfig(parquet=exported.path))
    assert sorted((r["pair_id"], r["judge"], r["verdict"]) for r in got) == [
        ("p0", "human:ann", "correct"),
        ("p1", "human:bob", "critical_error"),
        ("p2", "human:ann", "minor_error"),
    ]
    with pytest.raises(ValueError, match="review export --kind judgment"):
        HumanSourceConfig(store_url=url)


def test_human_source_keeps_human_rows_and_names_missing_columns(tmp_path):
    rows = [
        {"pair_id": "p", "instruction": "i", "model": "m", "benchmark": "b", "judge": j, "verdict": "correct"}
        for j in ("human:ann", "vlm", "human:bob")
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "j.parquet")
    got = read_human_judgments(HumanSourceConfig(parquet=str(tmp_path)))
    assert [r["judge"] for r in got] == ["human:ann", "human:bob"]
    pq.write_table(pa.table({"pair_id": ["p"]}), tmp_path / "j.parquet")
    with pytest.raises(ValueError, match=r"lacks the Judgment column\(s\) \['benchmark'"):
        read_human_judgments(HumanSourceConfig(parquet=str(tmp_path / "j.parquet")))
    with pytest.raises(ValueError, match="does not exist"):
        read_human_judgments(HumanSourceConfig(parquet=str(tmp_path / "nope.parquet")))
