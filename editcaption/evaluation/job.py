"""The eval job: benchmarks → every captioner writes an instruction per pair → the judge grades them →
tables, metrics and the report.

One streaming Ray Data pipeline, a pair per row, in the synthesis job's shape: read each benchmark
(sampled, sharded, bad pairs quarantined and carried along) → one grouped engine stage per captioner
(`Engine.apply_grouped`: the pair in, its instruction and check results out) → one grouped judge
stage (all of a pair's grading and comparison requests in one engine call) → the driver collects the
light columns, writes the tables and calls `report.summarise` and `report.write_eval_report`.
"""

from __future__ import annotations

import functools
import json
import posixpath
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from editcaption.engines.families import warn_if_reasoning_is_cut
from editcaption.evaluation.benchmarks import BenchmarkConfig, read_benchmark
from editcaption.evaluation.captioning import CaptionerConfig, EvalChecksConfig, caption_expand, caption_merge
from editcaption.evaluation.judging import JudgeConfig, judge_expand, judge_merge
from editcaption.evaluation.report import summarise, write_eval_report
from editcaption.evaluation.summaries import caption_cells, comparison_cells, pass_cells
from editcaption.images import ImagePolicy
from editcaption.io.fs import open_fs
from editcaption.io.pairs import TASK_CPUS
from editcaption.paths import InputPath, OutputPath
from editcaption.prompts.instruction import PROMPT_VERSION
from editcaption.prompts.judge import DIMENSIONS, JUDGE_PROMPT_VERSION
from editcaption.schema import Judgment


class HumanSourceConfig(BaseModel):
    """Human verdicts, read from the review stage's judgment export: `editcaption review export --kind
    judgment --store URL [--project P] --out judgments.parquet` writes `schema.Judgment` records. Only
    rows with `judge: human:<annotator>` are read; the eval never opens the review database."""

    model_config = ConfigDict(extra="forbid")

    parquet: InputPath = Field(
        description="Path or URI of the exported Judgment Parquet file, or of a folder of such files."
    )

    @model_validator(mode="before")
    @classmethod
    def _read_through_the_export(cls, data: Any) -> Any:
        if isinstance(data, dict) and {"store_url", "project"} & set(data):
            raise ValueError(
                "human verdicts are read from the review export, not the review database: run `editcaption "
                "review export --kind judgment --store URL [--project P] --out judgments.parquet` and give "
                "`human: {parquet: judgments.parquet}`"
            )
        return data


