"""The miniature world: seeded (source, target, instruction) triples with exact ground truth.

A scene is a stick figure (facing the viewer or away, so its own left is the viewer's right or left)
and a few coloured shapes on a 128×128 canvas. An edit changes the scene (or moves the camera) and
the canonical instruction says so with an explicit frame of reference. Every pair also carries
labelled wrong variants — the mistakes the paper counts: orientation flips, viewpoint errors (frame
dropped or swapped, camera described as object motion) and missing or wrong attributes — so a
captioner's output can be graded exactly and preference pairs need no human.

Sentences come from a few templates over a small vocabulary, so a tiny model can learn them.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw
from pydantic import BaseModel, Field

from editcaption.checks.directions import swap_directions
from editcaption.schema import ErrorType, Severity

SIZE = 128
BACKGROUND = (235, 235, 235)
COLOURS = {"red": (220, 30, 30), "green": (30, 160, 40), "blue": (30, 60, 220), "yellow": (235, 190, 20)}
SHAPES = ("circle", "square", "triangle")
RADII = {"small": 10, "big": 15}  # a shape spans 1–2 patches of 16 px: smaller ones were not learned
# A triangle is drawn bigger: at the radii above a fresh vision tower never learned which way one points,
# at these it did within 300 steps (benchmarks/miniature_vision_sizes.py, docs/miniature.md).
TRIANGLE_RADII = {"small": 18, "big": 26}
HEADINGS = ("up", "right", "down", "left")  # a triangle's apex, clockwise order
EDIT_KINDS = (
    "move",
    "recolour",
    "resize",
    "add",
    "remove",
    "swap",
    "rotate",
    "raise_arm",
    "camera_pan",
    "camera_zoom",
)
EditKind = Literal[
    "move", "recolour", "resize", "add", "remove", "swap", "rotate", "raise_arm", "camera_pan", "camera_zoom"
]
# Disjoint world seeds. The models are trained on streams drawn from seeds below 1_000_000
# (`retrain.py`), the demo's annotator drafts its pool from `pool`, every setting is chosen on `dev`,
# and claims are reported on `test`, which never chooses anything (docs/miniature.md).
SPLIT_SEEDS = {"pool": 1_000_003, "dev": 2_000_003, "test": 3_000_003}
Split = Literal["pool", "dev", "test"]
PAN_SHIFT = 24  # pixels the scene shifts in the image when the camera pans
ZOOM_IN = 1.5
_SKIN, _HAIR, _INK = (240, 200, 160), (80, 50, 25), (40, 40, 40)
_GAP = 4


@dataclasses.dataclass(frozen=True)
class Arms:
    """How the figure's arms are drawn: hands `reach` px beside the body, `raised_y` or `down_y` px from
    the figure's centre, lines `width` px wide."""

    reach: int
    raised_y: int
    down_y: int
    width: int


# Thick and long enough that a raised arm changes more than a patch's corner: with the arms first drawn,
# Arms(9, -17, 3, 2), a fresh vision tower never learned which side was raised; with these it did within
# 200 steps (benchmarks/miniature_vision_sizes.py).
ARMS = Arms(reach=12, raised_y=-24, down_y=4, width=4)


@dataclasses.dataclass(frozen=True)
class Thing:
    """A coloured shape; `heading` is where a triangle's apex points."""

    shape: str
    colour: str
    size: str
    x: int
    y: int
    heading: str = "up"

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def radius(self) -> int:
        return (TRIANGLE_RADII if self.shape == "triangle" else RADII)[self.size]


@dataclasses.dataclass(frozen=True)
class Figure:
    """A stick figure; `raised` holds its own arms (left/right) that point up."""

    x: int
    y: int
    facing: Literal["viewer", "away"]
    raised: frozenset[str] = frozenset()

    def arm_sign(self, own_side: str) -> int:
        """+1 when the figure's own `own_side` arm is on the viewer's right, -1 when on the left."""
        toward_viewer_right = (own_side == "left") == (self.facing == "viewer")
        return 1 if toward_viewer_right else -1


