"""The paper's direction in miniature (issue #9): one real `run_demo` on the committed annotator and
scorer — drafts, EditScore filter, ground-truth "review", SFT, HAE-DPO and plain DPO through the
project's Ray Train jobs on CPU — graded exactly on held-out pairs and their mirrors.

The run is `editcaption demo` with its defaults (the run README quotes); seeds are fixed, so it is
repeatable up to CPU floating-point order. Each threshold is stated next to what the reference
runs measured (docs/miniature.md), with room for that noise.
"""

from __future__ import annotations

import json

import pytest

from editcaption.demo.pipeline import DemoConfig, run_demo
from editcaption.demo.retrain import COMMITTED

pytestmark = pytest.mark.slow

# Measured on the committed models (retrained 29 Nov with the vision position code; the reference run
# in docs/miniature.md, 200 held-out pairs): exact match annotator 0.08, SFT 0.21, HAE-DPO 0.18, DPO
# 0.17; viewpoint errors annotator 0.10, SFT 0.00; orientation errors SFT 0.05 (10 pairs), HAE-DPO
# 0.015 (3 pairs), DPO 0.01 (2 pairs); attribute errors 0.00 after SFT. Preference errors:
# viewpoint annotator 0.40, SFT 0.00; attribute SFT 0.09, both DPOs 0.02; orientation 0.42-0.43 except HAE-DPO 0.38 (near
# a coin toss: the models still do not see direction well, docs/miniature.md). The previous models
# gave the same direction in three runs for every assertion here except the two HAE-DPO ones, which
# are new with these models and the demo's scaled margins; the run repeats to the digit.
SFT_EXACT_MARGIN = 0.05
SFT_VIEWPOINT_MARGIN = 0.05
SFT_VIEWPOINT_PREFERENCE_MARGIN = 0.2
HAE_ORIENTATION_MARGIN = 0.02  # 4 of 200 held-out pairs; measured 0.05 -> 0.015


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("miniature-demo")
    cfg = DemoConfig(out=str(out), annotator=str(COMMITTED / "annotator"), scorer=str(COMMITTED / "scorer"))
    report = run_demo(cfg)
    assert json.loads((out / "report.json").read_text())["models"].keys() == report["models"].keys()
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    return report


def test_counts_reconcile(report: dict) -> None:
    counts = report["counts"]
    assert counts["refined"] + counts["kept"] + counts["filtered"] == report["config"]["pool"]
    assert counts["sft_records"] == counts["refined"] + counts["kept"]
    assert set(report["models"]) == {"annotator", "sft", "sft+hae-dpo", "sft+dpo"}


def test_sft_beats_the_annotator_on_exact_match(report: dict) -> None:
    models = report["models"]
    assert models["sft"]["exact_match"] >= models["annotator"]["exact_match"] + SFT_EXACT_MARGIN, models


def test_sft_drops_the_annotators_viewpoint_errors(report: dict) -> None:
    models = report["models"]
    assert (
        models["sft"]["error_rates"]["viewpoint"]
        <= models["annotator"]["error_rates"]["viewpoint"] - SFT_VIEWPOINT_MARGIN
    ), models


def test_dpo_on_ground_truth_pairs_does_not_add_orientation_errors(report: dict) -> None:
    models = report["models"]
    assert models["sft+dpo"]["error_rates"]["orientation"] <= models["sft"]["error_rates"]["orientation"], (
        models
    )


def test_sft_stops_preferring_viewpoint_mistakes(report: dict) -> None:
    """Likelihood, not greedy text: the annotator learned to prefer dropped frames and camera moves
    told as object moves; SFT on refined labels unlearns that on held-out pairs."""
    pref = {name: s["preference_errors"] for name, s in report["models"].items()}
    assert pref["sft"]["viewpoint"] <= pref["annotator"]["viewpoint"] - SFT_VIEWPOINT_PREFERENCE_MARGIN, pref


def test_both_dpo_objectives_lower_attribute_preference_errors_from_sft(report: dict) -> None:
    pref = {name: s["preference_errors"] for name, s in report["models"].items()}
    assert pref["sft+hae-dpo"]["attribute"] < pref["sft"]["attribute"], pref
    assert pref["sft+dpo"]["attribute"] < pref["sft"]["attribute"], pref


def test_hae_dpo_makes_fewer_orientation_errors_than_sft(report: dict) -> None:
    models = report["models"]
    assert (
        models["sft+hae-dpo"]["error_rates"]["orientation"]
        <= models["sft"]["error_rates"]["orientation"] - HAE_ORIENTATION_MARGIN
    ), models


def test_hae_dpo_is_no_worse_than_plain_dpo_on_the_raised_error_types(report: dict) -> None:
    """The types whose margins HAE-DPO raises (orientation, viewpoint, attribute). How often it prefers
    a labelled wrong variant: no more than plain DPO (measured 0.38 vs 0.43, 0 = 0, 0.02 = 0.02). Its
    greedy captions' error rates: worse by at most one held-out pair (measured: orientation 3 pairs vs
    2, the only type where they differ)."""
    models = report["models"]
    hae, plain = models["sft+hae-dpo"], models["sft+dpo"]
    one_pair = 1 / report["config"]["heldout"] + 1e-9
    for error_type in ("orientation", "viewpoint", "attribute"):
        assert hae["preference_errors"][error_type] <= plain["preference_errors"][error_type], (
            error_type,
            models,
        )
        assert hae["error_rates"][error_type] <= plain["error_rates"][error_type] + one_pair, (
            error_type,
            models,
        )
