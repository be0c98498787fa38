"""What the cluster tests share: the test pairs, the job environment, the synthesis job they submit."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ANNOTATOR = ROOT / "editcaption" / "data" / "miniature" / "annotator"
GPU = {"gpu-1x": 1}
BUCKET = "editcaption"
# All 30 sample pairs: with fewer, the engine finished its work about a second after it loaded (6 pairs,
# 6 Dec), too soon to lose its node mid-job.
PAIRS = sorted(p.name for p in (ROOT / "editcaption" / "data" / "sample_pairs").iterdir() if p.is_dir())
BAD = ["zz-empty", "zz-lonely"]
# Compared between runs: what a pair ended as and the instruction it got (greedy, so reproducible).
COMPARED = ["pair_id", "status", "best_instruction", "quarantine_reason", "filter_reason"]
JOB_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": "1"}


def synthesis_config(pairs: str, output: str, scorer_url: str, on_cluster: bool, **changes: Any) -> dict:
    """Greedy annotator (the miniature model on transformers), EditScore stand-in as the scorer."""
    annotator = {"backend": "transformers", "model": str(ANNOTATOR), "max_pixels": 128 * 128, "batch_size": 2}
    if on_cluster:
        annotator["resources"] = GPU
    return {
        "input": pairs,
        "output": output,
        "candidates_per_pair": 1,
        "sampling": {"max_tokens": 16, "temperature": 0.0},
        "annotator": annotator,
        "scorer": {
            "backend": "openai",
            "base_url": scorer_url,
            "model": "editscore-standin",
            "api_key_env": None,
        },
        "filter": {"min_overall": 5.0, "min_semantic_consistency": 4.0},
        "routing": {"review_share": 0.25},
        "pairs_per_batch": 2,
        **changes,
    }


def report(name: str, **numbers: Any) -> None:
    """Print a measurement (pytest -s shows it) and keep it in RAY_CLUSTER_TIMINGS, if set, for the notes."""
    print(f"{name}: {numbers}")
    path = os.environ.get("RAY_CLUSTER_TIMINGS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"measure": name, **numbers}) + "\n")