@dataclasses.dataclass(frozen=True)
class Scene:
    figure: Figure
    things: tuple[Thing, ...]
    zoom: float = 1.0  # camera magnification about the image centre


class Variant(BaseModel):
    """A wrong instruction for a pair, with the error it makes."""

    text: str
    error_type: ErrorType
    severity: Severity
    kind: str = Field(description="Which rule wrote it, e.g. `direction_flipped`, `frame_dropped`.")


class WorldPair(BaseModel):
    """One generated pair: both scenes, the canonical instruction and its labelled wrong variants."""

    pair_id: str
    kind: EditKind
    instruction: str
    variants: list[Variant]
    facts: dict[str, str | int | float] = Field(
        description="What changed, for checks against pixels: subject, direction, shift, zoom."
    )
    source: dict
    target: dict

    def source_scene(self) -> Scene:
        return scene_from_dict(self.source)

    def target_scene(self) -> Scene:
        return scene_from_dict(self.target)


# ---------------------------------------------------------------- drawing


def render(scene: Scene) -> Image.Image:
    """Draw `scene` as the camera sees it: coordinates and sizes scaled by `zoom` about the centre."""
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    z = scene.zoom

    def at(x: float, y: float) -> tuple[float, float]:
        c = SIZE / 2
        return c + (x - c) * z, c + (y - c) * z

    for thing in scene.things:
        cx, cy = at(thing.x, thing.y)
        r = thing.radius * z
        fill = COLOURS[thing.colour]
        if thing.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif thing.shape == "square":
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(_triangle(cx, cy, r, thing.heading), fill=fill)
    draw_figure(draw, scene.figure, at, z)
    return image


def _triangle(cx: float, cy: float, r: float, heading: str) -> list[tuple[float, float]]:
    apex = {"up": (0, -1), "right": (1, 0), "down": (0, 1), "left": (-1, 0)}[heading]
    ax, ay = apex
    base = [(-ay, ax), (ay, -ax)]  # perpendicular to the apex direction
    return [(cx + ax * r, cy + ay * r)] + [(cx - ax * r + bx * r, cy - ay * r + by * r) for bx, by in base]


def draw_figure(draw: ImageDraw.ImageDraw, fig: Figure, at, z: float, arms: Arms = ARMS) -> None:
    """Head (skin with eyes facing the viewer, hair facing away), body, legs, and two arms; `at` maps
    scene to image coordinates, `z` is the camera's zoom."""
    w = max(1, round(2 * z))
    x, y = fig.x, fig.y
    for sign in (-1, 1):
        draw.line([at(x, y + 6), at(x + 6 * sign, y + 17)], fill=_INK, width=w)
    draw.line([at(x, y - 8), at(x, y + 6)], fill=_INK, width=w + 1)
    for side in ("left", "right"):
        sign = fig.arm_sign(side)
        hand = (x + arms.reach * sign, y + (arms.raised_y if side in fig.raised else arms.down_y))
        draw.line([at(x, y - 5), at(*hand)], fill=_INK, width=max(1, round(arms.width * z)))
    hx, hy = at(x, y - 13)
    r = 5 * z
    draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=_SKIN if fig.facing == "viewer" else _HAIR)
    if fig.facing == "viewer":
        for sign in (-1, 1):
            ex = hx + 2 * z * sign
            draw.point([(ex, hy - z)], fill=_INK)


def figure_box(fig: Figure) -> tuple[int, int, int, int]:
    """Scene-space box (x0, y0, x1, y1) the figure may occupy, raised arms included."""
    half = ARMS.width // 2 + 1
    return fig.x - ARMS.reach - half, fig.y + ARMS.raised_y - half, fig.x + ARMS.reach + half, fig.y + 18


def thing_box(thing: Thing) -> tuple[int, int, int, int]:
    r = thing.radius
    return thing.x - r, thing.y - r, thing.x + r, thing.y + r


# ---------------------------------------------------------------- scenes


def _boxes(scene: Scene, skip: Thing | None = None) -> list[tuple[int, int, int, int]]:
    return [figure_box(scene.figure)] + [thing_box(t) for t in scene.things if t is not skip]