class PublishedRow(BaseModel):
    """A reference row copied from a paper, shown in the tables labelled as published, never recomputed."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    benchmark: str | None = Field(
        None, description="Benchmark name as in `benchmarks`, if the number is per benchmark."
    )
    source: str = Field(description="Where the number is printed, e.g. 'arXiv 2604.08213'.")
    mean: float | None = Field(None, ge=1, le=5, description="Mean judge score (1-5).")
    correct: float | None = Field(None, ge=0, le=100, description="Human-eval correct, %.")
    minor_error: float | None = Field(None, ge=0, le=100, description="Human-eval minor errors, %.")
    critical_error: float | None = Field(None, ge=0, le=100, description="Human-eval critical errors, %.")


class EvalConfig(BaseModel):
    """The whole eval: captioners × benchmarks, the judge, human verdicts, published rows, checks."""

    model_config = ConfigDict(extra="forbid")

    captioners: list[CaptionerConfig] = Field(min_length=1, description="The models under evaluation.")
    judge: JudgeConfig | None = Field(
        None, description="The VLM judge; None = captions, checks and humans only."
    )
    benchmarks: list[BenchmarkConfig] = Field(min_length=1)
    human: HumanSourceConfig | None = Field(None, description="Human verdicts to report and compare with.")
    published: list[PublishedRow] = Field(default_factory=list)
    checks: EvalChecksConfig = Field(default_factory=EvalChecksConfig)
    output: OutputPath = Field("runs/eval", description="Folder or URI for the tables, metrics and report.")
    limit: int | None = Field(
        None, ge=1, description="Read at most this many pairs per benchmark (a trial run)."
    )
    images: ImagePolicy = Field(default_factory=ImagePolicy, description="Which images are accepted.")
    pairs_per_batch: int | None = Field(
        None,
        ge=1,
        description="Pairs per engine batch; None sizes it from each stage's engine (vLLM: enough pairs "
        "for their first requests to fill max_num_seqs twice; others 8).",
    )
    ray_address: str | None = Field(None, description="Join this Ray cluster instead of starting one.")

    @field_validator("captioners", "benchmarks")
    @classmethod
    def _unique_names(cls, items: list[Any]) -> list[Any]:
        names = [item.name for item in items]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"names must be unique, repeated: {', '.join(repeated)}")
        return items


INSTRUCTION_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("benchmark", pa.string()),
        ("category", pa.string()),
        ("model", pa.string()),
        ("reference_instruction", pa.string()),
        ("instruction", pa.string()),
        ("raw_text", pa.string()),
        ("error", pa.string()),
        ("flip_verdict", pa.string()),
        ("flip_reason", pa.string()),
        ("mirrored_instruction", pa.string()),
        ("lint", pa.list_(pa.string())),
        ("attribute_score", pa.float64()),
        ("attributes_missing", pa.list_(pa.string())),
        ("attributes_wrong", pa.list_(pa.string())),
    ]
)
JUDGMENT_SCHEMA = pa.schema(
    [
        *Judgment.arrow_schema(),
        ("category", pa.string()),
        ("scores", pa.struct([(d, pa.float64()) for d in DIMENSIONS])),
        ("passes", pa.int64()),
        ("parsed_passes", pa.int64()),
        ("prompt_version", pa.string()),
    ]
)
PASS_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("benchmark", pa.string()),
        ("judge", pa.string()),
        ("model", pa.string()),
        ("pass", pa.int64()),
        ("text", pa.string()),
        ("error", pa.string()),
        ("engine_error", pa.string()),
        ("verdict", pa.string()),
        ("overall", pa.float64()),
    ]
)
COMPARISON_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("benchmark", pa.string()),
        ("judge", pa.string()),
        ("model_a", pa.string()),
        ("model_b", pa.string()),
        ("ab", pa.string()),
        ("ba", pa.string()),
        ("ab_error", pa.string()),
        ("ba_error", pa.string()),
        ("outcome", pa.string()),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [("pair_id", pa.string()), ("benchmark", pa.string()), ("reason", pa.string()), ("detail", pa.string())]
)
TABLES = {
    "instructions.parquet": INSTRUCTION_SCHEMA,
    "judgments.parquet": JUDGMENT_SCHEMA,
    "judge_passes.parquet": PASS_SCHEMA,
    "comparisons.parquet": COMPARISON_SCHEMA,
    "quarantine.parquet": QUARANTINE_SCHEMA,
}
_LIGHT = (
    "pair_id",
    "benchmark",
    "category",
    "reference_instruction",
    "quarantine_reason",
    "quarantine_detail",
    "captions",
    "judgments",
    "judge_passes",
    "comparisons",
)


def _start(table: pa.Table) -> pa.Table:
    """Every row starts with no captions; each captioner's stage adds its own."""
    return table.append_column("captions", pc.cast(pa.array(["{}"] * table.num_rows), pa.string()))


