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

# Measured on the committed models (retrained 29 Nov with the pan curriculum; the reference run in
# docs/miniature.md, 200 held-out pairs, repeated to the digit by a second run on the same models):
# exact match annotator 0.095, SFT 0.195, HAE-DPO 0.21, DPO 0.21; viewpoint errors annotator 0.125,
# SFT 0.00; orientation errors SFT 0.175 (35 pairs: kept drafts carry the annotator's flipped pans),
# HAE-DPO 0.10 (20), DPO 0.105 (21); attribute errors 0.005 for both DPOs. Preference errors:
# viewpoint annotator 0.41, SFT 0.00; orientation SFT 0.367, both DPOs 0.275 (of 120 variants);
# attribute SFT 0.185, HAE-DPO 0.18, DPO 0.185.
SFT_EXACT_MARGIN = 0.05  # 10 of 200 pairs; measured 0.10
SFT_VIEWPOINT_MARGIN = 0.05  # measured 0.125
SFT_VIEWPOINT_PREFERENCE_MARGIN = 0.2  # measured 0.41
DPO_ORIENTATION_PREFERENCE_MARGIN = 0.05  # 6 of 120 variants; measured 0.092 (11) for both objectives
HAE_ORIENTATION_MARGIN = 0.05  # 10 of 200 held-out pairs; measured 0.175 -> 0.10 (15 pairs)


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


def test_both_dpo_objectives_prefer_direction_flips_less_than_sft(report: dict) -> None:
    """The preference pairs reward the canonical direction over its flip; on held-out pairs both
    objectives find fewer flips at least as likely as the canonical instruction."""
    pref = {name: s["preference_errors"] for name, s in report["models"].items()}
    for name in ("sft+hae-dpo", "sft+dpo"):
        assert pref[name]["orientation"] <= pref["sft"]["orientation"] - DPO_ORIENTATION_PREFERENCE_MARGIN, (
            pref
        )


def test_hae_dpo_makes_fewer_orientation_errors_than_sft(report: dict) -> None:
    models = report["models"]
    assert (
        models["sft+hae-dpo"]["error_rates"]["orientation"]
        <= models["sft"]["error_rates"]["orientation"] - HAE_ORIENTATION_MARGIN
    ), models


def test_hae_dpo_is_no_worse_than_plain_dpo_on_the_raised_error_types(report: dict) -> None:
    """The types whose margins HAE-DPO raises (orientation, viewpoint, attribute). How often it prefers
    a labelled wrong variant: no more than plain DPO (measured 0.275 = 0.275, 0 = 0, 0.18 vs 0.185).
    Its greedy captions' error rates: worse by at most one held-out pair (measured: orientation 20
    pairs vs 21, viewpoint 0 = 0, attribute 1 = 1). The two are this close at this scale: at DPO lr
    2e-4 HAE-DPO made 3 more orientation errors than plain DPO (docs/miniature.md)."""
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
