"""WebDataset tar shards: files grouped into samples by key (`<key>.<ext>`), one pair per sample.

Images are `source.*` / `target.*` (or `src.*` / `tgt.*`) extensions of the key; an optional `json`
holds `instruction`, `inverse_instruction`, `category`, or a `txt` holds the instruction. Each shard
is read start to end, streaming, by one Ray task; as in WebDataset, a sample's files are contiguous.
"""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from editcaption.io.fs import open_fs, to_uri
from editcaption.io.loading import PairProblem, PairReader, PairRef, map_pairs, text_fields
from editcaption.io.pairs import quarantined_row
from editcaption.schema import pair_id_for_uris

if TYPE_CHECKING:
    from ray.data import Dataset

DATASET = "webdataset"
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
IMAGE_NAMES = {"source": ("source", "src"), "target": ("target", "tgt")}
META_FIELDS = {
    "instruction": "reference_instruction",
    "inverse_instruction": "inverse_instruction",
    "category": "category",
}
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(\d+)\.\.(\d+)")
_GLOB_CHARS = re.compile(r"[*?\[]")


class WebDatasetPairReader(PairReader):
    """A `.tar` shard, a folder of shards, or a brace (`shard-{000..009}.tar`) or glob pattern of them."""

    def read(self) -> Dataset:
        shards = list_shards(self.uri, self.storage_options)
        if not shards:
            raise ValueError(f"webdataset: no {'/'.join(SHARD_SUFFIXES)} shards at {self.uri}")
        items = [{"shard": shard} for shard in shards]
        ds = map_pairs(
            items, partial(_shard_rows, storage_options=self.storage_options), dataset=DATASET, batch_size=1
        )
        return ds if self.limit is None else ds.limit(self.limit)


def expand_braces(pattern: str) -> list[str]:
    """`a{0..2}b` -> a0b a1b a2b (zero padding kept), `a{x,y}` -> ax ay; nested or repeated braces too."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    numeric = _RANGE.fullmatch(body)
    if numeric:
        low, high = numeric.groups()
        options = [str(i).zfill(len(low)) for i in range(int(low), int(high) + 1)]
    else:
        options = body.split(",")
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [expanded for option in options for expanded in expand_braces(head + option + tail)]


def list_shards(uri: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Shard URIs in order; a named shard that does not exist is kept (its read reports it)."""
    fs, path = open_fs(uri, storage_options)
    shards: list[str] = []
    for candidate in expand_braces(path):
        if _GLOB_CHARS.search(candidate):
            paths = sorted(fs.glob(candidate))
        elif fs.isdir(candidate):
            paths = sorted(p for p in fs.find(candidate) if p.endswith(SHARD_SUFFIXES))
        elif candidate.endswith(SHARD_SUFFIXES):
            paths = [candidate]
        else:
            paths = []
        shards.extend(to_uri(fs, p, uri) for p in paths)
    return shards


def split_name(name: str) -> tuple[str, str] | None:
    """WebDataset's key rule: `dir/key.ext.more` -> (`dir/key`, `ext.more`); None without an extension."""
    folder, base = posixpath.split(name)
    if "." not in base or base.startswith("."):
        return None
    key, ext = base.split(".", 1)
    return posixpath.join(folder, key), ext.lower()


def _shard_rows(item: dict[str, Any], storage_options: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Stream one shard: a sample is complete when the next key starts (WebDataset keeps samples contiguous)."""
    shard = item["shard"]
    key, files, done = None, {}, 0
    try:
        fs, path = open_fs(shard, storage_options)
        with fs.open(path, "rb") as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                parts = split_name(member.name) if member.isfile() else None
                if parts is None:
                    continue
                data = tar.extractfile(member).read()
                if parts[0] != key:
                    if key is not None:
                        yield _sample_ref(key, files, shard).load()
                        done += 1
                    key, files = parts[0], {}
                files[parts[1]] = data
    except FileNotFoundError:
        problem = ("missing_file", f"shard {shard} does not exist")
    except Exception as exc:  # tarfile, gzip and storage errors: keep what was read, report the rest
        problem = (
            "read_error",
            f"shard {shard} unreadable after {done} samples: {type(exc).__name__}: {exc}",
        )
    else:
        problem = None
    if key is not None:
        yield _sample_ref(key, files, shard).load()
    if problem is not None:
        yield quarantined_row(*problem, pair_id=pair_id_for_uris(shard), source_uri=shard, dataset=DATASET)


def _sample_ref(key: str, files: dict[str, bytes], shard: str) -> PairRef:
    ref = PairRef(DATASET, pair_id=key)
    try:
        for role, names in IMAGE_NAMES.items():
            ext = _image_ext(files, names, f"{shard}#{key}")
            setattr(ref, f"{role}_uri", f"{shard}#{key}.{ext}")
            setattr(ref, role, files[ext])
        for field, value in _meta(files, f"{shard}#{key}").items():
            setattr(ref, field, value)
    except PairProblem as exc:
        return ref.failed(exc.reason, exc.detail)
    return ref


def _image_ext(files: dict[str, bytes], names: tuple[str, ...], where: str) -> str:
    found = sorted(ext for ext in files if ext.split(".", 1)[0] in names)
    if not found:
        raise PairProblem("missing_file", f"{where}: no {' or '.join(n + '.*' for n in names)} in the sample")
    if len(found) > 1:
        raise PairProblem("bad_record", f"{where}: several images for one role: {', '.join(found)}")
    return found[0]


def _meta(files: dict[str, bytes], where: str) -> dict[str, str | None]:
    try:
        if "json" in files:
            meta = json.loads(files["json"])
            if not isinstance(meta, dict):
                raise PairProblem("bad_record", f"{where}.json: not a JSON object")
            return text_fields(meta, f"{where}.json", **META_FIELDS)
        if "txt" in files:
            return {"reference_instruction": files["txt"].decode("utf-8").strip()}
    except ValueError as exc:  # JSON and UTF-8 decoding errors
        raise PairProblem("bad_record", f"{where}: unreadable metadata: {exc}") from exc
    return {}
