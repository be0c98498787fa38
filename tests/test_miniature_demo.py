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
# 0.03-0.05. HAE-DPO is not asserted against SFT or plain DPO: it did not beat them in those runs.
SFT_EXACT_MARGIN = 0.05
SFT_VIEWPOINT_MARGIN = 0.05


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