def _inside(box: tuple[int, int, int, int], margin: int = 2) -> bool:
    return box[0] >= margin and box[1] >= margin and box[2] < SIZE - margin and box[3] < SIZE - margin


def _apart(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]]) -> bool:
    return all(
        box[2] + _GAP < o[0] or o[2] + _GAP < box[0] or box[3] + _GAP < o[1] or o[3] + _GAP < box[1]
        for o in others
    )


def _fits(thing: Thing, scene: Scene, skip: Thing | None = None) -> bool:
    box = thing_box(thing)
    return _inside(box) and _apart(box, _boxes(scene, skip))


def _random_thing(rng: random.Random, scene: Scene, taken: set[str]) -> Thing | None:
    names = [(s, c) for s in SHAPES for c in COLOURS if f"{c} {s}" not in taken]
    shape, colour = rng.choice(names)
    size = rng.choice(tuple(RADII))
    heading = rng.choice(HEADINGS) if shape == "triangle" else "up"
    r = Thing(shape, colour, size, 0, 0).radius
    for _ in range(40):
        thing = Thing(
            shape, colour, size, rng.randint(r + 3, SIZE - r - 4), rng.randint(r + 3, SIZE - r - 4), heading
        )
        if _fits(thing, scene):
            return thing
    return None


def random_scene(rng: random.Random, n_things: int) -> Scene:
    """A figure and `n_things` shapes with distinct names (colour + shape), none overlapping."""
    while True:
        figure = Figure(
            rng.randint(ARMS.reach + 5, SIZE - ARMS.reach - 6),
            rng.randint(5 - ARMS.raised_y, SIZE - 21),
            rng.choice(("viewer", "away")),
        )
        scene = Scene(figure, ())
        for _ in range(n_things):
            thing = _random_thing(rng, scene, {t.name for t in scene.things})
            if thing is None:
                break
            scene = dataclasses.replace(scene, things=(*scene.things, thing))
        if len(scene.things) == n_things:
            return scene


def scene_to_dict(scene: Scene) -> dict:
    data = dataclasses.asdict(scene)
    data["figure"]["raised"] = sorted(scene.figure.raised)
    data["things"] = list(data["things"])
    return data


def scene_from_dict(data: dict) -> Scene:
    fig = dict(data["figure"])
    fig["raised"] = frozenset(fig["raised"])
    return Scene(Figure(**fig), tuple(Thing(**t) for t in data["things"]), data["zoom"])


def mirror_scene(scene: Scene) -> Scene:
    """The scene seen in a horizontal mirror: x reflected, triangles' left/right headings swapped,
    and the figure's raised arms renamed (its own left arm now shows where its own right one was)."""
    flip = {"left": "right", "right": "left"}
    fig = scene.figure
    figure = dataclasses.replace(fig, x=SIZE - 1 - fig.x, raised=frozenset(flip[s] for s in fig.raised))
    things = tuple(
        dataclasses.replace(t, x=SIZE - 1 - t.x, heading=flip.get(t.heading, t.heading)) for t in scene.things
    )
    return Scene(figure, things, scene.zoom)


# ---------------------------------------------------------------- edits

_OTHER_SIDE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def _other_colour(rng: random.Random, shape: str, avoid: set[str], scene: Scene) -> str | None:
    """A colour that names no shape of this kind in the scene (so the variant is surely wrong); None
    when every colour of that shape is already there."""
    free = [c for c in COLOURS if c not in avoid | {t.colour for t in scene.things if t.shape == shape}]
    return rng.choice(free) if free else None


def _v(text: str, error_type: ErrorType, severity: Severity, kind: str) -> Variant:
    return Variant(text=text, error_type=error_type, severity=severity, kind=kind)