def build_pipeline(config: EvalConfig) -> Any:
    """The lazy Ray Dataset of finished pair rows (captions, judgments) for every benchmark.

    Consecutive stages on the same engine config (a captioner that also judges, say) run as rounds
    of one grouped call (`Engine.apply_steps`): one copy of the model, no second engine competing for
    the same devices.
    """
    from editcaption.engines import make_engine
    from editcaption.engines.base import GroupedStep
    from editcaption.ray_setup import local_task_concurrency

    benches = [read_benchmark(b, config.images, config.limit) for b in config.benchmarks]
    ds = benches[0].union(*benches[1:]) if len(benches) > 1 else benches[0]
    ds = ds.map_batches(
        _start, batch_format="pyarrow", num_cpus=TASK_CPUS, concurrency=local_task_concurrency()
    )
    stages = [
        (
            cap.engine,
            GroupedStep(
                expand=functools.partial(
                    caption_expand, name=cap.name, sampling=cap.sampling, flip=config.checks.flip_consistency
                ),
                merge=functools.partial(caption_merge, name=cap.name, checks=config.checks),
                seconds_column=f"caption_seconds_{i}",
                requests_per_row=2 if config.checks.flip_consistency else 1,
            ),
        )
        for i, cap in enumerate(config.captioners)
    ]
    if config.judge is not None:
        names = [c.name for c in config.captioners]
        step = GroupedStep(
            expand=functools.partial(judge_expand, captioners=names, cfg=config.judge),
            merge=functools.partial(judge_merge, captioners=names, cfg=config.judge),
            seconds_column="judge_seconds",
        )
        stages.append((config.judge.engine, step))
    while stages:
        engine, steps = stages[0][0], []
        while stages and stages[0][0] == engine:
            steps.append(stages.pop(0)[1])
        ds = make_engine(engine).apply_steps(ds, steps, config.pairs_per_batch, engine.replicas)
    return ds


def collect(rows: Any, config: EvalConfig) -> tuple[dict[str, list[dict[str, Any]]], dict[str, float]]:
    """Split finished pair rows into the output tables' rows (see `TABLES`), and sum each stage's
    engine-busy seconds."""
    tables: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    seconds: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            if "_seconds" in key:
                seconds[key] = seconds.get(key, 0.0) + float(value or 0.0)
        if row["quarantine_reason"] is not None:
            tables["quarantine.parquet"].append(
                {
                    "pair_id": row["pair_id"],
                    "benchmark": row["benchmark"],
                    "reason": row["quarantine_reason"],
                    "detail": row["quarantine_detail"],
                }
            )
            continue
        captions = json.loads(row["captions"])
        for cap in config.captioners:
            entry = captions[cap.name]
            tables["instructions.parquet"].append(
                {
                    "pair_id": row["pair_id"],
                    "benchmark": row["benchmark"],
                    "category": row["category"],
                    "model": cap.name,
                    "reference_instruction": row["reference_instruction"],
                    **{k: entry[k] for k in INSTRUCTION_SCHEMA.names if k in entry},
                }
            )
        for column, table in (
            ("judgments", "judgments.parquet"),
            ("judge_passes", "judge_passes.parquet"),
            ("comparisons", "comparisons.parquet"),
        ):
            if row.get(column):
                tables[table] += json.loads(row[column])
    return tables, seconds


def read_human_judgments(source: HumanSourceConfig) -> list[dict[str, Any]]:
    """The human rows (`judge` starting with `human:`) of the exported Judgment file(s), each checked
    against the `Judgment` record; a file that is not one says which column or row is wrong."""
    fs, path = open_fs(source.parquet)
    if not fs.exists(path):
        raise ValueError(f"human judgments: {source.parquet} does not exist")
    if path.endswith(".jsonl"):
        raise ValueError(
            f"human judgments: {source.parquet} is JSON lines; export them as Parquet (`--out ….parquet`)"
        )
    files = sorted(p for p in fs.find(path) if p.endswith(".parquet")) if fs.isdir(path) else [path]
    required = {name for name, field in Judgment.model_fields.items() if field.is_required()}
    rows: list[dict[str, Any]] = []
    for file in files:
        with fs.open(file, "rb") as f:
            table = pq.read_table(f)
        missing = required - set(table.column_names)
        if missing:
            raise ValueError(f"human judgments: {file} lacks the Judgment column(s) {sorted(missing)}")
        for i, row in enumerate(table.to_pylist()):
            if not str(row["judge"]).startswith("human:"):
                continue
            try:  # other columns (an eval's own judgments.parquet has more) are left out
                rows.append(
                    Judgment.model_validate({k: row[k] for k in Judgment.model_fields if k in row}).to_row()
                )
            except ValidationError as exc:
                raise ValueError(f"human judgments: {file} row {i} is not a Judgment: {exc}") from exc
    return rows


