"""Training costs: HAE-DPO against plain TRL DPO, and SFT through Ray Train against the same TRL run.

    python benchmarks/train.py --model .cache/tiny-qwen3vl --out benchmarks/results/train.json

1. Objective. One policy, one reference and one fixed list of collated batches (bundled sample pairs
   with rule-written hard negatives, the DPO job's own rows) go through TRL's `DPOTrainer` (sigmoid)
   and `HAEDPOTrainer` (default margins, hardness on) by `training_step` (forward, reference forward,
   loss, backward), alternating which goes first each round; warm-up rounds are not timed. The
   optimizer step, identical for both, is left out, so the ratio is the objective's cost at its
   largest. On the tiny model the margin's few per-pair operations weigh more than they would on a
   real one, whose forward dominates. Torch runs one thread and the headline ratio is on process
   CPU time, which other work on a shared machine does not inflate; wall-clock rates are beside it.
2. Reference log-probs. HAE-DPO with the reference model run on every step (TRL's way) against the
   reference's log-probs precomputed by the DPO job's Ray Data pass (`training/reference.py`) and
   stored with the rows, no reference model in memory. Each variant runs in a fresh process (so its
   peak RSS is its own: `ru_maxrss`) over the same batches, the same number of `training_step`s,
   alternating which goes first per repeat; reported: median step wall and CPU time, peak RSS, RSS
   once the models are loaded, the first batch's loss on both sides, and the pass's own time. On the
   tiny model the reference is a few MB; its share grows with the model (a bf16 copy of the policy:
   4.4 GB for Qwen3-VL-2B, `benchmarks/gpu_check.py` measures that on a GPU).
3. SFT overhead. The SFT job on Ray Train (`launch` with the job's `build_sft_trainer`, 2 CPU
   workers, gloo, DeepSpeed ZeRO-3 as the job's tests run it) against the same TRL `SFTTrainer`
   built from the same job config and run by `torchrun` with 2 processes: the same data-parallel
   work, launched without Ray. (Not `deepspeed: none`: on Ray workers accelerate's state then comes
   out as `DistributedType.NO`, the model is not wrapped in DDP, and the comparison would be unfair;
   the JSON records each path's distributed type.) Both trainers carry the same callback, which records
   the wall and process-CPU time between consecutive optimizer steps on rank 0 (data loading, step,
   logging and Ray's reporting callback all fall inside); the first steps are dropped and the median
   interval gives the steady-state rate. The headline overhead is on rank 0's CPU time, which other
   work on a shared machine does not inflate (Ray's own daemons run in other processes and are not
   in it); the wall-clock overhead is beside it. Runs alternate between the paths; end-to-end wall
   times (start-up, data preparation, training, final save) are reported too.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "editcaption" / "data" / "sample_pairs"


def sample_pairs() -> list[dict[str, Any]]:
    """The bundled pairs as `PreferencePair`-shaped dicts: chosen = reference, rejected = hard negatives."""
    from editcaption.checks.hard_negatives import hard_negatives

    pairs = []
    for folder in sorted(p for p in SAMPLE.iterdir() if p.is_dir()):
        meta = json.loads((folder / "meta.json").read_text())
        source, target = (folder / "source.png").read_bytes(), (folder / "target.png").read_bytes()
        pairs += hard_negatives(folder.name, source, target, meta["instruction"])
    return pairs


def objective_cost(model: str, pairs: int, batch: int, rounds: int, warmup: int) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from rich.progress import track
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import DPOConfig, DPOTrainer

    from editcaption.training.data import DPO_FEATURES, preference_rows
    from editcaption.training.hae_dpo import HAEDPOConfig, HAEDPOTrainer

    torch.manual_seed(0)
    torch.set_num_threads(1)
    rows = list(preference_rows(sample_pairs()[:pairs]))
    dataset = Dataset.from_list(rows, features=DPO_FEATURES)
    processor = AutoProcessor.from_pretrained(model)
    policy = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32)
    ref = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32)
    common = dict(
        use_cpu=True,
        bf16=False,
        max_length=None,
        per_device_train_batch_size=batch,
        gradient_checkpointing=True,
        report_to="none",
        save_strategy="no",
        seed=0,
    )
    out = tempfile.mkdtemp(prefix="bench-train-")
    kwargs = dict(model=policy, ref_model=ref, train_dataset=dataset, processing_class=processor)
    trainers = {
        "dpo": DPOTrainer(args=DPOConfig(output_dir=f"{out}/dpo", **common), **kwargs),
        "hae": HAEDPOTrainer(args=HAEDPOConfig(output_dir=f"{out}/hae", **common), **kwargs),
    }
    batches = list(trainers["hae"].get_train_dataloader())
    inputs = {
        "hae": batches,
        "dpo": [{k: v for k, v in b.items() if not k.startswith("hae_")} for b in batches],
    }
    for trainer in trainers.values():
        trainer.current_gradient_accumulation_steps = 1  # set by `train()`'s loop, which is bypassed here
    policy.train()
    seconds: dict[str, list[float]] = {"dpo": [], "hae": []}
    cpu_seconds: dict[str, list[float]] = {"dpo": [], "hae": []}
    for r in track(range(warmup + rounds), description="objective: DPO vs HAE-DPO"):
        order = ("dpo", "hae") if r % 2 == 0 else ("hae", "dpo")
        for i in range(len(batches)):
            for name in order:
                started, cpu_started = time.perf_counter(), time.process_time()
                trainers[name].training_step(policy, dict(inputs[name][i]))
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
                policy.zero_grad(set_to_none=True)
                if r >= warmup:
                    seconds[name].append(elapsed)
                    cpu_seconds[name].append(cpu)
    samples = rounds * len(rows)
    rate = {name: samples / sum(s) for name, s in seconds.items()}
    cpu_rate = {name: samples / sum(s) for name, s in cpu_seconds.items()}
    return {
        "rows": len(rows),
        "batch": batch,
        "timed_rounds": rounds,
        "warmup_rounds": warmup,
        "samples_per_cpu_s": {k: round(v, 3) for k, v in cpu_rate.items()},
        "samples_per_wall_s": {k: round(v, 3) for k, v in rate.items()},
        "median_step_cpu_ms": {k: round(1000 * statistics.median(s), 1) for k, s in cpu_seconds.items()},
        "median_step_wall_ms": {k: round(1000 * statistics.median(s), 1) for k, s in seconds.items()},
        "time_ratio_hae_over_dpo": round(cpu_rate["dpo"] / cpu_rate["hae"], 4),
        "wall_time_ratio_hae_over_dpo": round(rate["dpo"] / rate["hae"], 4),
        "target_time_ratio": 1.05,
    }


def reference_worker(variant: str, model: str, data: str, batch: int, steps: int, out: str) -> None:
    """One process: HAE-DPO `training_step`s with the reference on the fly or from the stored columns."""
    import resource

    import psutil
    import torch
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from editcaption.training.hae_dpo import HAEDPOConfig, HAEDPOTrainer

    torch.manual_seed(0)
    torch.set_num_threads(1)
    precomputed = variant == "precomputed"
    dataset = Dataset.from_parquet(data)
    processor = AutoProcessor.from_pretrained(model)
    policy = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32)
    ref = None if precomputed else AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32)
    rss_loaded = psutil.Process().memory_info().rss
    args = HAEDPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-ref-"),
        use_cpu=True,
        bf16=False,
        max_length=None,
        per_device_train_batch_size=batch,
        gradient_checkpointing=True,
        report_to="none",
        save_strategy="no",
        seed=0,
        precomputed_reference=precomputed,
    )
    trainer = HAEDPOTrainer(
        model=policy, ref_model=ref, args=args, train_dataset=dataset, processing_class=processor
    )
    trainer.current_gradient_accumulation_steps = 1  # set by `train()`'s loop, which is bypassed here
    batches = list(itertools.islice(itertools.cycle(trainer.get_train_dataloader()), steps + 1))
    policy.train()
    walls, cpus, losses = [], [], []
    for i, inputs in enumerate(batches):
        started, cpu_started = time.perf_counter(), time.process_time()
        losses.append(trainer.training_step(policy, dict(inputs)).item())
        policy.zero_grad(set_to_none=True)
        if i:  # the first step warms up
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu_started)
    result = {
        "steps_timed": len(walls),
        "median_step_wall_ms": round(1000 * statistics.median(walls), 1),
        "median_step_cpu_ms": round(1000 * statistics.median(cpus), 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "rss_after_loading_gib": round(rss_loaded / 2**30, 3),
        "first_loss": losses[0],
        "reference_model_bytes": 0
        if ref is None
        else sum(p.numel() * p.element_size() for p in ref.parameters()),
    }
    Path(out).write_text(json.dumps(result))


def reference_cost(model: str, pairs: int, batch: int, steps: int, repeats: int) -> dict[str, Any]:
    import ray
    from datasets import Dataset

    from editcaption.training.data import DPO_FEATURES, preference_rows
    from editcaption.training.dpo import DPOJobConfig
    from editcaption.training.reference import precompute_reference

    work = Path(tempfile.mkdtemp(prefix="bench-ref-"))
    prepared = work / "prepared" / "dpo.parquet"
    prepared.parent.mkdir()
    rows = list(preference_rows(sample_pairs()[:pairs]))
    Dataset.from_list(rows, features=DPO_FEATURES).to_parquet(str(prepared))
    cfg = DPOJobConfig(
        model=model,
        input=str(prepared),
        output=str(work / "model"),
        name="bench",
        storage_path=str(work / "runs"),
        bf16=False,
        per_device_train_batch_size=batch,
        workers={"num_workers": 1, "cpus_per_worker": 1},
    )
    try:
        data, reference_pass = precompute_reference(cfg, str(prepared))
    finally:
        ray.shutdown()
    runs: dict[str, list[dict[str, Any]]] = {"on_the_fly": [], "precomputed": []}
    for r in range(repeats):
        for variant in list(runs) if r % 2 == 0 else list(reversed(runs)):
            out = work / f"{variant}-{r}.json"
            command = [sys.executable, __file__, "--reference-worker", variant, model, data, str(batch)]
            command += [str(steps), str(out)]
            subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
            runs[variant].append(json.loads(out.read_text()))

    def ratios(key: str) -> list[float]:
        return [
            round(p[key] / o[key], 3) for p, o in zip(runs["precomputed"], runs["on_the_fly"], strict=True)
        ]

    return {
        "rows": len(rows),
        "batch": batch,
        "reference_pass": reference_pass,
        "runs": runs,
        "step_wall_precomputed_over_on_the_fly": ratios("median_step_wall_ms"),
        "step_cpu_precomputed_over_on_the_fly": ratios("median_step_cpu_ms"),
        "peak_rss_precomputed_over_on_the_fly": ratios("peak_rss_gib"),
        "first_loss_difference": [
            abs(p["first_loss"] - o["first_loss"])
            for p, o in zip(runs["precomputed"], runs["on_the_fly"], strict=True)
        ],
    }


def sft_config(model: str, records: str, work: Path, name: str, steps: int, batch: int) -> Any:
    from editcaption.training.sft import SFTJobConfig

    return SFTJobConfig(
        model=model,
        input=records,
        output=str(work / "models" / name),
        name=name,
        storage_path=str(work / "runs"),
        scratch_dir=str(work / "scratch"),
        deepspeed="zero3",  # with `none`, Ray workers get no DDP (see the module docstring)
        bf16=False,
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=1e-4,
        logging_steps=1,
        workers={"num_workers": 2, "cpus_per_worker": 1},
        checkpoint={"save_steps": 100_000},
    )


def write_sft_records(path: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for folder in sorted(p for p in SAMPLE.iterdir() if p.is_dir()):
        meta = json.loads((folder / "meta.json").read_text())
        rows.append(
            {
                "pair_id": folder.name,
                "source": (folder / "source.png").read_bytes(),
                "target": (folder / "target.png").read_bytes(),
                "instruction": meta["instruction"],
                "origin": "synthesis",
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def step_clock(path: str) -> Any:
    """A trainer callback that writes, on rank 0, wall and process-CPU seconds between optimizer steps."""
    import torch
    from accelerate import PartialState
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[tuple[float, float]] = []

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.ends.append((time.perf_counter(), time.process_time()))

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if state.is_world_process_zero:
                steps = itertools.pairwise(self.ends)
                wall, cpu = zip(*[(b[0] - a[0], b[1] - a[1]) for a, b in steps], strict=True)
                clock = {
                    "wall": wall,
                    "cpu": cpu,
                    "torch_threads": torch.get_num_threads(),
                    "distributed_type": str(PartialState().distributed_type),
                }
                Path(path).write_text(json.dumps(clock))

    return StepClock()


def build_timed_sft_trainer(cfg: Any, data_uri: str, output_dir: str, clock: str) -> Any:
    """The SFT job's own worker trainer (`build_sft_trainer`), plus the step clock."""
    from editcaption.training.sft import build_sft_trainer

    trainer = build_sft_trainer(cfg, data_uri, output_dir)
    trainer.add_callback(step_clock(clock))
    return trainer


