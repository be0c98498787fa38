"""The paper's claims in miniature (issue #17), as statistics that hold on any machine.

`benchmarks/miniature.py` trained SFT, HAE-DPO and plain DPO from the committed annotator with five
seeds and evaluated every model on the world's `test` split (200 pairs, never used to choose a
setting); its results are committed (`benchmarks/results/miniature/study.json`). A claim is asserted
here only where its 95% interval over seeds and pairs excludes zero, with a threshold that the study's
worst seed passes with room to spare (CPU kernels differ between machines: the same seed moves by a
few pairs). The demo in CI runs one seed (`editcaption demo` defaults: seed 0, test split) through the
project's real Stage 1, Ray Train jobs and evaluation, and must meet the same thresholds: the claims
function below is applied to it and to every seed of the study.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from editcaption.demo.pipeline import DemoConfig, Stage1, run_demo, run_stage1, scorer_ranking
from editcaption.demo.retrain import COMMITTED
from editcaption.demo.world import split_pairs

STUDY = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "miniature" / "study.json"

# label (as in study.json's differences): (model a, model b, metric, threshold on metric(a) - metric(b)).
# Metrics: 'exact' or an error type (share of the 200 test pairs), 'pref:<type>' (share of that type's
# labelled variants found at least as likely as the canonical instruction). Every claim whose interval
# excludes zero in the favourable direction, with the study's five seeds in the comment (7 Dec, this
# machine, the models retrained on the re-rendered world; the Stage-1 filter at overall 9, chosen on dev).
# Threshold: half the worst seed, rounded down, since a CPU's float order alone moved a seed by a few
# pairs before.
CLAIMS: dict[str, tuple[str, str, str, float]] = {
    # 0.115, 0.120, 0.125, 0.110, 0.120: the filter and the refined pairs drop the annotator's viewpoint
    # mistakes from SFT's data.
    "viewpoint errors: annotator - sft": ("annotator", "sft", "viewpoint", 0.05),
    # 0.085 on every seed: at overall 9 the filter drops every attribute error too.
    "attribute errors: annotator - sft": ("annotator", "sft", "attribute", 0.04),
    # 0.185, 0.165, 0.180, 0.195, 0.220: SFT on the filtered and refined data beats its annotator.
    "exact match: sft - annotator": ("sft", "annotator", "exact", 0.08),
}
# Not asserted, their intervals span zero (same study): orientation errors annotator - SFT +0.043
# [-0.005, +0.095] (every seed +0.035 to +0.060), SFT - HAE-DPO +0.009 [-0.011, +0.035], HAE-DPO - DPO
# -0.001 [-0.012, +0.009]; exact match HAE-DPO - SFT +0.006 [-0.024, +0.042] (docs/miniature.md).


def metric(models: dict, name: str, key: str) -> float:
    summary = models[name]
    if key == "exact":
        return summary["exact_match"]
    if key.startswith("pref:"):
        return summary["preference_errors"][key.split(":", 1)[1]]
    return summary["error_rates"][key]


def claim_values(models: dict) -> dict[str, float]:
    """Each claim's difference metric(a) - metric(b) on one run's model table."""
    return {
        label: metric(models, a, key) - metric(models, b, key) for label, (a, b, key, _) in CLAIMS.items()
    }


def failed_claims(models: dict) -> dict[str, float]:
    return {label: v for label, v in claim_values(models).items() if v < CLAIMS[label][3]}


@pytest.fixture(scope="module")
def study() -> dict:
    return json.loads(STUDY.read_text())


def test_the_study_is_five_seeds_on_the_test_split_with_the_committed_models(study: dict) -> None:
    cfg = study["config"]
    assert (
        cfg["split"] == "test"
        and len(set(cfg["seeds"])) >= 5
        and cfg["pairs"] == DemoConfig.model_fields["heldout"].default
    )
    assert Path(cfg["demo"]["annotator"]).name == "annotator" and Path(cfg["demo"]["scorer"]).name == "scorer"


def test_every_asserted_claim_excludes_zero_and_holds_on_every_seed_of_the_study(study: dict) -> None:
    for label, (_, _, _, threshold) in CLAIMS.items():
        interval = study["differences"][label]
        assert interval["low"] > 0, (label, interval)
        assert min(interval["per_seed"]) >= threshold, (label, interval)
    for seed, trained in study["per_seed"].items():  # the annotator is one model, measured once
        models = {"annotator": study["annotator"], **trained}
        assert not failed_claims(models), (seed, claim_values(models))


def _demo_config(out: Path) -> DemoConfig:
    return DemoConfig(out=str(out), annotator=str(COMMITTED / "annotator"), scorer=str(COMMITTED / "scorer"))


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stage1, dict]:
    """Stage 1 of `editcaption demo` (its defaults) and the scorer's ranking on the test split: what CI
    runs of the demo. The training and evaluation of four models take ~9 min here and run in
    `make test-miniature` (marker `miniature_extra`), beyond CI's 25-minute budget."""
    cfg = _demo_config(tmp_path_factory.mktemp("miniature-stage1"))
    return run_stage1(cfg), scorer_ranking(cfg.scorer, split_pairs(cfg.split, cfg.heldout))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`editcaption demo` with its defaults (seed 0, the test split): one seed of the study, on this CPU."""
    out = tmp_path_factory.mktemp("miniature-demo")
    report = run_demo(_demo_config(out))
    assert json.loads((out / "report.json").read_text())["models"].keys() == report["models"].keys()
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    return report


@pytest.mark.slow
@pytest.mark.miniature_extra
def test_the_demo_runs_the_studys_settings(report: dict, study: dict) -> None:
    """The thresholds are the study's: the CI run must be one of its seeds, whatever else changed."""
    ran = {k: v for k, v in report["config"].items() if k not in ("out", "seed")}
    studied = {k: v for k, v in study["config"]["demo"].items() if k != "seed"}
    assert {k: v for k, v in ran.items() if k not in ("annotator", "scorer")} == {
        k: v for k, v in studied.items() if k not in ("annotator", "scorer")
    }
    assert report["config"]["seed"] in study["config"]["seeds"]


