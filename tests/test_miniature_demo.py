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

# Measured in three runs on the committed models (docs/miniature.md): exact match annotator 0.10,
# SFT 0.18-0.19; viewpoint errors annotator 0.10, SFT 0.00; orientation errors SFT 0.06, SFT+DPO
# 0.03-0.05. Preference errors (the reference run, repeated to the digit): viewpoint annotator 0.41,
# SFT 0.00; attribute SFT 0.07, HAE-DPO 0.03, DPO 0.04; orientation 0.36-0.43 for every model (a
# coin toss: the models do not see direction). HAE-DPO is not asserted against SFT or plain DPO on
# orientation: it did not beat them in those runs.
SFT_EXACT_MARGIN = 0.05
SFT_VIEWPOINT_MARGIN = 0.05
SFT_VIEWPOINT_PREFERENCE_MARGIN = 0.2


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