def _write_tables(tables: dict[str, list[dict[str, Any]]], out: str) -> None:
    fs, root = open_fs(out)
    fs.makedirs(root, exist_ok=True)
    for name, schema in TABLES.items():
        with fs.open(posixpath.join(root, name), "wb") as f:
            pq.write_table(pa.Table.from_pylist(tables[name], schema=schema), f)


def warn_if_reasoning_is_cut_in(config: EvalConfig) -> None:
    """Warn for each captioner and the judge whose reasoning family's reply budget is larger than its
    `max_tokens` (its replies would end `truncated`, captions unparsed and judgments missing)."""
    for cap in config.captioners:
        warn_if_reasoning_is_cut(cap.engine, cap.sampling, f"captioner {cap.name}")
    if config.judge is not None:
        warn_if_reasoning_is_cut(config.judge.engine, config.judge.sampling, "judge")


def evaluate(config: EvalConfig, progress: bool = True) -> dict[str, Any]:
    """Run the eval into `config.output`; returns the metrics dict written to `metrics.json`."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from editcaption.ray_setup import init_ray

    human = read_human_judgments(config.human) if config.human else []  # fail early on a bad source
    warn_if_reasoning_is_cut_in(config)
    init_ray(config.ray_address)
    started = time.time()
    rows = build_pipeline(config).drop_columns(["source", "target"]).iter_rows()
    columns = [SpinnerColumn(), TextColumn("{task.description}: {task.completed} pairs"), TimeElapsedColumn()]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("evaluating")

        def counted() -> Any:
            for row in rows:
                bar.advance(task)
                yield {k: row.get(k) for k in (*_LIGHT, *(k for k in row if "_seconds" in k))}

        tables, engine_seconds = collect(counted(), config)
    seconds = time.time() - started
    _write_tables(tables, config.output)

    metrics = summarise(
        [*tables["judgments.parquet"], *human], [p.model_dump(exclude_none=True) for p in config.published]
    )
    metrics["captions"] = caption_cells(tables["instructions.parquet"])
    metrics["judge_passes"] = pass_cells(tables["judge_passes.parquet"])
    metrics["comparisons"] = comparison_cells(tables["comparisons.parquet"])
    metrics["quarantine"] = _quarantine(tables["quarantine.parquet"])
    metrics["meta"] = _meta(config, tables, seconds, engine_seconds)
    write_eval_report(metrics, config.output)
    return metrics


def _quarantine(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        reasons = out.setdefault(row["benchmark"], {})
        reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
    return out


def _meta(
    config: EvalConfig,
    tables: dict[str, list[dict[str, Any]]],
    seconds: float,
    engine_seconds: dict[str, float],
) -> dict[str, Any]:
    pairs = len({(r["benchmark"], r["pair_id"]) for r in tables["instructions.parquet"]})
    judged = len({(r["benchmark"], r["pair_id"]) for r in tables["judgments.parquet"]})
    return {
        "captioners": ", ".join(
            f"{c.name} ({c.engine.backend}: {c.engine.model})" for c in config.captioners
        ),
        "judge": "none"
        if config.judge is None
        else f"{config.judge.label} ({config.judge.engine.backend}: {config.judge.engine.model})",
        "judge_passes": 0 if config.judge is None else config.judge.num_pass,
        "pairwise": bool(config.judge and config.judge.pairwise),
        "judge_prompt_version": JUDGE_PROMPT_VERSION,
        "instruction_prompt_version": PROMPT_VERSION,
        "benchmarks": ", ".join(
            f"{b.name} ({b.format}, sample {b.sample_size or 'all'}, seed {b.seed}, "
            f"shard {b.shard.index + 1}/{b.shard.count})"
            for b in config.benchmarks
        ),
        "flip_consistency": config.checks.flip_consistency,
        "pairs_evaluated": pairs,
        "pairs_judged": judged,
        "pairs_quarantined": len(tables["quarantine.parquet"]),
        "seconds": round(seconds, 2),
        "judged_pairs_per_s": round(judged / seconds, 4) if seconds > 0 else None,
        "engine_seconds": {k: round(v, 2) for k, v in sorted(engine_seconds.items())},
    }
