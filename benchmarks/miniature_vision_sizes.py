"""Can the miniature world model's vision tower learn a triangle's heading, and at what size?

    python benchmarks/miniature_vision_sizes.py --out benchmarks/results/miniature/vision_sizes.json

A fresh tower with the committed world model's vision config (4 blocks, width 128, 16-px patches merged
2×2) and a linear head on its merged tokens learns, from single images, which way a triangle points (one
triangle and one distractor circle on the world's 128-px canvas). Each setting trains on fresh images
and is scored on the same 400 held-out ones every `--every` steps:
- the world's triangle radii (10 and 15 px) at the renders' 128 px;
- bigger triangles (20 and 24 px) at 128 px: a re-rendered world;
- the world's radii read upscaled to 256×256 (`RetrainConfig.image_pixels` = 65,536).
It isolates the vision side of issue #17's misses on rotations (docs/miniature.md) from the rest of the
model; a setting that stays at chance (0.25) is one this tower does not learn at that size.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from editcaption.demo.world import BACKGROUND, COLOURS, HEADINGS, SIZE, _triangle

WORLD = "editcaption/data/miniature/world"
SETTINGS = {  # name: (triangle radii, pixels the processor scales each image to)
    "world_radii_128px": ((10, 15), 128 * 128),
    "bigger_radii_128px": ((20, 24), 128 * 128),
    "world_radii_upscaled_256px": ((10, 15), 256 * 256),
}
DISTRACTOR_RADIUS = 10


def draw(rng: random.Random, radii: tuple[int, ...]) -> tuple[Image.Image, int]:
    """One canvas: a triangle pointing one of the four ways, and a circle where it does not overlap."""
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    pen = ImageDraw.Draw(image)
    r = rng.choice(radii)
    x, y = rng.randint(r, SIZE - r), rng.randint(r, SIZE - r)
    cx, cy = rng.randint(10, SIZE - 10), rng.randint(10, SIZE - 10)
    if abs(cx - x) > r + 12 or abs(cy - y) > r + 12:
        d = DISTRACTOR_RADIUS
        pen.ellipse([cx - d, cy - d, cx + d, cy + d], fill=COLOURS[rng.choice(list(COLOURS))])
    heading = rng.randrange(len(HEADINGS))
    pen.polygon(_triangle(x, y, r, HEADINGS[heading]), fill=COLOURS[rng.choice(list(COLOURS))])
    return image, heading


def learn(radii: tuple[int, ...], pixels: int, steps: int, every: int, batch: int, seed: int) -> dict:
    from transformers import AutoConfig, AutoProcessor
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

    torch.manual_seed(seed)
    rng = random.Random(seed)
    config = AutoConfig.from_pretrained(WORLD).vision_config
    processor = AutoProcessor.from_pretrained(
        WORLD, size={"shortest_edge": pixels, "longest_edge": pixels}
    ).image_processor

    def images(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        drawn = [draw(rng, radii) for _ in range(n)]
        inputs = processor(images=[im for im, _ in drawn], return_tensors="pt")
        return inputs["pixel_values"], inputs["image_grid_thw"], torch.tensor([h for _, h in drawn])

    tower = Qwen3VLVisionModel._from_config(config)
    tokens = pixels // (config.patch_size * config.spatial_merge_size) ** 2
    head = torch.nn.Linear(tokens * config.out_hidden_size, len(HEADINGS))
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=1e-3, betas=(0.9, 0.98))

    def logits(pixel_values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return head(tower(pixel_values, grid_thw=grid).pooler_output.view(grid.shape[0], -1))

    held_out = images(400)
    curve, started = [], time.perf_counter()
    for step in range(1, steps + 1):
        pixel_values, grid, headings = images(batch)
        loss = torch.nn.functional.cross_entropy(logits(pixel_values, grid), headings)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % every == 0:
            with torch.no_grad():
                right = logits(held_out[0], held_out[1]).argmax(1) == held_out[2]
            curve.append({"step": step, "held_out_accuracy": round(right.float().mean().item(), 3)})
            print(f"{radii} {pixels} px²: step {step}, held-out accuracy {curve[-1]['held_out_accuracy']}")
    return {
        "radii": list(radii),
        "pixels": pixels,
        "vision_tokens": tokens,
        "seconds_per_step": round((time.perf_counter() - started) / steps, 3),
        "curve": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/miniature/vision_sizes.json")
    parser.add_argument("--steps", type=int, default=1000, help="steps per 128-px setting")
    parser.add_argument("--steps-256", type=int, default=600, help="steps of the upscaled setting")
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=sorted(SETTINGS), action="append", help="run these settings only")
    args = parser.parse_args()
    report = {"model_config": WORLD, "batch": args.batch, "seed": args.seed, "settings": {}}
    for name, (radii, pixels) in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        steps = args.steps_256 if pixels > 128 * 128 else args.steps
        report["settings"][name] = learn(radii, pixels, steps, args.every, args.batch, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