def sft_direct_worker(config_json: str, clock: str) -> None:
    """One `torchrun` rank: the SFT job's trainer, built as `build_sft_trainer` does, without Ray."""
    from accelerate import PartialState
    from trl import SFTConfig, SFTTrainer

    from editcaption.training.data import load_rows
    from editcaption.training.export import save_final_model
    from editcaption.training.model import load_model, load_processor, lora_config, trainer_kwargs
    from editcaption.training.sft import SFTJobConfig, prepare_sft_data

    cfg = SFTJobConfig.model_validate_json(Path(config_json).read_text())
    if cfg.deepspeed_config() is not None:
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # as the Ray worker does before its state
    state = PartialState(backend="gloo")
    data_uri = f"{cfg.storage_path}/{cfg.name}/prepared/sft.parquet"
    if state.is_main_process:
        data_uri, _ = prepare_sft_data(cfg)
    state.wait_for_everyone()
    output_dir = Path(cfg.scratch_dir) / f"{cfg.name}-direct"
    trainer = SFTTrainer(
        model=load_model(cfg),
        args=SFTConfig(**trainer_kwargs(cfg, str(output_dir)), completion_only_loss=True),
        train_dataset=load_rows(data_uri, str(output_dir / f"data-rank{state.process_index}")),
        processing_class=load_processor(cfg),
        peft_config=lora_config(cfg),
        callbacks=[step_clock(clock)],
    )
    trainer.train()
    save_final_model(trainer, cfg)