@pytest.mark.slow
@pytest.mark.miniature_extra
def test_counts_reconcile(report: dict) -> None:
    counts = report["counts"]
    assert counts["refined"] + counts["kept"] + counts["filtered"] == report["config"]["pool"]
    assert counts["sft_records"] == counts["refined"] + counts["kept"]
    assert set(report["models"]) == {"annotator", "sft", "sft+hae-dpo", "sft+dpo"}


@pytest.mark.slow
@pytest.mark.miniature_extra
def test_the_demo_run_meets_every_claim_of_the_study(report: dict) -> None:
    assert not failed_claims(report["models"]), claim_values(report["models"])


# Stage 1 with the committed annotator and scorer on the fixed pool (only the CPU differs between
# runs). Measured in the study's Stage 1 (7 Dec, models retrained on the re-rendered world; filter at
# overall 9): precision 0.594 -> 0.859 -> 0.933; the filter kept 0.980 of 304 correct drafts and removed
# viewpoint errors 1.000 (58), attribute errors 1.000 (47), orientation errors 0.569 (58); the scorer
# ranked the canonical instruction above minor variants 1.000, major 0.968, critical 0.683 (issue #17's
# targets for critical drafts, 0.9 ranked and 0.7 removed, are not met: docs/miniature.md). Each
# threshold leaves room for a few pairs that a CPU's float order moves.
STAGE1_PRECISION_GAIN = 0.04  # measured +0.265 (filter) and +0.074 (routing and refinement)
MIN_VIEWPOINT_REMOVED = 0.85  # measured 1.000
MIN_ATTRIBUTE_REMOVED = 0.85  # measured 1.000 (0.44 at overall 6 on dev)
MIN_ORIENTATION_REMOVED = 0.45  # measured 0.569 (0.686 with the 6 Dec scorer on the first renders)
MIN_CORRECT_KEPT = 0.9  # measured 0.980 (issue #17's target 0.8)
MIN_MINOR_RANKED = 0.9  # measured 1.000
MIN_CRITICAL_RANKED = 0.6  # measured 0.683 (0.750 with the 6 Dec scorer on the first renders)


@pytest.mark.slow
def test_stage1_counts_reconcile(stage1: tuple[Stage1, dict]) -> None:
    counts = stage1[0].counts
    assert counts["refined"] + counts["kept"] + counts["filtered"] == DemoConfig.model_fields["pool"].default


@pytest.mark.slow
def test_each_stage1_step_raises_the_precision_of_the_sft_data(stage1: tuple[Stage1, dict]) -> None:
    steps = [v["precision"] for v in stage1[0].value.values()]
    assert list(stage1[0].value) == ["annotator drafts", "+ filter", "+ routing and refinement"]
    assert all(b >= a + STAGE1_PRECISION_GAIN for a, b in zip(steps, steps[1:], strict=False)), steps


@pytest.mark.slow
def test_the_filter_removes_viewpoint_attribute_and_orientation_errors_and_keeps_correct_drafts(
    stage1: tuple[Stage1, dict],
) -> None:
    f = stage1[0].filter
    assert f["by_error_type"]["viewpoint"]["removed"] >= MIN_VIEWPOINT_REMOVED, f
    assert f["by_error_type"]["attribute"]["removed"] >= MIN_ATTRIBUTE_REMOVED, f
    assert f["by_error_type"]["orientation"]["removed"] >= MIN_ORIENTATION_REMOVED, f
    assert f["correct_kept"] >= MIN_CORRECT_KEPT, f


@pytest.mark.slow
def test_the_scorer_ranks_the_canonical_instruction_above_minor_and_critical_mistakes(
    stage1: tuple[Stage1, dict],
) -> None:
    ranking = stage1[1]
    assert ranking["canonical_above"]["minor"] >= MIN_MINOR_RANKED, ranking
    assert ranking["canonical_above"]["critical"] >= MIN_CRITICAL_RANKED, ranking