def _edit_move(rng: random.Random, scene: Scene) -> tuple[Scene, str, list[Variant], dict] | None:
    thing = rng.choice(scene.things)
    direction = rng.choice(("left", "right", "up", "down"))
    distance = rng.randint(28, 44)
    dx, dy = {"left": (-distance, 0), "right": (distance, 0), "up": (0, -distance), "down": (0, distance)}[
        direction
    ]
    moved = dataclasses.replace(thing, x=thing.x + dx, y=thing.y + dy)
    if not _fits(moved, scene, skip=thing):
        return None
    target = dataclasses.replace(scene, things=tuple(moved if t is thing else t for t in scene.things))
    where = f"to the viewer's {direction}" if direction in ("left", "right") else direction
    text = f"Move the {thing.name} {where}."
    wrong_colour = _other_colour(rng, thing.shape, {thing.colour}, scene)
    flipped = (
        swap_directions(text)
        if direction in ("left", "right")
        else f"Move the {thing.name} {_OTHER_SIDE[direction]}."
    )
    variants = [
        _v(flipped, "orientation", "critical", "direction_flipped"),
        _v(f"Move the {wrong_colour} {thing.shape} {where}.", "attribute", "major", "colour_replaced"),
        _v(f"Move the {thing.shape} {where}.", "attribute", "minor", "colour_removed"),
    ]
    if direction in ("left", "right"):
        variants.append(
            _v(f"Move the {thing.name} to the {direction}.", "viewpoint", "major", "frame_dropped")
        )
    return target, text, variants, {"subject": thing.name, "direction": direction, "dx": dx, "dy": dy}


def _edit_recolour(rng: random.Random, scene: Scene):
    thing = rng.choice(scene.things)
    taken = {t.name for t in scene.things}
    choices = [c for c in COLOURS if c != thing.colour and f"{c} {thing.shape}" not in taken]
    if len(choices) < 2:
        return None
    new, wrong = rng.sample(choices, 2)
    target = dataclasses.replace(
        scene, things=tuple(dataclasses.replace(t, colour=new) if t is thing else t for t in scene.things)
    )
    text = f"Change the {thing.name} to {new}."
    variants = [
        _v(f"Change the {thing.name} to {wrong}.", "attribute", "major", "colour_replaced"),
        _v(f"Change the colour of the {thing.name}.", "attribute", "major", "colour_removed"),
    ]
    return target, text, variants, {"subject": thing.name, "colour": new}


def _edit_resize(rng: random.Random, scene: Scene):
    thing = rng.choice(scene.things)
    new = "big" if thing.size == "small" else "small"
    resized = dataclasses.replace(thing, size=new)
    if not _fits(resized, scene, skip=thing):
        return None
    target = dataclasses.replace(scene, things=tuple(resized if t is thing else t for t in scene.things))
    word, wrong = ("bigger", "smaller") if new == "big" else ("smaller", "bigger")
    text = f"Make the {thing.name} {word}."
    variants = [
        _v(f"Make the {thing.name} {wrong}.", "attribute", "major", "size_replaced"),
        _v(f"Resize the {thing.name}.", "attribute", "minor", "size_removed"),
    ]
    return target, text, variants, {"subject": thing.name, "size": new}


def _edit_add(rng: random.Random, scene: Scene):
    thing = _random_thing(rng, scene, {t.name for t in scene.things})
    if thing is None or abs(thing.x - SIZE / 2) < 12:
        return None  # the side must be clear to say
    side = "left" if thing.x < SIZE / 2 else "right"
    target = dataclasses.replace(scene, things=(*scene.things, thing))
    text = f"Add a {thing.size} {thing.name} on the viewer's {side}."
    wrong_colour = _other_colour(rng, thing.shape, {thing.colour}, target)
    if wrong_colour is None:
        return None  # four shapes of one kind in four colours: no wrong colour left to name
    variants = [
        _v(swap_directions(text), "orientation", "critical", "direction_flipped"),
        _v(f"Add a {thing.size} {thing.name} on the {side}.", "viewpoint", "major", "frame_dropped"),
        _v(
            f"Add a {thing.size} {wrong_colour} {thing.shape} on the viewer's {side}.",
            "attribute",
            "major",
            "colour_replaced",
        ),
        _v(f"Add a {thing.name} on the viewer's {side}.", "attribute", "minor", "size_removed"),
    ]
    return target, text, variants, {"subject": thing.name, "direction": side}


