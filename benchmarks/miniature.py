"""The miniature world's claims as a statistic: several seeds of the SFT and DPO stages, one split.

    python benchmarks/miniature.py --seeds 0 1 2 3 4 --split test \
        --out benchmarks/results/miniature/study.json

The committed annotator and scorer are fixed, and so is Stage 1 (the pool's drafts, scores, filter and
routing): it runs once. Each seed then trains SFT, HAE-DPO and plain DPO (`pipeline.post_train`:
the seed sets data order, mirrored augmentation and hard negatives) and every model is evaluated on
the same pairs of the split (1,000 by default; `--reuse-models` evaluates an earlier run's models
again instead of training them). Every rate and every difference between models comes with a 95%
bootstrap interval that resamples seeds and pairs together (`seed_pair_bootstrap`), so it carries
the spread between training runs and the finite evaluation set. `--split dev` is where settings are
chosen; `--split test` (the default) reports and chooses nothing. Writes `study.json` (config,
Stage-1 value, filter and scorer figures, per-seed tables, intervals, orientation errors by edit kind,
per-pair grades) and `study.md`
(the tables docs/miniature.md and the README quote).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from editcaption.demo.pipeline import (
    DemoConfig,
    evaluate,
    post_train,
    run_stage1,
    scorer_ranking,
    trained_folders,
)
from editcaption.demo.retrain import COMMITTED
from editcaption.demo.world import EDIT_KINDS, WorldPair, split_pairs
from editcaption.evaluation.metrics import seed_pair_bootstrap
from editcaption.schema import ERROR_TYPES

TRAINED = ("sft", "sft+hae-dpo", "sft+dpo")
# Differences reported with intervals: (name, model a, model b, metric) means metric(a) - metric(b).
DIFFERENCES = [
    ("orientation errors: annotator - sft", "annotator", "sft", "orientation"),
    ("orientation errors: sft - sft+hae-dpo", "sft", "sft+hae-dpo", "orientation"),
    ("orientation errors: sft - sft+dpo", "sft", "sft+dpo", "orientation"),
    ("orientation errors: sft+dpo - sft+hae-dpo", "sft+dpo", "sft+hae-dpo", "orientation"),
    ("viewpoint errors: annotator - sft", "annotator", "sft", "viewpoint"),
    ("attribute errors: annotator - sft", "annotator", "sft", "attribute"),
    ("exact match: sft - annotator", "sft", "annotator", "exact"),
    ("exact match: sft+hae-dpo - sft", "sft+hae-dpo", "sft", "exact"),
    ("exact match: sft+hae-dpo - sft+dpo", "sft+hae-dpo", "sft+dpo", "exact"),
    ("prefers an orientation flip: sft - sft+hae-dpo", "sft", "sft+hae-dpo", "pref:orientation"),
    ("prefers an orientation flip: sft+dpo - sft+hae-dpo", "sft+dpo", "sft+hae-dpo", "pref:orientation"),
    ("prefers a viewpoint error: sft - sft+hae-dpo", "sft", "sft+hae-dpo", "pref:viewpoint"),
    ("prefers an attribute error: sft - sft+hae-dpo", "sft", "sft+hae-dpo", "pref:attribute"),
]
METRICS = ["exact", *ERROR_TYPES, *(f"pref:{t}" for t in ERROR_TYPES)]
# study.json's per-pair grades, a letter per pair (first letters would make orientation and other one).
GRADE_LETTERS = {"exact": "e", "orientation": "o", "viewpoint": "v", "attribute": "a", "other": "x"}


def cells(per_pair: dict, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(numerator, denominator) per pair of one model's run for `metric`."""
    if metric.startswith("pref:"):
        kind = metric.split(":", 1)[1]
        flags = per_pair["preferred_variants"]
        num = np.array([sum(v for t, v in f if t == kind) for f in flags], float)
        return num, np.array([sum(1 for t, _ in f if t == kind) for f in flags], float)
    grades = per_pair["grade"]
    return np.array([g == metric for g in grades], float), np.ones(len(grades))


