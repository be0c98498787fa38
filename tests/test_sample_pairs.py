"""The bundled sample pairs: enough of them, every edit category, and exactly reproducible."""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image, ImageOps

from editcaption.demo.sample_pairs import CATEGORIES, HEIGHT, WIDTH, generate_sample_pairs
from editcaption.images import ImagePolicy, check_pair


def pixels(path: Path) -> bytes:
    with Image.open(path) as img:
        return img.convert("RGB").tobytes()


def test_committed_pairs_are_complete(sample_pairs_dir: Path) -> None:
    folders = sorted(p for p in sample_pairs_dir.iterdir() if p.is_dir())
    assert len(folders) >= 24
    categories = set()
    for folder in folders:
        meta = json.loads((folder / "meta.json").read_text())
        categories.add(meta["category"])
        assert meta["category"] in CATEGORIES and meta["instruction"] and meta["inverse_instruction"]
        for text in (meta["instruction"], meta["inverse_instruction"]):
            if re.search(r"\b(?:left|right)\b", text):
                assert "viewer's" in text, text  # left/right always names its frame of reference
        source, target = (folder / "source.png").read_bytes(), (folder / "target.png").read_bytes()
        src, tgt = check_pair(source, target, ImagePolicy())
        assert src.size == tgt.size == (WIDTH, HEIGHT)
        if meta["category"] == "mirror":
            assert ImageOps.mirror(src).tobytes() == tgt.tobytes()
    assert categories == set(CATEGORIES)


def test_regeneration_matches_committed_pixels(sample_pairs_dir: Path, tmp_path: Path) -> None:
    ids = generate_sample_pairs(tmp_path, seed=0)
    assert ids == sorted(p.name for p in sample_pairs_dir.iterdir() if p.is_dir())
    for pair_id in ids:
        for name in ("source.png", "target.png"):
            assert pixels(tmp_path / pair_id / name) == pixels(sample_pairs_dir / pair_id / name), (
                pair_id,
                name,
            )
        assert (tmp_path / pair_id / "meta.json").read_text() == (
            sample_pairs_dir / pair_id / "meta.json"
        ).read_text()


def test_seed_changes_the_draw(tmp_path: Path) -> None:
    ids = generate_sample_pairs(tmp_path / "a", seed=1)
    assert ids == generate_sample_pairs(tmp_path / "b", seed=1)
    generate_sample_pairs(tmp_path / "c", seed=2)
    same = [
        pixels(tmp_path / "a" / i / "source.png") == pixels(tmp_path / "b" / i / "source.png") for i in ids
    ]
    differ = [
        pixels(tmp_path / "a" / i / "source.png") != pixels(tmp_path / "c" / i / "source.png") for i in ids
    ]
    assert all(same) and all(differ)