def _edit_remove(rng: random.Random, scene: Scene):
    thing = rng.choice(scene.things)
    target = dataclasses.replace(scene, things=tuple(t for t in scene.things if t is not thing))
    text = f"Remove the {thing.name}."
    wrong_colour = _other_colour(rng, thing.shape, {thing.colour}, scene)
    variants = [_v(f"Remove the {wrong_colour} {thing.shape}.", "attribute", "major", "colour_replaced")]
    return target, text, variants, {"subject": thing.name}


def _edit_swap(rng: random.Random, scene: Scene):
    if len(scene.things) < 2:
        return None
    a, b = sorted(rng.sample(scene.things, 2), key=lambda t: t.x)
    if b.x - a.x < 8:
        return None
    na = dataclasses.replace(a, x=b.x, y=b.y)
    nb = dataclasses.replace(b, x=a.x, y=a.y)
    rest = Scene(scene.figure, tuple(t for t in scene.things if t is not a and t is not b))
    if not (_fits(na, rest) and _fits(nb, Scene(rest.figure, (*rest.things, na)))):
        return None
    target = dataclasses.replace(
        scene, things=tuple(na if t is a else nb if t is b else t for t in scene.things)
    )
    text = f"Swap the {a.name} and the {b.name}."
    wrong = _other_colour(rng, b.shape, {b.colour}, scene)
    variants = [
        _v(f"Swap the {a.name} and the {wrong} {b.shape}.", "attribute", "major", "colour_replaced"),
        _v(f"Move the {a.name} to the viewer's right.", "other", "major", "half_described"),
    ]
    return target, text, variants, {"subject": a.name, "other": b.name}


def _edit_rotate(rng: random.Random, scene: Scene):
    triangles = [t for t in scene.things if t.shape == "triangle"]
    if not triangles:
        return None
    thing = rng.choice(triangles)
    turn = rng.choice(("clockwise", "counter-clockwise"))
    step = 1 if turn == "clockwise" else -1
    heading = HEADINGS[(HEADINGS.index(thing.heading) + step) % 4]
    rotated = dataclasses.replace(thing, heading=heading)
    target = dataclasses.replace(scene, things=tuple(rotated if t is thing else t for t in scene.things))
    text = f"Rotate the {thing.name} {turn}."
    variants = [
        _v(swap_directions(text), "orientation", "critical", "direction_flipped"),
        _v(f"Rotate the {thing.name}.", "orientation", "major", "direction_removed"),
    ]
    return target, text, variants, {"subject": thing.name, "direction": turn}


def _edit_raise_arm(rng: random.Random, scene: Scene):
    fig = scene.figure
    side = rng.choice(("left", "right"))
    if side in fig.raised:
        return None
    target = dataclasses.replace(scene, figure=dataclasses.replace(fig, raised=fig.raised | {side}))
    text = f"Make the figure raise its own {side} arm."
    variants = [
        _v(swap_directions(text), "orientation", "critical", "direction_flipped"),
        _v(f"Make the figure raise the {side} arm.", "viewpoint", "major", "frame_dropped"),
    ]
    if fig.facing == "viewer":  # seen from the front, the viewer's side is the figure's other side
        variants.append(
            _v(
                f"Make the figure raise the arm on the viewer's {side}.",
                "viewpoint",
                "major",
                "frame_swapped",
            )
        )
    return target, text, variants, {"subject": "figure", "direction": side, "facing": fig.facing}


def _shifted(scene: Scene, dx: int) -> Scene:
    fig = dataclasses.replace(scene.figure, x=scene.figure.x + dx)
    return Scene(fig, tuple(dataclasses.replace(t, x=t.x + dx) for t in scene.things), scene.zoom)