def sft_overhead(model: str, warmup: int, timed: int, batch: int, repeats: int) -> dict[str, Any]:
    import functools

    import ray
    from rich.progress import track

    from editcaption.ray_setup import init_ray
    from editcaption.training.ray_train import check_run_folder, launch
    from editcaption.training.sft import prepare_sft_data

    work = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    records = write_sft_records(work / "records.parquet")
    steps = warmup + 1 + timed  # the first interval ends at the second step

    def ray_train(name: str, clock: str) -> None:
        cfg = sft_config(model, records, work, name, steps, batch)
        check_run_folder(cfg)  # what `run_sft` does, with the timed builder in place of its own
        data_uri, _ = prepare_sft_data(cfg)
        launch(cfg, functools.partial(build_timed_sft_trainer, clock=clock), data_uri)

    def torchrun(name: str, clock: str) -> None:
        config_json = work / f"{name}.json"
        config_json.write_text(sft_config(model, records, work, name, steps, batch).model_dump_json())
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
        command += [__file__, "--sft-worker", str(config_json), clock]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as Ray gives each 1-CPU worker
        subprocess.run(command, check=True, env=env, cwd=ROOT, capture_output=True)

    started = time.perf_counter()
    init_ray()
    ray_init_s = time.perf_counter() - started
    paths = {"ray_train": ray_train, "torchrun": torchrun}
    intervals: dict[str, list[float]] = {p: [] for p in paths}
    cpu_intervals: dict[str, list[float]] = {p: [] for p in paths}
    threads: dict[str, int] = {}
    distributed: dict[str, str] = {}
    walls: dict[str, list[float]] = {p: [] for p in paths}
    plan = [(r, p) for r in range(repeats) for p in (paths if r % 2 == 0 else reversed(list(paths)))]
    try:
        for r, path in track(plan, description="SFT: Ray Train vs torchrun"):
            clock = work / f"{path}-{r}.steps.json"
            started = time.perf_counter()
            paths[path](f"{path}-{r}", str(clock))
            walls[path].append(round(time.perf_counter() - started, 2))
            measured = json.loads(clock.read_text())
            intervals[path] += measured["wall"][warmup:]
            cpu_intervals[path] += measured["cpu"][warmup:]
            threads[path] = measured["torch_threads"]
            distributed[path] = measured["distributed_type"]
    finally:
        ray.shutdown()

    global_batch = 2 * batch
    rate = {p: global_batch / statistics.median(v) for p, v in intervals.items()}
    cpu_rate = {p: global_batch / statistics.median(v) for p, v in cpu_intervals.items()}
    return {
        "workers": 2,
        "per_worker_batch": batch,
        "steps_per_run": steps,
        "timed_steps_per_run": timed,
        "repeats": repeats,
        "deepspeed": "zero3",
        "distributed_type": distributed,
        "torch_threads_rank0": threads,
        "median_step_cpu_s": {p: round(statistics.median(v), 3) for p, v in cpu_intervals.items()},
        "median_step_wall_s": {p: round(statistics.median(v), 3) for p, v in intervals.items()},
        "steady_samples_per_cpu_s": {p: round(v, 3) for p, v in cpu_rate.items()},
        "steady_samples_per_wall_s": {p: round(v, 3) for p, v in rate.items()},
        "ray_overhead": round(cpu_rate["torchrun"] / cpu_rate["ray_train"] - 1, 4),
        "ray_overhead_wall": round(rate["torchrun"] / rate["ray_train"] - 1, 4),
        "target_overhead": 0.10,
        "end_to_end_wall_s": walls,
        "ray_init_s": round(ray_init_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a Qwen3-VL folder, e.g. from `editcaption fixtures build`")
    parser.add_argument("--out", default="benchmarks/results/train.json")
    parser.add_argument("--pairs", type=int, default=24, help="preference rows for the objective part")
    parser.add_argument("--batch", type=int, default=4, help="pairs (part 1) or samples per worker (part 2)")
    parser.add_argument("--rounds", type=int, default=6, help="timed passes over the batches (part 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes before them (part 1)")
    parser.add_argument("--sft-steps", type=int, default=12, help="timed optimizer steps per SFT run")
    parser.add_argument("--sft-warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--sft-repeats", type=int, default=2, help="runs per path, alternating")
    parser.add_argument("--skip-sft", action="store_true", help="leave the SFT part out")
    parser.add_argument("--skip-objective", action="store_true", help="leave the objective part out")
    parser.add_argument("--ref-steps", type=int, default=6, help="timed training steps per variant (part 2)")
    parser.add_argument("--ref-repeats", type=int, default=2, help="processes per variant, alternating")
    parser.add_argument("--skip-reference", action="store_true", help="leave the reference part out")
    parser.add_argument("--sft-worker", nargs=2, metavar=("CONFIG", "CLOCK"), help=argparse.SUPPRESS)
    parser.add_argument("--reference-worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.sft_worker:
        sft_direct_worker(*args.sft_worker)
        return
    if args.reference_worker:
        variant, model, data, batch, steps, out = args.reference_worker
        reference_worker(variant, model, data, int(batch), int(steps), out)
        return
    if not args.model:
        parser.error("--model is required")

    result: dict[str, Any] = {
        "model": args.model,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "note": "measured on a 2-core machine shared with other work running at the same time",
        },
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    if not args.skip_objective:
        result["objective"] = objective_cost(args.model, args.pairs, args.batch, args.rounds, args.warmup)
    if not args.skip_reference:
        result["reference"] = reference_cost(
            args.model, args.pairs, args.batch, args.ref_steps, args.ref_repeats
        )
    if not args.skip_sft:
        result["sft_ray_train"] = sft_overhead(
            args.model, args.sft_warmup, args.sft_steps, args.batch, args.sft_repeats
        )
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
