"""Pairs laid out as folders: one folder per pair, or twin `source/` and `target/` folders."""

from __future__ import annotations

import json
import posixpath
from functools import partial
from typing import TYPE_CHECKING, Any

from editcaption.io.fs import open_fs, stem, to_uri
from editcaption.io.loading import PairProblem, PairReader, PairRef, fetch, map_pairs, text_fields

if TYPE_CHECKING:
    from ray.data import Dataset

DATASET = "folder"
ROLES = ("source", "target")
META_NAME = "meta.json"
META_FIELDS = {
    "instruction": "reference_instruction",
    "inverse_instruction": "inverse_instruction",
    "category": "category",
}


class FolderPairReader(PairReader):
    """`<root>/<id>/source.*` + `<id>/target.*` (+ optional `<id>/meta.json`), pair_id = `<id>`;
    or `<root>/source/<name>.*` + `<root>/target/<name>.*`, pair_id = `<name>`.

    A pair with one image missing is read as quarantined `missing_file`, never skipped.
    """

    def read(self) -> Dataset:
        fs, root = open_fs(self.uri, self.storage_options)
        if not fs.isdir(root):
            raise ValueError(f"folder pairs: {self.uri} is not a directory")
        twin = all(fs.isdir(posixpath.join(root, role)) for role in ROLES)
        items = _twin_items(fs, root, self.uri) if twin else _per_pair_items(fs, root, self.uri)
        if not items:
            raise ValueError(
                f"folder pairs: no pairs under {self.uri} (expected <id>/source.* + <id>/target.*, "
                "or source/<name>.* + target/<name>.*)"
            )
        items = sorted(items, key=lambda item: item["pair_id"])[: self.limit]
        return map_pairs(items, partial(_load, storage_options=self.storage_options), dataset=DATASET)


def _item(pair_id: str, found: dict[str, list[str]], meta_uri: str | None) -> dict[str, Any]:
    ref = PairRef(dataset=DATASET, pair_id=pair_id)
    for role in ROLES:
        uris = sorted(found.get(role, []))
        if uris:
            setattr(ref, f"{role}_uri", uris[0])
        if len(uris) > 1:
            ref = ref.failed("bad_record", f"{pair_id}: several {role} images: {', '.join(uris)}")
    if ref.problem_reason is None:
        missing = [role for role in ROLES if not found.get(role)]
        if missing:
            ref = ref.failed("missing_file", f"{pair_id}: no {' and no '.join(missing)} image")
    return {**vars(ref), "meta_uri": meta_uri}


def _per_pair_items(fs: Any, root: str, like: str) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, list[str]]] = {}
    metas: dict[str, str] = {}
    for path in fs.find(root, maxdepth=2):
        parent = posixpath.dirname(path)
        if parent.rstrip("/") == root.rstrip("/"):
            continue
        name = posixpath.basename(path)
        role = name.split(".", 1)[0]
        if name == META_NAME:
            metas[parent] = to_uri(fs, path, like)
            groups.setdefault(parent, {})
        elif role in ROLES and "." in name:
            groups.setdefault(parent, {}).setdefault(role, []).append(to_uri(fs, path, like))
    return [_item(posixpath.basename(folder), found, metas.get(folder)) for folder, found in groups.items()]


def _twin_items(fs: Any, root: str, like: str) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, list[str]]] = {}
    for role in ROLES:
        for path in fs.find(posixpath.join(root, role), maxdepth=1):
            if not posixpath.basename(path).startswith("."):
                groups.setdefault(stem(path), {}).setdefault(role, []).append(to_uri(fs, path, like))
    return [_item(name, found, None) for name, found in groups.items()]


def _load(item: dict[str, Any], storage_options: dict[str, Any] | None) -> list[dict[str, Any]]:
    meta_uri = item.pop("meta_uri")
    ref = PairRef(**item)
    if meta_uri is not None and ref.problem_reason is None:
        try:
            meta = json.loads(fetch(meta_uri, META_NAME, storage_options))
            if not isinstance(meta, dict):
                raise PairProblem("bad_record", f"{meta_uri}: not a JSON object")
            for field, value in text_fields(meta, meta_uri, **META_FIELDS).items():
                setattr(ref, field, value)
        except PairProblem as exc:
            ref = ref.failed(exc.reason, exc.detail)
        except ValueError as exc:
            ref = ref.failed("bad_record", f"{meta_uri}: invalid JSON: {exc}")
    return [ref.load(storage_options)]
