"""What the miniature world model's vision tower holds: linear probes on its merged vision tokens.

    python benchmarks/miniature_probe.py --model editcaption/data/miniature/world \
        --out benchmarks/results/miniature/probe.json

Two questions the scorer's misses on rotations and raised arms raise (docs/miniature.md):
- heading: from the one merged token (32×32 px) that holds a rotated triangle's centre in the target
  image, which of the four ways does the triangle point?
- raised arm: from the token at the figure's shoulders (target, and target − source), is the arm that
  rose on the image's left or right?
Each probe is a softmax regression on standardised features, fitted on the first pairs and scored on
the rest (drawn from `--seed`, a world seed apart from the training streams and the splits). A probe
well above chance but far from 1 means the tower sees the property only partly.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from editcaption.demo.world import HEADINGS, SIZE, WorldPair, make_pair, render

TOKEN_PX = 32  # a merged token: 2×2 patches of 16 px


def token_index(x: float, y: float) -> int:
    per_row = SIZE // TOKEN_PX
    return min(per_row - 1, int(y) // TOKEN_PX) * per_row + min(per_row - 1, int(x) // TOKEN_PX)


def vision_tokens(model_dir: str, images: list) -> torch.Tensor:
    """(images, tokens, width): the merged vision tokens the language model reads."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    inputs = processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        out = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    return torch.stack(out.pooler_output)


def probe(features: torch.Tensor, labels: torch.Tensor, n_fit: int, classes: int) -> dict:
    """Fit on the first `n_fit` rows, score on the rest; accuracy and chance (the commonest class)."""
    mean, std = features[:n_fit].mean(0), features[:n_fit].std(0) + 1e-6
    x = (features - mean) / std
    torch.manual_seed(0)
    linear = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(400):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(linear(x[:n_fit]), labels[:n_fit]).backward()
        optimizer.step()
    with torch.no_grad():
        predicted = linear(x).argmax(1)
    held = labels[n_fit:]
    return {
        "fit_accuracy": round((predicted[:n_fit] == labels[:n_fit]).float().mean().item(), 3),
        "held_out_accuracy": round((predicted[n_fit:] == held).float().mean().item(), 3),
        "chance": round(torch.bincount(held, minlength=classes).max().item() / len(held), 3),
        "fit": n_fit,
        "held_out": len(held),
    }


def heading_probe(model_dir: str, pairs: list[WorldPair], n_fit: int) -> dict:
    targets = [p.target_scene() for p in pairs]
    tokens = vision_tokens(model_dir, [render(s) for s in targets])
    features, labels = [], []
    for i, (pair, scene) in enumerate(zip(pairs, targets, strict=True)):
        thing = next(t for t in scene.things if t.name == pair.facts["subject"])
        features.append(tokens[i, token_index(thing.x, thing.y)])
        labels.append(HEADINGS.index(thing.heading))
    return probe(torch.stack(features), torch.tensor(labels), n_fit, len(HEADINGS))


def arm_probe(model_dir: str, pairs: list[WorldPair], n_fit: int) -> dict:
    sources = vision_tokens(model_dir, [render(p.source_scene()) for p in pairs])
    targets = vision_tokens(model_dir, [render(p.target_scene()) for p in pairs])
    features, labels = [], []
    for i, pair in enumerate(pairs):
        figure = pair.source_scene().figure
        j = token_index(figure.x, figure.y - 5)
        features.append(torch.cat([targets[i, j], targets[i, j] - sources[i, j]]))
        labels.append(int(figure.arm_sign(str(pair.facts["direction"])) > 0))  # 1: the image's right
    return probe(torch.stack(features), torch.tensor(labels), n_fit, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="editcaption/data/miniature/world")
    parser.add_argument("--out", default="benchmarks/results/miniature/probe.json")
    parser.add_argument("--seed", type=int, default=12345, help="world seed of the probe's pairs")
    parser.add_argument("--pairs", type=int, default=1500, help="pairs per probe")
    parser.add_argument("--held-out", type=int, default=400, help="of them, scored and not fitted")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    n_fit = args.pairs - args.held_out
    rotations = [make_pair(rng, "rotate", f"r{i}") for i in range(args.pairs)]
    arms = [make_pair(rng, "raise_arm", f"a{i}") for i in range(args.pairs)]
    report = {
        "model": args.model,
        "seed": args.seed,
        "heading_from_the_triangles_token": heading_probe(args.model, rotations, n_fit),
        "raised_arm_side_from_the_shoulders_token": arm_probe(args.model, arms, n_fit),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