def matrices(runs: dict[str, list[dict]], metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per model, the (seeds, pairs) numerator and denominator of `metric` (the annotator repeated)."""
    out = {}
    for name, per_seed in runs.items():
        nums, dens = zip(*(cells(r, metric) for r in per_seed), strict=True)
        out[name] = (np.stack(nums), np.stack(dens))
    return out


def interval(num: np.ndarray, den: np.ndarray | None = None) -> dict[str, float | None]:
    if den is not None and den.sum() == 0:
        return {"mean": None, "low": None, "high": None}
    mean, low, high = seed_pair_bootstrap(num, den)
    return {"mean": round(mean, 4), "low": round(low, 4), "high": round(high, 4)}


def orientation_by_kind(runs: dict[str, list[dict]], pairs: list[WorldPair]) -> dict[str, dict[str, float]]:
    """Per model, the share of each edit kind's pairs told with a reversed direction (mean over seeds):
    which orientation errors are the annotator's injected ones and which are misreadings."""
    kinds = np.array([p.kind for p in pairs])
    out = {}
    for name, per_seed in runs.items():
        flags = np.stack([cells(r, "orientation")[0] for r in per_seed])
        out[name] = {
            k: round(float(flags[:, kinds == k].mean()), 4) for k in EDIT_KINDS if (kinds == k).any()
        }
    return out


def summarize_study(runs: dict[str, list[dict]]) -> dict:
    """Per model and metric: the pooled rate with its interval and the per-seed values; the differences."""
    rates: dict[str, dict] = {name: {} for name in runs}
    for metric in METRICS:
        for name, (num, den) in matrices(runs, metric).items():
            ci = interval(num, den)
            per_seed = [
                round(float(n.sum() / d.sum()), 4) if d.sum() else None for n, d in zip(num, den, strict=True)
            ]
            rates[name][metric] = {**ci, "per_seed": per_seed}
    differences = {}
    for label, a, b, metric in DIFFERENCES:
        m = matrices(runs, metric)
        (num_a, den), (num_b, _) = m[a], m[b]
        # Pooled per pair: the rate's difference is sum(a - b) / sum(den) with matched denominators.
        diff = interval(num_a - num_b, den)
        per_seed = [
            round(float((x - y).sum() / d.sum()), 4) for x, y, d in zip(num_a, num_b, den, strict=True)
        ]
        differences[label] = {
            **diff,
            "per_seed": per_seed,
            "excludes_zero": diff["low"] > 0 or diff["high"] < 0,
        }
    return {"rates": rates, "differences": differences}


def markdown(study: dict) -> str:
    models = list(study["rates"])
    rows = [("exact match", "exact")] + [(f"{t} errors", t) for t in ERROR_TYPES]
    rows += [(f"prefers a wrong {t} variant", f"pref:{t}") for t in ("orientation", "viewpoint", "attribute")]
    cfg = study["config"]
    lines = [
        f"# Miniature study: {len(cfg['seeds'])} seeds of SFT and DPO, {cfg['pairs']} pairs of the "
        f"`{cfg['split']}` split",
        "",
        "Mean over seeds and pairs, with the 95% bootstrap interval over both (the annotator is one "
        "model: its interval is over pairs). Rates are shares of the split's pairs; 'prefers' rows are "
        "shares of the labelled wrong variants of that type the model finds at least as likely as the "
        "canonical instruction.",
        "",
        "| metric | " + " | ".join(models) + " |",
        "|---|" + "---|" * len(models),
    ]
    for label, key in rows:
        cells_ = []
        for name in models:
            r = study["rates"][name][key]
            cells_.append("–" if r["mean"] is None else f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]")
        lines.append(f"| {label} | " + " | ".join(cells_) + " |")
    lines += ["", "| difference | mean [95% interval] | per seed | excludes 0 |", "|---|---|---|---|"]
    for label, d in study["differences"].items():
        seeds = ", ".join(f"{v:+.3f}" for v in d["per_seed"])
        lines.append(
            f"| {label} | {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | {seeds} | "
            f"{'yes' if d['excludes_zero'] else 'no'} |"
        )
    by_kind = study["orientation_by_kind"]
    shown = [k for k in next(iter(by_kind.values())) if any(by_kind[m][k] for m in models)]
    lines += [
        "",
        "Orientation errors by edit kind (share of that kind's pairs, mean over seeds):",
        "",
        "| edit kind | " + " | ".join(models) + " |",
        "|---|" + "---|" * len(models),
    ]
    lines += [f"| {k} | " + " | ".join(f"{by_kind[m][k]:.3f}" for m in models) + " |" for k in shown]
    value = study["stage1_value"]
    lines += [
        "",
        "Stage 1 on the SFT data (precision = exactly right; error rates are shares of records):",
        "",
    ]
    lines += [
        "| step | records | precision | " + " | ".join(ERROR_TYPES) + " |",
        "|---|---|---|" + "---|" * 4,
    ]
    for step, v in value.items():
        rates = " | ".join(f"{v['error_rates'][t]:.3f}" for t in ERROR_TYPES)
        lines.append(f"| {step} | {v['n']} | {v['precision']:.3f} | {rates} |")
    f, r = study["filter"], study["scorer_ranking"]
    lines += [
        "",
        f"Filter: keeps {f['correct_kept']:.3f} of {f['n_correct']} correct drafts; removes "
        + ", ".join(f"{s} {v['removed']:.3f} (n {v['n']})" for s, v in f["by_severity"].items() if v["n"])
        + " of the wrong ones by severity and "
        + ", ".join(f"{t} {v['removed']:.3f} (n {v['n']})" for t, v in f["by_error_type"].items() if v["n"])
        + f" by type; {f['precision']:.3f} of what it removes is wrong."
        if f["precision"] is not None
        else "",
        "",
        f"Scorer on {r['n_pairs']} `{cfg['split']}` pairs: the canonical instruction scores above a labelled "
        "variant for "
        + ", ".join(f"{s} {v:.3f}" for s, v in r["canonical_above"].items())
        + " of the variants of each severity.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--split", choices=["dev", "test"], default="test")
    ap.add_argument(
        "--pairs",
        type=int,
        default=1000,
        help="Pairs of the split every model is evaluated on; the demo's (200) are the first. At 200 a "
        "difference of 0.03 in a rate near 0.1 spans zero.",
    )
    ap.add_argument("--annotator", default=str(COMMITTED / "annotator"))
    ap.add_argument("--scorer", default=str(COMMITTED / "scorer"))
    ap.add_argument(
        "--work", default="runs/miniature-study", help="Scratch folder: data and models per seed."
    )
    ap.add_argument("--out", default="benchmarks/results/miniature/study.json")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON", help="DemoConfig overrides.")
    ap.add_argument(
        "--reuse-models",
        action="store_true",
        help="Evaluate the models an earlier run of this study left in --work (seed-N/models) instead of "
        "training them again, e.g. on more pairs. Same seeds, settings and committed models as that run: "
        "only the evaluation is new (recorded in study.json's config).",
    )
    args = ap.parse_args()
    if len(args.seeds) < 2:
        ap.error("--seeds: a study needs at least two seeds")
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    work = Path(args.work).resolve()
    if (earlier := sorted(work.glob("seed-*"))) and not args.reuse_models:
        # Each seed's training runs refuse an existing run folder, after Stage 1 has already run.
        ap.error(
            f"--work {work} holds an earlier study's runs ({earlier[0].name}, ...): remove it, pass another "
            "or evaluate its models again with --reuse-models"
        )
    given = {"annotator": args.annotator, "scorer": args.scorer, "split": args.split, "heldout": args.pairs}
    if clash := set(overrides) & {*given, "out", "seed"}:
        ap.error(f"--set {', '.join(sorted(clash))}: use the command's own options")
    cfg = DemoConfig(out=str(work / "stage1"), **given, **overrides)
    seeded = {
        seed: cfg.model_copy(update={"seed": seed, "out": str(work / f"seed-{seed}")}) for seed in args.seeds
    }
    if args.reuse_models:
        missing = [f for c in seeded.values() for f in trained_folders(c).values() if not Path(f).is_dir()]
        if missing:
            ap.error(f"--reuse-models: no trained model at {missing[0]} ({len(missing)} missing)")
    t0 = time.monotonic()
    stage1 = run_stage1(cfg)
    pairs = split_pairs(args.split, args.pairs)
    annotator = evaluate({"annotator": cfg.annotator}, pairs, cfg.scorer)["annotator"]
    ranking = scorer_ranking(cfg.scorer, pairs)
    runs: dict[str, list[dict]] = {"annotator": [], **{name: [] for name in TRAINED}}
    tables, seconds = {}, {"stage1_and_annotator": round(time.monotonic() - t0, 1)}
    for seed in args.seeds:
        t = time.monotonic()
        models = trained_folders(seeded[seed]) if args.reuse_models else post_train(seeded[seed], stage1)[0]
        table = evaluate(models, pairs, cfg.scorer)
        runs["annotator"].append(annotator["per_pair"])
        for name in TRAINED:
            runs[name].append(table[name]["per_pair"])
        tables[str(seed)] = {
            name: {k: v for k, v in s.items() if k not in ("per_pair", "examples")}
            for name, s in table.items()
        }
        seconds[f"seed {seed}"] = round(time.monotonic() - t, 1)
        print(f"seed {seed}: {seconds[f'seed {seed}']} s", flush=True)
    study = {
        "config": {
            "seeds": args.seeds,
            "split": args.split,
            "pairs": args.pairs,
            "reused_models": args.reuse_models,
            "demo": cfg.model_dump(exclude={"out"}),
        },
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "stage1_counts": stage1.counts,
        "stage1_value": stage1.value,
        "filter": stage1.filter,
        "scorer_ranking": ranking,
        "annotator": {k: v for k, v in annotator.items() if k not in ("per_pair", "examples")},
        "per_seed": tables,
        **summarize_study(runs),
        "orientation_by_kind": orientation_by_kind(runs, pairs),
        "per_pair_grades": {
            name: ["".join(GRADE_LETTERS[g] for g in r["grade"]) for r in per_seed]
            for name, per_seed in runs.items()
        },
        "seconds": seconds,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(study, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(study))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