def _edit_camera_pan(rng: random.Random, scene: Scene):
    side = rng.choice(("left", "right"))
    dx = PAN_SHIFT if side == "left" else -PAN_SHIFT  # the camera turns left: the scene slides right
    target = _shifted(scene, dx)
    if not all(_inside(b, 1) for b in _boxes(target)):
        return None
    text = f"Pan the camera to the viewer's {side}."
    seen = _OTHER_SIDE[side]
    variants = [
        _v(swap_directions(text), "orientation", "critical", "direction_flipped"),
        _v(f"Move everything to the viewer's {seen}.", "viewpoint", "major", "camera_as_object"),
        _v(f"Pan the camera to the {side}.", "viewpoint", "minor", "frame_dropped"),
    ]
    return target, text, variants, {"subject": "camera", "direction": side, "dx": dx}


def _edit_camera_zoom(rng: random.Random, scene: Scene):
    way = rng.choice(("in", "out"))
    zoom = ZOOM_IN if way == "in" else 1 / ZOOM_IN
    if way == "in":
        c = SIZE / 2
        boxes = [tuple(c + (v - c) * zoom for v in b) for b in _boxes(scene)]
        if not all(_inside(b, 1) for b in boxes):
            return None
    target = dataclasses.replace(scene, zoom=zoom)
    text = f"Zoom the camera {way}."
    bigger = "bigger" if way == "in" else "smaller"
    variants = [
        _v(f"Zoom the camera {'out' if way == 'in' else 'in'}.", "other", "critical", "zoom_reversed"),
        _v(f"Make everything {bigger}.", "viewpoint", "major", "camera_as_object"),
    ]
    return target, text, variants, {"subject": "camera", "direction": way, "zoom": zoom}


_EDITS = {
    "move": _edit_move,
    "recolour": _edit_recolour,
    "resize": _edit_resize,
    "add": _edit_add,
    "remove": _edit_remove,
    "swap": _edit_swap,
    "rotate": _edit_rotate,
    "raise_arm": _edit_raise_arm,
    "camera_pan": _edit_camera_pan,
    "camera_zoom": _edit_camera_zoom,
}


class WorldConfig(BaseModel):
    """What `generate` draws."""

    seed: int = Field(0, description="Same seed, same pairs (pixels and text).")
    kinds: list[EditKind] = Field(
        default_factory=lambda: list(EDIT_KINDS), description="Edit kinds, drawn round-robin in this order."
    )
    min_things: int = Field(
        1, ge=1, le=3, description="Fewest shapes in a source scene (besides the figure)."
    )
    max_things: int = Field(3, ge=1, le=3, description="Most shapes in a source scene.")


def make_pair(rng: random.Random, kind: str, pair_id: str, config: WorldConfig | None = None) -> WorldPair:
    """Draw scenes until the edit `kind` fits one, and return the pair with its ground truth."""
    config = config or WorldConfig()
    low = max(config.min_things, 2 if kind == "swap" else 1)
    high = max(low, config.max_things)
    edit = _EDITS[kind]
    while True:
        scene = random_scene(rng, rng.randint(low, high))
        if kind == "rotate" and not any(t.shape == "triangle" for t in scene.things):
            continue
        made = edit(rng, scene)
        if made is None:
            continue
        target, text, variants, facts = made
        return WorldPair(
            pair_id=pair_id,
            kind=kind,
            instruction=text,
            variants=_distinct(text, variants),
            facts=facts,
            source=scene_to_dict(scene),
            target=scene_to_dict(target),
        )


def _distinct(text: str, variants: list[Variant]) -> list[Variant]:
    seen, out = {text}, []
    for v in variants:
        if v.text not in seen:
            seen.add(v.text)
            out.append(v)
    return out


def generate(n: int, config: WorldConfig | None = None, prefix: str = "world") -> Iterator[WorldPair]:
    """`n` pairs, edit kinds round-robin; pair ids `<prefix>-<index>-<kind>`."""
    config = config or WorldConfig()
    rng = random.Random(config.seed)
    for i in range(n):
        kind = config.kinds[i % len(config.kinds)]
        yield make_pair(rng, kind, f"{prefix}-{i:05d}-{kind}", config)


