"""DPO's reference log-probs, computed once in a Ray Data pass and stored with the preference rows.

TRL runs the frozen reference model on every DPO step, and for vision data it cannot precompute:
`precompute_ref_log_probs` refuses image datasets. Here one pass over the prepared rows runs the
reference model in Ray Data actors (`workers.num_workers` of them, each with a worker's CPUs and GPUs)
and writes a copy of the rows with each pair's summed completion log-probs, `ref_chosen_logps` and
`ref_rejected_logps`. Training then holds no reference model and runs no reference forward: the
HAE-DPO trainer reads the stored values (`HAEDPOConfig.precomputed_reference`), its hardness term too.

The numbers are TRL's own: its vision collator, its fused LM head and the sum over the completion that
`DPOTrainer.compute_ref_log_probs` takes, so the loss equals that of an on-the-fly reference on the same
batches (to float rounding: batches are padded differently; tests/test_reference.py holds it to 1e-5).
"""

from __future__ import annotations

import bisect
import posixpath
import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Value

from editcaption.io.fs import open_fs
from editcaption.training.data import DPO_FEATURES

if TYPE_CHECKING:
    from editcaption.training.dpo import DPOJobConfig

REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
REFERENCE_FEATURES = Features({**DPO_FEATURES, **{c: Value("float64") for c in REFERENCE_COLUMNS}})
_EXAMPLE_KEYS = ("images", "prompt", "chosen", "rejected")


class ReferenceModel:
    """The frozen reference model with TRL's collator: `log_probs(examples)` gives each TRL vision
    preference example's summed completion log-probs, chosen and rejected."""

    def __init__(self, model: str, processor: Any, bf16: bool, on_gpu: bool, max_length: int | None) -> None:
        import torch
        from transformers import AutoModelForImageTextToText
        from trl.trainer.dpo_trainer import DataCollatorForVisionPreference
        from trl.trainer.utils import add_fused_lm_head

        self.torch = torch
        self.autocast = {"dtype": torch.bfloat16, "enabled": on_gpu and bf16}
        tokenizer = processor.tokenizer
        # As DPOTrainer does before building its collator: pad with the pad token, else the EOS token.
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        self.collator = DataCollatorForVisionPreference(processor=processor, max_length=max_length)
        self.model = AutoModelForImageTextToText.from_pretrained(
            model, dtype=torch.bfloat16 if bf16 else torch.float32, device_map="auto" if on_gpu else None
        )
        self.model.eval()
        add_fused_lm_head(self.model)
        self.device = next(self.model.parameters()).device

    def log_probs(self, examples: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
        """Summed completion log-probs of chosen and rejected, as `DPOTrainer.compute_ref_log_probs`."""
        torch = self.torch
        inputs = {k: v.to(self.device) for k, v in self.collator(examples).items()}
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        model_kwargs = {k: v for k, v in inputs.items() if k != "completion_mask"}
        with torch.no_grad(), torch.autocast(self.device.type, **self.autocast):
            outputs = self.model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True)
        per_token = outputs.log_probs[:, -(inputs["completion_mask"].size(1) - 1) :]
        chosen, rejected = per_token.sum(dim=1).float().cpu().chunk(2, dim=0)
        return chosen.tolist(), rejected.tolist()


class ReferenceScorer:
    """Ray Data callable class: row indices of the prepared Parquet in, their reference log-probs out.

    Rows are read here, by index, from the file (images never pass through Ray's object store)."""

    def __init__(self, cfg: DPOJobConfig, data_uri: str) -> None:
        from editcaption.training.model import load_processor

        self.reference = ReferenceModel(cfg.model, load_processor(cfg), cfg.bf16, cfg.on_gpu, cfg.max_length)
        fs, path = open_fs(data_uri)
        self.file = pq.ParquetFile(fs.open(path, "rb"))
        sizes = [self.file.metadata.row_group(g).num_rows for g in range(self.file.num_row_groups)]
        self.starts = [sum(sizes[:g]) for g in range(len(sizes))]
        self._group: tuple[int, list[dict[str, Any]]] | None = None

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        indices = [int(i) for i in batch["id"]]
        chosen, rejected = self.reference.log_probs([self._example(i) for i in indices])
        return {"id": indices, REFERENCE_COLUMNS[0]: chosen, REFERENCE_COLUMNS[1]: rejected}

    def _example(self, index: int) -> dict[str, Any]:
        group = bisect.bisect_right(self.starts, index) - 1
        if self._group is None or self._group[0] != group:
            self._group = (group, self.file.read_row_group(group).to_pylist())
        row = self._group[1][index - self.starts[group]]
        return trl_example(DPO_FEATURES.decode_example({k: row[k] for k in DPO_FEATURES}))


def trl_example(row: dict[str, Any]) -> dict[str, Any]:
    """The keys TRL's vision preference collator reads (images decoded to PIL)."""
    return {k: row[k] for k in _EXAMPLE_KEYS}


def precompute_reference(cfg: DPOJobConfig, data_uri: str) -> tuple[str, dict[str, Any]]:
    """Run the reference model over the prepared rows; returns (URI of the rows with the reference
    log-probs beside the original, what the pass did)."""
    from ray.data import ActorPoolStrategy
    from ray.data import range as ray_range

    from editcaption.ray_setup import init_ray

    init_ray(cfg.ray_address)
    started = time.perf_counter()
    fs, path = open_fs(data_uri)
    with fs.open(path, "rb") as f:
        rows = pq.ParquetFile(f).metadata.num_rows
    workers = cfg.workers
    resources: dict[str, Any] = {"num_cpus": workers.cpus_per_worker}
    if cfg.on_gpu:
        resources["num_gpus"] = workers.gpus_per_worker
    if workers.resources_per_worker:
        resources["resources"] = dict(workers.resources_per_worker)
    scored = ray_range(rows).map_batches(
        ReferenceScorer,
        fn_constructor_kwargs={"cfg": cfg, "data_uri": data_uri},
        batch_size=cfg.per_device_train_batch_size,
        compute=ActorPoolStrategy(size=min(workers.num_workers, rows)),
        **resources,
    )
    values = {r["id"]: (r[REFERENCE_COLUMNS[0]], r[REFERENCE_COLUMNS[1]]) for r in scored.take_all()}
    missing = sorted(set(range(rows)) - set(values))
    if missing:
        raise RuntimeError(f"reference pass: no log-probs for {len(missing)} of {rows} rows")
    out = posixpath.join(posixpath.dirname(data_uri), "dpo-reference.parquet")
    write_with_reference(data_uri, out, [values[i] for i in range(rows)])
    return out, {"rows": rows, "seconds": round(time.perf_counter() - started, 2)}


def write_with_reference(data_uri: str, out_uri: str, values: list[tuple[float, float]]) -> None:
    """A copy of the prepared rows with the reference columns added, row group by row group."""
    fs, path = open_fs(data_uri)
    out_fs, out_path = open_fs(out_uri)
    schema = REFERENCE_FEATURES.arrow_schema
    done = 0
    with fs.open(path, "rb") as src, out_fs.open(out_path, "wb") as sink:
        reader = pq.ParquetFile(src)
        with pq.ParquetWriter(sink, schema) as writer:
            for group in range(reader.num_row_groups):
                table = reader.read_row_group(group)
                part = values[done : done + table.num_rows]
                for k, column in enumerate(REFERENCE_COLUMNS):
                    table = table.append_column(column, pa.array([v[k] for v in part], pa.float64()))
                writer.write_table(table.select(schema.names).cast(schema))
                done += table.num_rows
