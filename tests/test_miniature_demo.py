"""The paper's claims in miniature (issue #17), as statistics that hold on any machine.

`benchmarks/miniature.py` trained SFT, HAE-DPO and plain DPO from the committed annotator with five
seeds and evaluated every model on the world's `test` split (1,000 pairs, never used to choose a
setting); its results are committed (`benchmarks/results/miniature/study.json`). A claim is asserted
here only where its 95% interval over seeds and pairs excludes zero, with a threshold that the study's
worst seed passes with room to spare (CPU kernels differ between machines: the same seed moves by a
few pairs). The demo runs one seed (`editcaption demo` defaults: seed 0, test split, the split's first
200 pairs) through the project's real Stage 1, Ray Train jobs and evaluation, and must meet the same
thresholds: the claims function below is applied to it, and to every seed of the study on all its
pairs and on the demo's 200.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from editcaption.demo.pipeline import DemoConfig, Stage1, run_demo, run_stage1, scorer_ranking
from editcaption.demo.retrain import COMMITTED
from editcaption.demo.world import split_pairs
from editcaption.schema import ERROR_TYPES

STUDY = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "miniature" / "study.json"

# label (as in study.json's differences): (model a, model b, metric, threshold on metric(a) - metric(b)).
# Metrics: 'exact' or an error type (share of the test pairs), 'pref:<type>' (share of that type's
# labelled variants found at least as likely as the canonical instruction). Every claim whose interval
# excludes zero in the favourable direction, with the study's five seeds in the comment, on its 1,000
# pairs and on the demo's first 200 (7 Dec, this machine, the models retrained on the re-rendered world
# and the scorer retrained to read rotations and raised arms; the Stage-1 filter at overall 9, chosen on
# dev). Threshold: about half the worst seed, rounded down, since a CPU's float order alone moved a seed
# by a few pairs before.
CLAIMS: dict[str, tuple[str, str, str, float]] = {
    # 1,000 pairs 0.125, 0.127, 0.110, 0.125, 0.124; 200 pairs 0.125, 0.125, 0.120, 0.120, 0.120: the
    # filter and the refined pairs drop the annotator's viewpoint mistakes from SFT's data.
    "viewpoint errors: annotator - sft": ("annotator", "sft", "viewpoint", 0.05),
    # 0.098, 0.095, 0.095, 0.095, 0.098; 0.085, 0.080, 0.075, 0.080, 0.085: at overall 9 the filter drops
    # every attribute error too.
    "attribute errors: annotator - sft": ("annotator", "sft", "attribute", 0.03),
    # 0.183, 0.192, 0.185, 0.196, 0.172; 0.175, 0.185, 0.185, 0.180, 0.155: SFT on the filtered and
    # refined data beats its annotator.
    "exact match: sft - annotator": ("sft", "annotator", "exact", 0.07),
    # 0.033, 0.025, 0.038, 0.026, 0.032; 0.050, 0.040, 0.050, 0.045, 0.035: SFT drops the annotator's
    # reversed pans (0.46 of pans -> 0) and some reversed rotations (0.50 -> 0.40) but tells the raised
    # arm's own side at chance where the annotator mostly named another edit (0.27 -> 0.51 reversed).
    "orientation errors: annotator - sft": ("annotator", "sft", "orientation", 0.01),
}
# Not asserted, their intervals span zero (same study): orientation errors SFT - HAE-DPO +0.001
# [-0.004, +0.008], HAE-DPO - DPO +0.000 [-0.002, +0.002]; exact match HAE-DPO - SFT +0.001 [-0.009,
# +0.011]. The viewpoint preference SFT - HAE-DPO, +0.008 [+0.001, +0.019], excludes zero but its worst
# seed is +0.002 (docs/miniature.md).


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


DEMO_PAIRS = DemoConfig.model_fields["heldout"].default


def _grade_of_letter() -> dict[str, str]:
    """The inverse of the study script's per-pair grade letters (one table, in benchmarks/miniature.py)."""
    spec = importlib.util.spec_from_file_location(
        "miniature_study", STUDY.parents[3] / "benchmarks" / "miniature.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {letter: grade for grade, letter in module.GRADE_LETTERS.items()}


GRADE_OF_LETTER = _grade_of_letter()


def graded_table(letters: str) -> dict:
    """A model's exact match and error rates from study.json's per-pair grade letters."""
    grades = [GRADE_OF_LETTER[c] for c in letters]
    return {
        "exact_match": grades.count("exact") / len(grades),
        "error_rates": {t: grades.count(t) / len(grades) for t in ERROR_TYPES},
    }


def test_the_study_is_five_seeds_on_the_test_split_with_the_committed_models(study: dict) -> None:
    cfg = study["config"]
    assert cfg["split"] == "test" and len(set(cfg["seeds"])) >= 5
    # The demo evaluates the split's first pairs, so the study holds them: its claims are checked there too.
    assert cfg["pairs"] >= DEMO_PAIRS and cfg["demo"]["heldout"] == cfg["pairs"]
    assert Path(cfg["demo"]["annotator"]).name == "annotator" and Path(cfg["demo"]["scorer"]).name == "scorer"


def test_every_asserted_claim_excludes_zero_and_holds_on_every_seed_of_the_study(study: dict) -> None:
    for label, (_, _, _, threshold) in CLAIMS.items():
        interval = study["differences"][label]
        assert interval["low"] > 0, (label, interval)
        assert min(interval["per_seed"]) >= threshold, (label, interval)
    for seed, trained in study["per_seed"].items():  # the annotator is one model, measured once
        models = {"annotator": study["annotator"], **trained}
        assert not failed_claims(models), (seed, claim_values(models))


def test_every_asserted_claim_holds_on_the_demos_pairs_for_every_seed_of_the_study(study: dict) -> None:
    """CI's demo evaluates the split's first `heldout` pairs: each seed of the study must pass there too,
    where fewer pairs leave each rate a wider spread."""
    assert all(key in ("exact", *ERROR_TYPES) for _, _, key, _ in CLAIMS.values())  # read from the grades
    grades = study["per_pair_grades"]
    for i, seed in enumerate(study["config"]["seeds"]):
        models = {name: graded_table(per_seed[i][:DEMO_PAIRS]) for name, per_seed in grades.items()}
        assert not failed_claims(models), (seed, claim_values(models))


# The same study with the Stage-1 filter off (`--set filter={"min_overall": 0, ...}`, the same 1,000 test
# pairs; tried first on two seeds of `dev`): SFT's data then holds orientation errors (0.052 of its
# records, the annotator's reversed pans), SFT learns them, and both DPO objectives undo them. Per seed:
# orientation SFT - HAE-DPO +0.021, +0.024, +0.023, +0.017, +0.016 (pans 0.216 -> 0.012 reversed); exact
# match HAE-DPO - SFT +0.042, +0.048, +0.035, +0.031, +0.017; the orientation preference +0.032, +0.037,
# +0.043, +0.038, +0.017. Thresholds about half the worst seed. HAE-DPO - DPO is +0.000 [-0.002, +0.002]
# here too, so it is not asserted.
NO_FILTER = STUDY.with_name("study-no-filter.json")
NO_FILTER_CLAIMS: dict[str, float] = {
    "orientation errors: sft - sft+hae-dpo": 0.008,
    "exact match: sft+hae-dpo - sft": 0.008,
    "prefers an orientation flip: sft - sft+hae-dpo": 0.008,
}


def test_without_the_filter_dpo_undoes_the_orientation_errors_sft_learned_from_its_data(study: dict) -> None:
    """Where SFT's data holds orientation errors (no scorer filter), HAE-DPO lowers them on every seed:
    DPO reaches mistakes learned from labels, which the filtered study's SFT never learned."""
    ablation = json.loads(NO_FILTER.read_text())
    cfg = ablation["config"]
    assert cfg["split"] == "test" and len(set(cfg["seeds"])) >= 5 and cfg["pairs"] == study["config"]["pairs"]
    assert (
        cfg["demo"]["filter"]["min_overall"] == 0 and cfg["demo"]["filter"]["min_semantic_consistency"] == 0
    )
    changed = {k for k, v in cfg["demo"].items() if v != study["config"]["demo"][k]}
    assert changed == {"filter"}, changed  # the one difference from the study
    sft_data = ablation["stage1_value"]["+ routing and refinement"]["error_rates"]["orientation"]
    assert (
        sft_data > 0.02
        and study["stage1_value"]["+ routing and refinement"]["error_rates"]["orientation"] == 0
    )
    for label, threshold in NO_FILTER_CLAIMS.items():
        interval = ablation["differences"][label]
        assert interval["low"] > 0 and min(interval["per_seed"]) >= threshold, (label, interval)


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
    """The thresholds are the study's: the CI run must be one of its seeds, on the first of its pairs,
    whatever else changed."""
    assert report["config"]["heldout"] <= study["config"]["pairs"]
    ran = {k: v for k, v in report["config"].items() if k not in ("out", "seed", "heldout")}
    studied = {k: v for k, v in study["config"]["demo"].items() if k not in ("seed", "heldout")}
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
# runs). Measured (7 Dec, the scorer retrained to read rotations and raised arms; filter at overall 9):
# precision 0.594 -> 0.932 -> 0.960; the filter kept 0.997 of 304 correct drafts and removed viewpoint
# errors 1.000 (58), attribute errors 1.000 (47), orientation errors 0.983 (58) and critical ones 0.786
# (103); the scorer ranked the canonical instruction above minor variants 1.000, major 0.949, critical
# 0.992. The critical ones are issue #17's targets (0.7 removed, 0.9 ranked). Each threshold leaves room
# for several pairs that a CPU's float order moves.
STAGE1_PRECISION_GAINS = (0.2, 0.01)  # measured +0.339 (filter), +0.028 (routing and refinement)
MIN_VIEWPOINT_REMOVED = 0.85  # measured 1.000
MIN_ATTRIBUTE_REMOVED = 0.85  # measured 1.000 (0.44 at overall 6 on dev)
MIN_ORIENTATION_REMOVED = 0.85  # measured 0.983 (0.569 before the scorer's 7 Dec retrain)
MIN_CRITICAL_REMOVED = 0.7  # measured 0.786 (0.524 before), issue #17's target
MIN_CORRECT_KEPT = 0.9  # measured 0.997 (issue #17's target 0.8)
MIN_MINOR_RANKED = 0.9  # measured 1.000
MIN_CRITICAL_RANKED = 0.9  # measured 0.992 (0.683 before), issue #17's target


@pytest.mark.slow
def test_stage1_counts_reconcile(stage1: tuple[Stage1, dict]) -> None:
    counts = stage1[0].counts
    assert counts["refined"] + counts["kept"] + counts["filtered"] == DemoConfig.model_fields["pool"].default


@pytest.mark.slow
def test_each_stage1_step_raises_the_precision_of_the_sft_data(stage1: tuple[Stage1, dict]) -> None:
    steps = [v["precision"] for v in stage1[0].value.values()]
    assert list(stage1[0].value) == ["annotator drafts", "+ filter", "+ routing and refinement"]
    gains = [b - a for a, b in zip(steps, steps[1:], strict=False)]
    assert all(g >= least for g, least in zip(gains, STAGE1_PRECISION_GAINS, strict=True)), steps


@pytest.mark.slow
def test_the_filter_removes_viewpoint_attribute_orientation_and_critical_errors_and_keeps_correct_drafts(
    stage1: tuple[Stage1, dict],
) -> None:
    f = stage1[0].filter
    assert f["by_error_type"]["viewpoint"]["removed"] >= MIN_VIEWPOINT_REMOVED, f
    assert f["by_error_type"]["attribute"]["removed"] >= MIN_ATTRIBUTE_REMOVED, f
    assert f["by_error_type"]["orientation"]["removed"] >= MIN_ORIENTATION_REMOVED, f
    assert f["by_severity"]["critical"]["removed"] >= MIN_CRITICAL_REMOVED, f
    assert f["correct_kept"] >= MIN_CORRECT_KEPT, f


@pytest.mark.slow
def test_the_scorer_ranks_the_canonical_instruction_above_minor_and_critical_mistakes(
    stage1: tuple[Stage1, dict],
) -> None:
    ranking = stage1[1]
    assert ranking["canonical_above"]["minor"] >= MIN_MINOR_RANKED, ranking
    assert ranking["canonical_above"]["critical"] >= MIN_CRITICAL_RANKED, ranking
