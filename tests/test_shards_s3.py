"""Committed shards on an object store (moto's S3 server on loopback, `object_store.py`): the driver
sees shards that other processes (Ray workers) committed after it first listed the folder."""

from __future__ import annotations

import pyarrow as pa
import pytest
from object_store import moto_s3_server

from editcaption.io.fs import open_fs
from editcaption.synthesis.shards import (
    FORMAT_KEY,
    SHARD_FORMAT,
    commit_shard,
    committed_shards,
    done_pair_ids,
)

pytestmark = pytest.mark.slow  # starts a server


def test_shards_committed_elsewhere_after_a_listing_are_seen(tmp_path, monkeypatch) -> None:
    with moto_s3_server(tmp_path / "moto.log") as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        server.client().create_bucket(Bucket="shards")
        uri = "s3://shards/run/pairs"
        fs, root = open_fs(uri)
        commit_shard(fs, root, pa.table({"pair_id": ["p1"]}))
        assert done_pair_ids(uri) == {"p1"}  # this process has now listed (and cached) the folder
        # A worker commits a shard: another client, as another process would.
        server.client().put_object(
            Bucket="shards", Key="run/pairs/shard-from-a-worker.parquet", Body=_parquet(["p2"])
        )
        assert len(committed_shards(uri)) == 2
        assert done_pair_ids(uri) == {"p1", "p2"}


def _parquet(pair_ids: list[str]) -> bytes:
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"pair_id": pair_ids}).replace_schema_metadata({FORMAT_KEY: SHARD_FORMAT}), sink)
    return sink.getvalue().to_pybytes()
