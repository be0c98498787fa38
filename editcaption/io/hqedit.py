"""HQ-Edit Parquet shards: `input_image` / `output_image` (raw bytes or HF image structs), `edit`, `inverse_edit`."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from editcaption.io.fs import open_fs, to_uri
from editcaption.io.loading import PairReader, map_pairs
from editcaption.io.manifest import list_parquet, parquet_records, parse_record

if TYPE_CHECKING:
    from ray.data import Dataset

DATASET = "hqedit"
IMAGE_COLUMNS = ("input_image", "output_image")
HQEDIT_FIELDS = {"edit": "reference_instruction", "inverse_edit": "inverse_instruction"}


class HQEditPairReader(PairReader):
    """A Parquet file or folder of HQ-Edit shards; pair_id is the hash of both images (HQ-Edit has no id)."""

    def read(self) -> Dataset:
        fs, path = open_fs(self.uri, self.storage_options)
        if not fs.exists(path):
            raise ValueError(f"hqedit: {self.uri} does not exist")
        base = to_uri(fs, path if fs.isdir(path) else posixpath.dirname(path), self.uri)
        files = [{"file": uri} for uri in list_parquet(fs, path, self.uri)]
        fn = partial(_rows, base=base, storage_options=self.storage_options)
        ds = map_pairs(files, fn, dataset=DATASET, batch_size=1)
        return ds if self.limit is None else ds.limit(self.limit)


def _rows(
    item: dict[str, Any], base: str, storage_options: dict[str, Any] | None
) -> Iterator[dict[str, Any]]:
    for record in parquet_records(item["file"], storage_options):
        ref = parse_record(
            record, dataset=DATASET, base=base, where=item["file"], fields=HQEDIT_FIELDS, images=IMAGE_COLUMNS
        )
        yield ref.load(storage_options)