def _grid_cell(x: float, y: float) -> str:
    """Where a point is in a 3×3 grid of the image, in the viewer's frame: "top left" … "bottom right"."""
    column = "left" if x < SIZE / 3 else "right" if x >= 2 * SIZE / 3 else "centre"
    row = "top" if y < SIZE / 3 else "bottom" if y >= 2 * SIZE / 3 else "middle"
    return f"{row} {column}"


def describe(scene: Scene) -> str:
    """What one image shows, a sentence per object: the figure (facing, raised arms), then the shapes
    from the viewer's left to right (size, colour, shape, a triangle's heading), each with its cell of a
    3×3 grid as rendered. The models learn to read single images from these before they compare two."""
    c = SIZE / 2

    def cell(x: float, y: float) -> str:
        return _grid_cell(c + (x - c) * scene.zoom, c + (y - c) * scene.zoom)

    fig = scene.figure
    arms = sorted(fig.raised)
    raised = f" with its own {' and '.join(arms)} arm{'s' if len(arms) > 1 else ''} raised" if arms else ""
    facing = "the viewer" if fig.facing == "viewer" else "away"
    parts = [f"A figure facing {facing} at the {cell(fig.x, fig.y)}{raised}."]
    for thing in sorted(scene.things, key=lambda t: (t.x, t.y)):
        heading = f" pointing {thing.heading}" if thing.shape == "triangle" else ""
        parts.append(f"A {thing.size} {thing.name}{heading} at the {cell(thing.x, thing.y)}.")
    return " ".join(parts)


def split_pairs(split: Split, n: int) -> list[WorldPair]:
    """The first `n` pairs of a named split (`SPLIT_SEEDS`); ids `<split>-<index>-<kind>`."""
    return list(generate(n, WorldConfig(seed=SPLIT_SEEDS[split]), prefix=split))


def images(pair: WorldPair) -> tuple[Image.Image, Image.Image]:
    return render(pair.source_scene()), render(pair.target_scene())


def mirrored(pair: WorldPair) -> WorldPair:
    """The pair seen in a mirror: both scenes reflected; the instruction is regenerated from the scenes'
    facts, which for every kind equals the original with left/right (and turn senses) swapped."""
    facts = dict(pair.facts)
    flips = {
        "left": "right",
        "right": "left",
        "clockwise": "counter-clockwise",
        "counter-clockwise": "clockwise",
    }
    if pair.kind in ("move", "add", "rotate", "raise_arm", "camera_pan"):
        facts["direction"] = flips.get(str(facts["direction"]), facts["direction"])
    if "dx" in facts:
        facts["dx"] = -int(facts["dx"])
    return pair.model_copy(
        update={
            "pair_id": pair.pair_id + "-mirrored",
            "instruction": swap_directions(pair.instruction),
            "variants": [v.model_copy(update={"text": swap_directions(v.text)}) for v in pair.variants],
            "facts": facts,
            "source": scene_to_dict(mirror_scene(pair.source_scene())),
            "target": scene_to_dict(mirror_scene(pair.target_scene())),
        }
    )


def write_pairs(pairs: list[WorldPair], out_dir: str | Path) -> Path:
    """`<out>/<pair_id>/{source.png,target.png,meta.json}` — the folder layout `editcaption.io` reads,
    with the instruction as the reference and the ground truth (variants, facts, scenes) beside it."""
    out = Path(out_dir)
    for pair in pairs:
        folder = out / pair.pair_id
        folder.mkdir(parents=True, exist_ok=True)
        source, target = images(pair)
        source.save(folder / "source.png", optimize=True)
        target.save(folder / "target.png", optimize=True)
        meta = {
            "instruction": pair.instruction,
            "category": pair.kind,
            **pair.model_dump(exclude={"pair_id"}),
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out


def read_pairs(folder: str | Path) -> list[WorldPair]:
    """The pairs `write_pairs` wrote, in pair-id order."""
    pairs = []
    for meta_path in sorted(Path(folder).glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        meta.pop("category")
        pairs.append(WorldPair(pair_id=meta_path.parent.name, **meta))
    return pairs
