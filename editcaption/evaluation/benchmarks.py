"""Benchmarks for the eval job: which pairs of which dataset, sampled and sharded reproducibly.

A benchmark reuses the pair readers (`editcaption.io`): HQ-Edit Parquet, ByteMorph-Bench (the
published Parquet, or side-by-side PNGs; its category, one of five motion types, is kept as a
breakdown), or "Eval-N", any pair folder or manifest with optional reference instructions and
categories (the paper's Eval-400 is one).
Sampling and sharding key on a hash of the seed and the pair id, not on read order, so the same
config picks the same pairs on any machine, and the shards of one sample are disjoint and complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from editcaption.images import ImagePolicy
from editcaption.io import detect_format, read_pairs, validate_pairs
from editcaption.io.pairs import TASK_CPUS
from editcaption.paths import InputPath
from editcaption.ray_setup import local_task_concurrency

if TYPE_CHECKING:
    from ray.data import Dataset

BenchmarkFormat = Literal["hqedit", "bytemorph", "eval-n"]
EVAL_N_LAYOUTS = ("folder", "manifest")


class ShardConfig(BaseModel):
    """This run's share of a benchmark: shard `index` of `count` (0-based)."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(0, ge=0, description="Which shard this run evaluates.")
    count: int = Field(1, ge=1, description="Shards the benchmark (or its sample) is split into; 1 = all.")

    @model_validator(mode="after")
    def _index_in_range(self) -> ShardConfig:
        if self.index >= self.count:
            raise ValueError(f"shard index {self.index} is out of range for {self.count} shards")
        return self


class BenchmarkConfig(BaseModel):
    """One benchmark: where its pairs are, in which layout, and which of them this run evaluates."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The benchmark's label in every table (e.g. eval-400, bytemorph-bench).")
    format: BenchmarkFormat = Field(
        description="hqedit (Parquet), bytemorph (the published Parquet, or side-by-side PNG + JSON), or "
        "eval-n (a pair folder or manifest; `meta.json` / manifest `instruction` and `category` give "
        "references and categories)."
    )
    uri: InputPath = Field(description="Local path or object-store URI of the benchmark.")
    sample_size: int | None = Field(
        None, ge=1, description="Evaluate this many pairs drawn with `seed`; None = every pair."
    )
    seed: int = Field(0, description="Seed of the sample and of the shard assignment.")
    shard: ShardConfig = Field(default_factory=ShardConfig)


def pair_rank(pair_id: str, seed: int, salt: str = "sample") -> int:
    """A pseudo-random but fixed number per pair: the same for the same (seed, pair id) everywhere."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{seed}:{pair_id}".encode()).digest()[:8], "big")


def choose_sample(pair_ids: Iterable[str], size: int | None, seed: int) -> set[str]:
    """The `size` pair ids ranked first by `pair_rank` (all of them when `size` is None)."""
    ids = sorted(set(pair_ids))
    if size is None:
        return set(ids)
    return set(sorted(ids, key=lambda i: (pair_rank(i, seed), i))[:size])


def in_shard(pair_id: str, shard: ShardConfig, seed: int) -> bool:
    return pair_rank(pair_id, seed, salt="shard") % shard.count == shard.index


def _keep(table: pa.Table, chosen: frozenset[str] | None, shard: ShardConfig, seed: int) -> pa.Table:
    ids = table.column("pair_id").to_pylist()
    mask = [(chosen is None or i in chosen) and in_shard(i, shard, seed) for i in ids]
    return table.filter(pa.array(mask, type=pa.bool_()))


def _tag(table: pa.Table, name: str) -> pa.Table:
    return table.append_column("benchmark", pc.cast(pa.array([name] * table.num_rows), pa.string()))


def reader_format(bench: BenchmarkConfig) -> str:
    """The pair reader for the benchmark; an Eval-N in a layout other than folder/manifest is an error."""
    if bench.format != "eval-n":
        return bench.format
    layout = detect_format(bench.uri)
    if layout not in EVAL_N_LAYOUTS:
        raise ValueError(
            f"benchmark {bench.name!r}: eval-n needs a pair folder or manifest, but {bench.uri} is {layout}"
        )
    return layout


def read_benchmark(bench: BenchmarkConfig, policy: ImagePolicy, limit: int | None = None) -> Dataset:
    """Validated pair rows of the benchmark's chosen pairs (bad ones quarantined), with a `benchmark`
    column. `limit` caps the pairs read (first ones in the reader's order) before sampling.

    A sample needs every pair id first, so a sampled benchmark is read twice (ids only, then the
    chosen pairs); sharding alone needs no first pass. The second read is not limited: Ray Data's
    limit keeps whichever blocks come first, so two limited reads of a benchmark in several files can
    return different pairs, and the chosen ones are kept by id.
    """
    fmt = reader_format(bench)
    chosen = None
    if bench.sample_size is not None:
        ids = read_pairs(bench.uri, format=fmt, limit=limit).select_columns(["pair_id"]).take_all()
        chosen = frozenset(choose_sample((r["pair_id"] for r in ids), bench.sample_size, bench.seed))
    pairs = read_pairs(bench.uri, format=fmt, limit=None if chosen is not None else limit)
    if chosen is not None or bench.shard.count > 1:
        pairs = pairs.map_batches(
            _keep,
            fn_kwargs={"chosen": chosen, "shard": bench.shard, "seed": bench.seed},
            batch_format="pyarrow",
            num_cpus=TASK_CPUS,
        )
    return validate_pairs(pairs, policy).map_batches(
        _tag,
        fn_kwargs={"name": bench.name},
        batch_format="pyarrow",
        num_cpus=TASK_CPUS,
        concurrency=local_task_concurrency(),
    )
