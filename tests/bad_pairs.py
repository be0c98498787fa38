"""Builds a corpus of broken pairs, plus good ones that look tricky, each with the reason it must get.

Not a test module: test_images and test_readers build it in a temp folder. The same pairs are
written in the folder layout (`<root>/pairs/<id>/...`) and listed in a JSONL manifest that points
at them, with two manifest-only faults (a malformed line, a record without `target`).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from editcaption.images import ImagePolicy

# Small enough that a 640x480 photo is "too many pixels" without writing a huge file.
POLICY = ImagePolicy(max_pixels=250_000)
MARKER = (220, 20, 20)
FOLDER_ONLY = frozenset({"bad-meta", "two-sources"})
EXIF_ORIENTATION = 0x0112


@dataclasses.dataclass
class BadCorpus:
    folder: Path
    manifest: Path
    expected: dict[str, str | None]
    """Folder-layout pair_id -> expected quarantine reason (None: must be read as a good pair)."""
    manifest_expected: dict[str, str | None]
    """Manifest pair_id -> expected reason, for records that carry a pair_id."""
    manifest_unkeyed: list[str]
    """Expected reasons of manifest lines that have no pair_id (malformed JSON)."""


def scene(size: tuple[int, int] = (256, 192), seed: int = 0) -> Image.Image:
    """An RGB picture with a red marker in its top-left corner, so orientation can be checked."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(60, 200, 3)))
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.ellipse(
        (w // 2, h // 3, w // 2 + w // 5, h // 3 + h // 5),
        fill=tuple(int(v) for v in rng.integers(0, 255, 3)),
    )
    draw.rectangle((0, 0, max(2, w // 8), max(2, h // 8)), fill=MARKER)
    return img


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid PNG header declaring width x height RGB pixels, with almost no data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


def exif_rotated_jpeg(upright: Image.Image, orientation: int = 6) -> bytes:
    """JPEG whose stored pixels are rotated; its EXIF orientation says how to turn them upright."""
    stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(upright.transpose(stored[orientation]), "JPEG", quality=95, exif=exif.tobytes())


def sixteen_bit_png(shift: int) -> bytes:
    """A full-range 16-bit grey ramp (0..65535), rolled by `shift` columns."""
    ramp = np.tile(np.linspace(0, 65535, 256), (192, 1))
    return encode(Image.fromarray(np.roll(ramp, shift, axis=1).astype(np.uint16)))


def _cases() -> dict[str, tuple[dict[str, bytes], str | None]]:
    """pair_id -> ({file name: bytes}, expected reason)."""
    src, tgt = encode(scene(seed=1)), encode(scene(seed=2))
    jpeg = encode(scene(seed=3), "JPEG", quality=90)
    big = encode(scene((640, 480), seed=4), "JPEG", quality=70)
    transparent = scene(seed=6).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    transparent.info["transparency"] = 0
    return {
        "missing-source": ({"target.png": tgt}, "missing_file"),
        "missing-target": ({"source.png": src}, "missing_file"),
        "zero-byte": ({"source.png": b"", "target.png": tgt}, "empty_file"),
        "text-as-png": (
            {"source.png": src, "target.png": b"this is a caption, not a picture\n" * 20},
            "not_an_image",
        ),
        "truncated-png": ({"source.png": src[: len(src) // 2], "target.png": tgt}, "truncated_image"),
        "truncated-jpeg": ({"source.png": src, "target.jpg": jpeg[: len(jpeg) // 2]}, "truncated_image"),
        "decompression-bomb": ({"source.png": png_bomb(), "target.png": tgt}, "decompression_bomb"),
        "too-many-pixels": ({"source.jpg": big, "target.png": tgt}, "too_many_pixels"),
        "too-small": (
            {"source.png": encode(scene((4, 4))), "target.png": encode(scene((4, 4), 5))},
            "too_small",
        ),
        "absurd-aspect": (
            {"source.png": encode(scene((2000, 20))), "target.png": encode(scene((2000, 20), 5))},
            "absurd_aspect",
        ),
        "size-mismatch": ({"source.png": src, "target.png": encode(scene((192, 256), 2))}, "size_mismatch"),
        "identical": (
            {"source.png": src, "target.png": encode(scene(seed=1), compress_level=1)},
            "identical_images",
        ),
        "bad-meta": (
            {"source.png": src, "target.png": tgt, "meta.json": b"{'instruction': oops"},
            "bad_record",
        ),
        "two-sources": ({"source.png": src, "source.jpg": jpeg, "target.png": tgt}, "bad_record"),
        "good-plain": (
            {"source.png": src, "target.png": tgt, "meta.json": b'{"instruction": "Recolour."}'},
            None,
        ),
        "good-16bit": ({"source.png": sixteen_bit_png(0), "target.png": sixteen_bit_png(40)}, None),
        "good-cmyk": ({"source.jpg": encode(scene(seed=1).convert("CMYK"), "JPEG"), "target.png": tgt}, None),
        "good-exif-rotated": ({"source.jpg": exif_rotated_jpeg(scene(seed=1)), "target.png": tgt}, None),
        "good-palette-alpha": ({"source.png": encode(transparent), "target.png": tgt}, None),
    }


def build_bad_corpus(root: Path) -> BadCorpus:
    folder = root / "pairs"
    expected: dict[str, str | None] = {}
    lines = []
    for pair_id, (files, reason) in _cases().items():
        (folder / pair_id).mkdir(parents=True)
        for name, data in files.items():
            (folder / pair_id / name).write_bytes(data)
        expected[pair_id] = reason
        if pair_id in FOLDER_ONLY:
            continue
        record = {"pair_id": pair_id}
        for role in ("source", "target"):
            name = next((n for n in files if n.startswith(role)), f"{role}.png")
            record[role] = f"pairs/{pair_id}/{name}"
        lines.append(json.dumps(record))
    manifest_expected = {pid: expected[pid] for pid in (json.loads(line)["pair_id"] for line in lines)}
    src_b64 = base64.b64encode(encode(scene(seed=7))).decode()
    tgt_b64 = base64.b64encode(encode(scene(seed=8))).decode()
    lines += [
        '{"pair_id": "m-malformed", "source": "pairs/good-plain/source.png"',
        json.dumps({"pair_id": "m-no-target", "source": "pairs/good-plain/source.png"}),
        json.dumps({"pair_id": "m-inline", "source_b64": src_b64, "target_b64": tgt_b64, "instruction": "x"}),
        json.dumps({"pair_id": "m-bad-base64", "source_b64": "***", "target_b64": tgt_b64}),
        json.dumps(
            {
                "pair_id": "m-absolute",
                "source": str(folder / "good-plain" / "source.png"),
                "target": str(folder / "good-plain" / "target.png"),
            }
        ),
    ]
    manifest_expected.update(
        {"m-no-target": "missing_field", "m-inline": None, "m-bad-base64": "bad_record", "m-absolute": None}
    )
    manifest = root / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return BadCorpus(folder, manifest, expected, manifest_expected, manifest_unkeyed=["bad_record"])
