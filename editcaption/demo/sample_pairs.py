"""Draw a small set of (source, target) edit pairs with exact reference instructions.

They are the bundled examples for readers, the CLI demo and tests: coloured shapes on varied
backgrounds, edited by a move, recolour, addition, removal, resize or horizontal mirror. Every
left/right in an instruction names the viewer as its frame of reference, because that is the
ambiguity the whole system exists to remove.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

WIDTH, HEIGHT = 256, 192
COLOURS = {
    "red": (214, 40, 40),
    "green": (46, 160, 67),
    "blue": (38, 84, 196),
    "yellow": (240, 200, 30),
    "orange": (240, 128, 20),
    "purple": (128, 60, 170),
    "white": (250, 250, 250),
    "black": (25, 25, 25),
}
KINDS = ("circle", "square", "triangle", "diamond", "star")
CATEGORIES = ("move", "recolour", "add", "remove", "resize", "mirror")
# (category, objects in the scene, whether two objects share a name and must be told apart by position)
SCHEDULE: tuple[tuple[str, int, bool], ...] = (
    *(("move", n, False) for n in (1, 2, 2, 3)),
    ("move", 3, True),
    ("move", 2, True),
    *(("recolour", n, False) for n in (1, 2, 3, 3)),
    ("recolour", 3, True),
    *(("add", n, False) for n in (1, 1, 2, 2, 3)),
    *(("remove", n, False) for n in (2, 2, 3, 3)),
    ("remove", 3, True),
    *(("resize", n, False) for n in (1, 2, 2, 3)),
    ("resize", 3, True),
    *(("mirror", n, False) for n in (1, 2, 3, 3)),
)
_GAP = 8
_MARGIN = 4


@dataclasses.dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    x: int
    y: int
    r: int

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclasses.dataclass(frozen=True)
class Edit:
    target: list[Shape]
    instruction: str
    inverse_instruction: str
    mirror: bool = False


def generate_sample_pairs(out_dir: str | Path, seed: int = 0) -> list[str]:
    """Write `<out_dir>/<pair_id>/{source.png,target.png,meta.json}`; returns the pair ids in order.

    The same seed always draws the same pixels and text.
    """
    rng = random.Random(seed)
    out = Path(out_dir)
    ids = []
    for index, (category, count, twins) in enumerate(SCHEDULE):
        pair_id = f"{index:03d}-{category}"
        background = _background(rng)
        source, edit = _draw_edit(rng, category, count, twins, index)
        src_img = _render(background, source)
        tgt_img = ImageOps.mirror(src_img) if edit.mirror else _render(background, edit.target)
        folder = out / pair_id
        folder.mkdir(parents=True, exist_ok=True)
        src_img.save(folder / "source.png", optimize=True)
        tgt_img.save(folder / "target.png", optimize=True)
        meta = {
            "instruction": edit.instruction,
            "inverse_instruction": edit.inverse_instruction,
            "category": category,
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        ids.append(pair_id)
    return ids


def _draw_edit(
    rng: random.Random, category: str, count: int, twins: bool, index: int
) -> tuple[list[Shape], Edit]:
    """A scene and an edit of it; scenes where the edit does not fit are redrawn."""
    make: Callable[..., Edit | None] = _EDITS[category]
    while True:
        scene = _scene(rng, count, twins)
        if scene is None:
            continue
        edit = make(rng, scene, twins, index)
        if edit is not None:
            return scene, edit


def _scene(rng: random.Random, count: int, twins: bool) -> list[Shape] | None:
    names = rng.sample([(k, c) for k in KINDS for c in COLOURS if c not in ("white", "black")], count)
    if twins:
        names[1] = names[0]
    shapes: list[Shape] = []
    for kind, colour in names:
        shape = _place(rng, kind, colour, shapes)
        if shape is None:
            return None
        shapes.append(shape)
    if twins and abs(shapes[0].x - shapes[1].x) < shapes[0].r + shapes[1].r + 2 * _GAP:
        return None
    return shapes


def _place(
    rng: random.Random, kind: str, colour: str, others: list[Shape], r: int | None = None
) -> Shape | None:
    r = r or rng.randint(14, 26)
    for _ in range(50):
        shape = Shape(
            kind,
            colour,
            rng.randint(r + _MARGIN, WIDTH - r - _MARGIN),
            rng.randint(r + _MARGIN, HEIGHT - r - _MARGIN),
            r,
        )
        if _fits(shape, others):
            return shape
    return None


def _fits(shape: Shape, others: list[Shape]) -> bool:
    inside = (
        _MARGIN + shape.r <= shape.x <= WIDTH - _MARGIN - shape.r
        and _MARGIN + shape.r <= shape.y <= HEIGHT - _MARGIN - shape.r
    )
    return inside and all(max(abs(shape.x - o.x), abs(shape.y - o.y)) > shape.r + o.r + _GAP for o in others)


def _label(shape: Shape, scene: list[Shape], twins: bool) -> str:
    """`the red circle`, or with the viewer-relative side when another object has the same name."""
    same = [s for s in scene if s.name == shape.name and s is not shape]
    if not (twins and same):
        return f"the {shape.name}"
    side = "left" if shape.x < same[0].x else "right"
    return f"the {shape.name} on the viewer's {side}"


def _move(rng: random.Random, scene: list[Shape], twins: bool, index: int) -> Edit | None:
    subject = scene[0]
    others = scene[1:]
    direction = ("left", "right", "up", "down")[index % 4] if not twins else rng.choice(("left", "right"))
    span = WIDTH if direction in ("left", "right") else HEIGHT
    distance = rng.randint(span // 5, span // 3)
    dx, dy = {"left": (-distance, 0), "right": (distance, 0), "up": (0, -distance), "down": (0, distance)}[
        direction
    ]
    moved = dataclasses.replace(subject, x=subject.x + dx, y=subject.y + dy)
    if not _fits(moved, others):
        return None
    if twins and (
        (moved.x < others[0].x) != (subject.x < others[0].x)
        or abs(moved.x - others[0].x) < moved.r + others[0].r
    ):
        return None  # "on the viewer's left/right" must tell the twins apart before and after the move
    share = f"about {round(100 * distance / span / 5) * 5}% of the image {'width' if dx else 'height'}"
    words = {
        "left": "to the viewer's left",
        "right": "to the viewer's right",
        "up": "up (toward the top of the image)",
        "down": "down (toward the bottom of the image)",
    }
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}[direction]
    label = _label(subject, scene, twins)
    moved_label = _label(moved, [moved, *others], twins)
    return Edit(
        [moved, *others],
        f"Move {label} {words[direction]} by {share}; everything else stays the same.",
        f"Move {moved_label} {words[opposite]} by {share}; everything else stays the same.",
    )


def _recolour(rng: random.Random, scene: list[Shape], twins: bool, index: int) -> Edit | None:
    subject = scene[0]
    colour = rng.choice([c for c in COLOURS if c not in {s.colour for s in scene}])
    changed = dataclasses.replace(subject, colour=colour)
    keep = "its shape, size and position stay the same"
    return Edit(
        [changed, *scene[1:]],
        f"Change the colour of {_label(subject, scene, twins)} from {subject.colour} to {colour}; {keep}.",
        f"Change the colour of the {changed.name} from {colour} to {subject.colour}; {keep}.",
    )


def _add(rng: random.Random, scene: list[Shape], twins: bool, index: int) -> Edit | None:
    used = {s.name for s in scene}
    kind, colour = rng.choice([(k, c) for k in KINDS for c in COLOURS if f"{c} {k}" not in used])
    added = _place(rng, kind, colour, scene, r=rng.randint(12, 20))
    if added is None:
        return None
    where = _region(added)
    return Edit(
        [*scene, added],
        f"Add a small {added.name} in {where}; leave everything else unchanged.",
        f"Remove the {added.name} from {where} and fill in the background where it was.",
    )


def _remove(rng: random.Random, scene: list[Shape], twins: bool, index: int) -> Edit | None:
    subject = scene[0]
    label = _label(subject, scene, twins)
    where = _region(subject)
    return Edit(
        scene[1:],
        f"Remove {label}, in {where}, and fill in the background where it was.",
        f"Add a {subject.name} in {where}, where the background is now empty.",
    )


def _resize(rng: random.Random, scene: list[Shape], twins: bool, index: int) -> Edit | None:
    subject = scene[0]
    grow = index % 2 == 0
    scaled = dataclasses.replace(subject, r=round(subject.r * (1.6 if grow else 0.55)))
    if scaled.r < 8 or not _fits(scaled, scene[1:]):
        return None
    label = _label(subject, scene, twins)
    bigger, smaller = "about 1.6 times as wide", "about half as wide"
    return Edit(
        [scaled, *scene[1:]],
        f"Make {label} {bigger if grow else smaller}, keeping its centre where it is.",
        f"Make {_label(scaled, [scaled, *scene[1:]], twins)} {smaller if grow else bigger}, keeping its centre where it is.",
    )


def _mirror(rng: random.Random, scene: list[Shape], twins: bool, index: int) -> Edit | None:
    if abs(scene[0].x - WIDTH / 2) < WIDTH / 8:
        return None  # near the centre the flip would barely move it, and the text would overstate it
    side = "left" if scene[0].x < WIDTH / 2 else "right"
    other = "right" if side == "left" else "left"
    text = (
        "Mirror the whole image horizontally (flip it left to right): "
        f"the {scene[0].name}, now on the viewer's {side}, ends up on the viewer's {other}."
    )
    back = (
        "Mirror the whole image horizontally (flip it left to right): "
        f"the {scene[0].name}, now on the viewer's {other}, ends up on the viewer's {side}."
    )
    return Edit(scene, text, back, mirror=True)


_EDITS: dict[str, Callable[..., Edit | None]] = {
    "move": _move,
    "recolour": _recolour,
    "add": _add,
    "remove": _remove,
    "resize": _resize,
    "mirror": _mirror,
}


def _region(shape: Shape) -> str:
    """Where a shape sits, in viewer terms: e.g. `the top-left part of the image (the viewer's left)`."""
    vertical = ("top", "middle", "bottom")[min(2, shape.y * 3 // HEIGHT)]
    horizontal = ("left", "centre", "right")[min(2, shape.x * 3 // WIDTH)]
    if horizontal == "centre":
        return (
            "the centre of the image" if vertical == "middle" else f"the {vertical}-centre part of the image"
        )
    return f"the {vertical}-{horizontal} part of the image (the viewer's {horizontal})"


def _background(rng: random.Random) -> Image.Image:
    """Solid, gradient (either axis) or floor-and-wall; quantised to keep the PNGs small."""
    palette = [
        (236, 228, 210),
        (200, 222, 236),
        (214, 236, 206),
        (232, 214, 228),
        (120, 130, 150),
        (60, 70, 80),
    ]
    a, b = rng.sample(palette, 2)
    style = rng.choice(("solid", "vertical", "horizontal", "floor"))
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    if style == "solid":
        t = np.zeros((HEIGHT, WIDTH))
    elif style == "vertical":
        t = np.floor(ys / HEIGHT * 8) / 7
    elif style == "horizontal":
        t = np.floor(xs / WIDTH * 8) / 7
    else:
        t = (ys > rng.randint(HEIGHT // 2, 3 * HEIGHT // 4)).astype(float)
    pixels = np.asarray(a, float) * (1 - t[..., None]) + np.asarray(b, float) * t[..., None]
    return Image.fromarray(pixels.round().astype(np.uint8), mode="RGB")


def _render(background: Image.Image, shapes: list[Shape]) -> Image.Image:
    img = background.copy()
    draw = ImageDraw.Draw(img)
    for s in shapes:
        fill = COLOURS[s.colour]
        outline = (20, 20, 20) if s.colour != "black" else (240, 240, 240)
        box = (s.x - s.r, s.y - s.r, s.x + s.r, s.y + s.r)
        if s.kind == "circle":
            draw.ellipse(box, fill=fill, outline=outline, width=2)
        elif s.kind == "square":
            draw.rectangle(box, fill=fill, outline=outline, width=2)
        else:
            draw.polygon(_polygon(s), fill=fill, outline=outline, width=2)
    return img


def _polygon(s: Shape) -> list[tuple[float, float]]:
    if s.kind == "triangle":
        return [(s.x, s.y - s.r), (s.x + s.r, s.y + s.r), (s.x - s.r, s.y + s.r)]
    if s.kind == "diamond":
        return [(s.x, s.y - s.r), (s.x + s.r, s.y), (s.x, s.y + s.r), (s.x - s.r, s.y)]
    points = []
    for i in range(10):
        radius = s.r if i % 2 == 0 else s.r * 0.45
        angle = np.pi / 2 + i * np.pi / 5
        points.append((s.x + radius * np.cos(angle), s.y - radius * np.sin(angle)))
    return points
