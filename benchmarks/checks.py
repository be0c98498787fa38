"""What the failure-mode checks cost, as a fraction of captioning the same pairs.

    python benchmarks/checks.py --model .cache/tiny-qwen3vl --out benchmarks/results/checks.json

Flip consistency captions every applicable pair a second time (its mirror), so for pairs whose
instruction uses left/right it doubles captioning by construction; what is measured is the share of
pairs it applies to and the rest of its cost (mirroring images, comparing directions). The text checks
(viewpoint lint, attribute coverage, hard negatives) run no model. One in-process vLLM engine on the
tiny Qwen3-VL answers both the captioning and the mirrored requests. The instructions checked are
the sample pairs' reference instructions (they use frames of reference and directions, as a good
captioner's would); the tiny model's own replies are noise without direction words.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "editcaption" / "data" / "sample_pairs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", default="benchmarks/results/checks.json")
    parser.add_argument("--copies", type=int, default=4, help="the sample pairs this many times")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from editcaption.checks.attributes import attribute_coverage
    from editcaption.checks.flip import flip_expand, flip_merge
    from editcaption.checks.hard_negatives import hard_negatives
    from editcaption.checks.viewpoint import lint_viewpoint
    from editcaption.engines import EngineResult, SamplingSettings, VLLMEngineConfig
    from editcaption.engines.vllm_engine import VLLMPredictor
    from editcaption.prompts.instruction import caption_expand

    pairs = []
    for c in range(args.copies):
        for folder in sorted(p for p in SAMPLE.iterdir() if p.is_dir()):
            meta = json.loads((folder / "meta.json").read_text())
            pairs.append(
                {
                    "pair_id": f"{folder.name}-{c}",
                    "source": (folder / "source.png").read_bytes(),
                    "target": (folder / "target.png").read_bytes(),
                    "instruction": meta["instruction"],
                    "quarantine_reason": None,
                }
            )
    sampling = SamplingSettings(max_tokens=24, temperature=0.0)
    engine = VLLMPredictor(
        VLLMEngineConfig(
            model=args.model,
            device="cpu",
            dtype="float32",
            enforce_eager=True,
            max_model_len=2048,
            max_num_seqs=16,
            max_pixels=65536,
        )  # fmt: skip
    )

    def timed(fn):
        started = time.perf_counter()
        value = fn()
        return value, time.perf_counter() - started

    caption_rows = [r.to_row() for p in pairs for r in caption_expand(p, 1, sampling)]
    engine.answer_many(caption_rows[:4])  # warm-up, not timed
    _, caption_s = timed(lambda: engine.answer_many(caption_rows))

    plans, expand_s = timed(lambda: [flip_expand(p, sampling) for p in pairs])
    flip_rows = [r.to_row() for plan in plans for r in plan]
    answers, flip_generate_s = timed(lambda: engine.answer_many(flip_rows))
    results = iter(EngineResult.from_row(a) for a in answers)
    verdicts, merge_s = timed(
        lambda: [flip_merge(p, [next(results) for _ in plan]) for p, plan in zip(pairs, plans, strict=True)]
    )

    instructions = [p["instruction"] for p in pairs]
    _, lint_s = timed(lambda: [lint_viewpoint(t) for t in instructions])
    _, coverage_s = timed(lambda: [attribute_coverage(t, t) for t in instructions])
    _, negatives_s = timed(
        lambda: [hard_negatives(p["pair_id"], p["source"], p["target"], p["instruction"]) for p in pairs]
    )

    engine.close()
    applicable = len(flip_rows)
    report = {
        "model": args.model,
        "pairs": len(pairs),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "captioning_s": round(caption_s, 3),
        "flip_consistency": {
            "applicable_pairs": applicable,
            "applicable_share": round(applicable / len(pairs), 3),
            "mirror_and_plan_s": round(expand_s, 3),
            "generate_mirrored_s": round(flip_generate_s, 3),
            "compare_s": round(merge_s, 3),
            "verdicts": {
                v: sum(r["flip_verdict"] == v for r in verdicts)
                for v in ("consistent", "inconsistent", "not_applicable")
            },
        },
        "viewpoint_lint_s": round(lint_s, 4),
        "attribute_coverage_s": round(coverage_s, 4),
        "hard_negatives_s": round(negatives_s, 4),
    }
    total_flip = expand_s + flip_generate_s + merge_s
    report["fractions_of_captioning"] = {
        "flip_consistency": round(total_flip / caption_s, 3),
        "flip_consistency_without_generation": round((expand_s + merge_s) / caption_s, 3),
        "viewpoint_lint": round(lint_s / caption_s, 4),
        "attribute_coverage": round(coverage_s / caption_s, 4),
        "hard_negatives": round(negatives_s / caption_s, 4),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
