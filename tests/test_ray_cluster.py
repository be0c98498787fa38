"""The jobs on a Ray cluster of several nodes, submitted the way docs/cluster.md submits them.

One cluster for the module (`editcaption.local_cluster`): a head (2 CPUs, the dashboard and Jobs API on
loopback) and two "gpu" worker nodes, separate raylets started with `ray start`, each offering the custom
resource `gpu-1x` that stands for a 1-GPU node type (no GPU exists here). Engines and Ray Train workers
ask for `gpu-1x`, so they can only run on those nodes; light stages ask for CPUs only.

What is real: the raylets, the Jobs API with `--working-dir` uploads, Ray Data's actor restarts, Ray
Train's restart from checkpoints, Serve's autoscaler, an S3-compatible server (moto's, on loopback),
the annotator (the committed miniature Qwen3-VL, whose greedy instructions are real sentences). What
stands in: the `gpu-1x` resource for GPUs, and the EditScore stand-in server (`fake_editscore.py`) for
the 8B scorer, which needs a GPU.

CI runs every test here (marker `cluster`). Every node has its own temp dir (`LocalCluster`): Ray
re-unpacks a job's working dir (rmtree, then unzip) on each node that starts work, which in a shared
session dir deleted files under running workers (`benchmarks/cluster.py`, 6 Dec). The whole module
took 7-12 min in serial runs on an idle 2-core machine (6 Dec), the cluster's start 12-20 s of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from cluster_jobs import ANNOTATOR, BAD, BUCKET, COMPARED, GPU, JOB_ENV, PAIRS, ROOT, report, synthesis_config
from fake_editscore import fake_editscore_server
from object_store import S3Server, moto_s3_server
from ray_sessions import kill_ray_session
from test_train_data import records

from editcaption.local_cluster import HEAD, PATIENT_RAY_ENV, LocalCluster, NodeSpec, free_port
from editcaption.schema import SFTRecord

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Head (2 CPUs: drivers and light stages) + two gpu-1x nodes (2 CPUs each)."""
    with LocalCluster(head_cpus=2) as c:
        c.start([NodeSpec("gpu-a", 2, GPU), NodeSpec("gpu-b", 2, GPU)])
        yield c


@pytest.fixture(autouse=True)
def no_job_left_running(cluster: LocalCluster) -> Iterator[None]:
    """A test that failed half-way must not leave its job eating the shared cluster's CPUs."""
    yield
    cluster.stop_running_jobs()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, pairs_dir: Path) -> Iterator[S3Server]:
    """moto's S3 server with the test pairs under s3://editcaption/pairs/ and SFT records."""
    with moto_s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        for path in sorted(p for p in pairs_dir.rglob("*") if p.is_file()):
            client.put_object(
                Bucket=BUCKET, Key=f"pairs/{path.relative_to(pairs_dir)}", Body=path.read_bytes()
            )
        table = pa.Table.from_pylist(records(pairs_dir.parent / "sample"), schema=SFTRecord.arrow_schema())
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        client.put_object(Bucket=BUCKET, Key="sft/sft.parquet", Body=sink.getvalue().to_pybytes())
        yield server


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory: pytest.TempPathFactory, sample_pairs_dir: Path) -> Path:
    """The 30 sample pairs plus two bad ones (an empty file, a missing target)."""
    root = tmp_path_factory.mktemp("cluster-pairs")
    sample = root / "sample"
    shutil.copytree(sample_pairs_dir, sample)
    pairs = root / "pairs"
    for name in PAIRS:
        shutil.copytree(sample / name, pairs / name)
    (pairs / "zz-empty").mkdir()
    (pairs / "zz-empty" / "source.png").write_bytes(b"")
    (pairs / "zz-empty" / "target.png").write_bytes((sample / PAIRS[0] / "target.png").read_bytes())
    (pairs / "zz-lonely").mkdir()
    (pairs / "zz-lonely" / "source.png").write_bytes((sample / PAIRS[0] / "source.png").read_bytes())
    return pairs


@pytest.fixture(scope="module")
def scorer_url() -> Iterator[str]:
    with fake_editscore_server() as url:
        yield url


def run_locally(args: list[str], tmp: Path, timeout_s: float = 900) -> None:
    """`editcaption <args>` as a user runs it on one machine: its own local Ray, in its own temp dir."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rl-"))  # short: Ray's socket paths live under it
    env = {**PATIENT_RAY_ENV, **os.environ, "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "editcaption", *args, "--verbose"],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        assert done.returncode == 0, done.stderr[-4000:]
    finally:
        kill_ray_session(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def local_synthesis(tmp_path_factory: pytest.TempPathFactory, pairs_dir: Path, scorer_url: str) -> Path:
    """The reference: the same synthesis run on one machine, no cluster."""
    tmp = tmp_path_factory.mktemp("local-synthesis")
    config = tmp / "job.yaml"
    config.write_text(yaml.safe_dump(synthesis_config(str(pairs_dir), str(tmp / "out"), scorer_url, False)))
    run_locally(["synthesize", "--config", str(config)], tmp)
    return tmp / "out"


def write_config(tmp: Path, name: str, data: dict) -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


def shard_rows(fs: Any, root: str) -> list[dict[str, Any]]:
    """Every row of every committed shard (a pair in two shards shows up twice)."""
    rows = []
    for path in sorted(p for p in fs.ls(root, detail=False) if Path(p).name.startswith("shard-")):
        with fs.open(path, "rb") as f:
            rows += pq.read_table(f, columns=COMPARED).to_pylist()
    return rows


def s3_fs(s3: S3Server) -> Any:
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3.endpoint}, key="test", secret="test")


def local_rows(out: Path) -> list[dict[str, Any]]:
    import fsspec

    return shard_rows(fsspec.filesystem("file"), str(out / "pairs"))


def by_pair(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["pair_id"]: r for r in rows}


def engine_actors(cluster: LocalCluster, submission_id: str, alive: bool) -> list[dict[str, Any]]:
    """The job's Ray Data actors that asked for a gpu-1x node (engine replicas), live ones or all."""
    job_id = cluster.job(submission_id)["job_id"]
    if job_id is None:  # a pending job has no Ray job id yet
        return []
    actors = cluster.state("actors", job_id=job_id)
    return [
        a
        for a in actors
        if "MapWorker" in a["class_name"]  # Ray 2.60 names it MapWorker(MapBatches(GroupedCall))
        and (a.get("required_resources") or {}).get("gpu-1x")
        and (a["state"] == "ALIVE" or not alive)
    ]


def _job_seconds(job: dict[str, Any]) -> float:
    return round((job["end_time"] - job["start_time"]) / 1000, 1)


def wait_for(condition: Any, what: str, timeout_s: float = 600, every_s: float = 0.5) -> Any:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise TimeoutError(f"gave up waiting for {what} after {timeout_s} s")


def _ended(cluster: LocalCluster, submission_id: str) -> None:
    """For a wait on something the job should do while running: fail at once if it ended first."""
    job = cluster.job(submission_id)
    if job["status"] not in ("PENDING", "RUNNING"):
        raise AssertionError(f"job {submission_id} ended ({job['status']}) before the node was lost: {job}")


def succeeded(cluster: LocalCluster, submission_id: str, timeout_s: float = 900) -> dict[str, Any]:
    job = cluster.wait_job(submission_id, timeout_s)
    assert job["status"] == "SUCCEEDED", f"{job['message']}\n{cluster.job_logs(submission_id)[-6000:]}"
    return job


# ---------------------------------------------------------------------- tests


def test_the_cluster_has_separate_nodes_with_gpu_standins(cluster: LocalCluster) -> None:
    nodes = cluster.alive_nodes()
    assert len(nodes) == 3 and sum(n["is_head_node"] for n in nodes) == 1
    gpu_nodes = {n["node_id"] for n in nodes if n["resources_total"].get("gpu-1x") == 1}
    assert gpu_nodes == {cluster.node_id("gpu-a"), cluster.node_id("gpu-b")}
    assert len({cluster.raylet_pid(n) for n in cluster.nodes}) == 3  # one raylet process per node


WHERE = """
import json, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init()

@ray.remote(num_cpus=0)
def where() -> list[str]:
    import shipped  # from the job's working dir, as unpacked on the node that runs this task
    return [ray.get_runtime_context().get_node_id(), shipped.__file__]

nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
on = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)) for n in nodes]
print("WHERE " + json.dumps(ray.get([task.remote() for task in on])))
"""


@pytest.mark.timeout(600)
def test_each_node_imports_a_jobs_working_dir_from_its_own_copy(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """Ray's working-dir plugin re-unpacks a job's package (rmtree, then unzip) on every node that starts
    work for the job. Nodes sharing one session dir (`ray start` worker nodes take the head's temp dir
    unless given their own) deleted files under each other's running workers: `No module named ...` in
    benchmarks/cluster.py, 6 Dec. Each node must import the job's code from its own copy, under its own
    temp dir (without `LocalCluster`'s per-node `--temp-dir` all three paths are one)."""
    (tmp_path / "shipped.py").write_text("")
    (tmp_path / "where.py").write_text(WHERE)
    job = cluster.submit_job(["python", "where.py"], "where", tmp_path)
    succeeded(cluster, job, 300)
    logs = cluster.job_logs(job)
    places = dict(json.loads(next(line[6:] for line in logs.splitlines() if line.startswith("WHERE "))))
    temp_dirs = {cluster.node_id(n): "ray" if n == HEAD else f"n-{n}" for n in cluster.nodes}
    assert set(places) == {n["node_id"] for n in cluster.alive_nodes()} and len(places) == 3
    assert len({Path(f).parent for f in places.values()}) == 3, places  # three copies
    for node_id, file in places.items():
        assert Path(file).relative_to(cluster.root).parts[0] == temp_dirs[node_id], places


@pytest.mark.timeout(1200)
def test_synthesis_job_on_s3_survives_losing_the_engine_node_and_equals_the_local_run(
    cluster: LocalCluster, s3: S3Server, local_synthesis: Path, scorer_url: str, tmp_path: Path
) -> None:
    """Submitted with `ray job submit`, reading pairs from and committing shards to S3. Once the engine
    actor has loaded its model, the raylet of its node is SIGKILLed while the job runs: Ray Data restarts
    the actor on the other gpu-1x node and retries the lost work, and the job finishes. Every pair is in
    exactly one shard, the result equals the one-machine run's pair by pair (status, greedy
    instruction), engine actors ran only on gpu-1x nodes and light stages elsewhere too. A replacement
    node joins after. (A kill after the first shard raced the end of so small a job; a committed shard
    surviving a killed run is the resubmit test's part.)"""
    output = f"s3://{BUCKET}/synthesis"
    config = write_config(
        tmp_path, "job.yaml", synthesis_config(f"s3://{BUCKET}/pairs", output, scorer_url, on_cluster=True)
    )
    entrypoint = ["python", "ray_jobs/synthesize.py", "--config", str(config), "--verbose"]
    gpu_nodes = {cluster.node_id("gpu-a"), cluster.node_id("gpu-b")}
    job = cluster.submit_job(entrypoint, "synthesis-node-loss", ROOT, {**JOB_ENV, **s3.env()})
    try:
        engine = wait_for(
            lambda: engine_actors(cluster, job, alive=True) or _ended(cluster, job),
            "the engine actor",
            every_s=0.2,
        )[0]
        node = next(n for n in cluster.nodes if n != HEAD and cluster.node_id(n) == engine["node_id"])
        before = set(s3.keys(BUCKET, "synthesis/pairs/shard-"))
        killed_at = cluster.kill_node(node)
        # Recovery: to the first shard committed once the engine is back on the other node (a shard
        # committed sooner can hold pairs the lost engine had answered).
        wait_for(
            lambda: (
                [a for a in engine_actors(cluster, job, alive=True) if a["node_id"] != engine["node_id"]]
                or _ended(cluster, job)
            ),
            "the engine back on the other node",
            every_s=0.2,
        )
        replaced_at, before_replaced = time.time(), set(s3.keys(BUCKET, "synthesis/pairs/shard-"))
        wait_for(
            lambda: set(s3.keys(BUCKET, "synthesis/pairs/shard-")) - before_replaced or _ended(cluster, job),
            "a shard committed after the engine came back",
            every_s=0.2,
        )
        recovered_at = time.time()
        result = cluster.wait_job(job, 900)
    finally:
        cluster.add_node(NodeSpec("gpu-c", 2, GPU))  # the later tests need two gpu-1x nodes again
    assert result["status"] == "SUCCEEDED", f"{result['message']}\n{cluster.job_logs(job)[-6000:]}"
    assert set(s3.keys(BUCKET, "synthesis/pairs/shard-")) - before, "shards were committed after the loss"
    report(
        "synthesis_node_loss",
        engine_back_s=round(replaced_at - killed_at, 1),
        recovery_s=round(recovered_at - killed_at, 1),
        job_seconds=_job_seconds(result),
    )

    fs = s3_fs(s3)
    rows = shard_rows(fs, f"{BUCKET}/synthesis/pairs")
    assert sorted(r["pair_id"] for r in rows) == sorted(PAIRS + BAD)  # all there, none twice
    assert by_pair(rows) == by_pair(local_rows(local_synthesis))
    assert any(r["best_instruction"] for r in rows), "greedy instructions are real sentences"
    summary = json.loads(fs.cat_file(f"{BUCKET}/synthesis/summary.json"))
    assert summary["kept"] + summary["filtered"] + summary["quarantined"] == len(PAIRS + BAD)

    # Ray restarts an actor under its own id: its record now names the node it restarted on.
    engines = engine_actors(cluster, job, alive=False)
    assert engines and {a["node_id"] for a in engines} <= gpu_nodes
    restarted = {a["actor_id"]: a for a in engines}[engine["actor_id"]]
    assert int(restarted["num_restarts"]) >= 1 and restarted["node_id"] != engine["node_id"], restarted
    light = [t for t in cluster.state("tasks", job_id=result["job_id"]) if t["type"] == "NORMAL_TASK"]
    assert light and {t["node_id"] for t in light} - gpu_nodes, "light stages ran on the head too"


# `make test-extra`: CI's budget. Resuming from shards is CI-tested on one machine
# (test_synthesis.py::test_killed_run_resumes_with_every_pair_exactly_once), shards on S3 by the node-loss test above.
@pytest.mark.ci_extra
@pytest.mark.timeout(1800)
def test_synthesis_job_killed_and_resubmitted_resumes_from_its_shards_on_s3(
    cluster: LocalCluster, s3: S3Server, local_synthesis: Path, scorer_url: str, tmp_path: Path
) -> None:
    """The job's driver is SIGKILLed after the first shard on S3 (Ray cannot recover a lost driver); the
    same command resubmitted resumes from the shards there: every pair in exactly one shard, equal to
    the one-machine run."""
    output = f"s3://{BUCKET}/synthesis-resumed"
    config = write_config(
        tmp_path, "job.yaml", synthesis_config(f"s3://{BUCKET}/pairs", output, scorer_url, on_cluster=True)
    )
    entrypoint = ["python", "ray_jobs/synthesize.py", "--config", str(config), "--verbose"]
    env = {**JOB_ENV, **s3.env()}
    first = cluster.submit_job(entrypoint, "synthesis-first", ROOT, env)
    wait_for(lambda: s3.keys(BUCKET, "synthesis-resumed/pairs/shard-"), "the first committed shard on S3")
    pid = wait_for(lambda: (cluster.job(first).get("driver_info") or {}).get("pid"), "the driver's pid")
    os.kill(int(pid), 9)
    killed = cluster.wait_job(first, 300)
    assert killed["status"] == "FAILED", killed

    second = cluster.submit_job(entrypoint, "synthesis-resubmitted", ROOT, env)
    succeeded(cluster, second)

    fs = s3_fs(s3)
    rows = shard_rows(fs, f"{BUCKET}/synthesis-resumed/pairs")
    assert sorted(r["pair_id"] for r in rows) == sorted(PAIRS + BAD)  # all there, none twice
    assert by_pair(rows) == by_pair(local_rows(local_synthesis))
    summary = json.loads(fs.cat_file(f"{BUCKET}/synthesis-resumed/summary.json"))
    assert 0 < summary["resumed_pairs"] < len(PAIRS + BAD)


def eval_config(uri: str, output: str, on_cluster: bool) -> dict:
    engine = {"backend": "transformers", "model": str(ANNOTATOR), "max_pixels": 128 * 128, "batch_size": 2}
    if on_cluster:
        engine["resources"] = GPU
    return {
        "captioners": [{"name": "miniature", "engine": engine, "sampling": {"max_tokens": 16}}],
        "benchmarks": [{"name": "cluster-pairs", "format": "eval-n", "uri": uri}],
        "output": output,
        "pairs_per_batch": 2,
    }


# `make test-extra`: CI's budget. The eval job runs in CI on one machine (test_eval_job.py), a job on the
# cluster reading and writing S3 in the synthesis node-loss test above.
@pytest.mark.ci_extra
@pytest.mark.timeout(1800)
def test_eval_job_reads_and_writes_s3_and_equals_the_local_run(
    cluster: LocalCluster, s3: S3Server, pairs_dir: Path, tmp_path: Path
) -> None:
    """The eval job submitted to the cluster reads its benchmark from S3 and writes its tables and
    report there; its greedy instructions and quarantine equal a one-machine run's on local files."""
    local = tmp_path / "local"
    local.mkdir()
    config = write_config(local, "eval.yaml", eval_config(str(pairs_dir), str(local / "out"), False))
    run_locally(["eval", "--config", str(config)], local)

    config = write_config(
        tmp_path, "eval-s3.yaml", eval_config(f"s3://{BUCKET}/pairs", f"s3://{BUCKET}/eval", True)
    )
    entrypoint = ["python", "ray_jobs/evaluate.py", "--config", str(config), "--verbose"]
    succeeded(cluster, cluster.submit_job(entrypoint, "eval", ROOT, {**JOB_ENV, **s3.env()}))

    fs = s3_fs(s3)
    assert {"instructions.parquet", "metrics.json", "report.md", "report.html"} <= {
        Path(p).name for p in fs.ls(f"{BUCKET}/eval")
    }

    def table(path: Any, opener: Any) -> dict[str, Any]:
        with opener(path, "rb") as f:
            return {r["pair_id"]: r for r in pq.read_table(f).to_pylist()}

    remote = table(f"{BUCKET}/eval/instructions.parquet", fs.open)
    here = table(local / "out" / "instructions.parquet", open)
    assert sorted(remote) == sorted(PAIRS)
    assert {k: r["instruction"] for k, r in remote.items()} == {k: r["instruction"] for k, r in here.items()}
    assert sum(bool(r["instruction"]) for r in remote.values()) >= len(PAIRS) // 2
    quarantined = table(f"{BUCKET}/eval/quarantine.parquet", fs.open)
    assert sorted(quarantined) == sorted(BAD) == sorted(table(local / "out" / "quarantine.parquet", open))


def sft_config(tmp: Path, name: str, **changes: Any) -> dict:
    """One Ray Train worker on a gpu-1x node, checkpoints and the final model on S3."""
    return {
        "model": str(ANNOTATOR),
        "input": f"s3://{BUCKET}/sft/sft.parquet",
        "output": f"s3://{BUCKET}/models/{name}",
        "name": name,
        "storage_path": f"s3://{BUCKET}/train",
        "scratch_dir": str(tmp / "scratch"),
        "deepspeed": "none",
        "bf16": False,
        "min_pixels": 1024,
        "max_pixels": 128 * 128,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "max_steps": 2,
        "per_device_train_batch_size": 1,
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "checkpoint": {"save_steps": 1, "keep": None},
        "workers": {"num_workers": 1, "cpus_per_worker": 1, "resources_per_worker": GPU, "max_failures": 2},
        **changes,
    }


# `make test-extra`: CI's budget. Resuming a Ray Train run from its last checkpoint is CI-tested on one
# machine (test_train_ray.py::test_killed_run_resumes_from_its_last_checkpoint).
@pytest.mark.ci_extra
@pytest.mark.timeout(1800)
def test_sft_job_on_s3_restarts_after_losing_its_node_and_resumes_with_resume(
    cluster: LocalCluster, s3: S3Server, tmp_path: Path
) -> None:
    """SFT submitted with `storage_path` on S3, a checkpoint every step, 4 steps: once checkpoint 1 is
    recorded, the node running the Ray Train worker is SIGKILLed, and Ray Train (FailureConfig) restarts
    the worker on another gpu-1x node from the last checkpoint in S3; the job finishes all its steps.
    The same command resubmitted with `--resume` and one more step continues from step 4 there."""
    fs = s3_fs(s3)
    run = f"{BUCKET}/train/sft-node-loss"
    output = f"{BUCKET}/models/sft-node-loss"
    config = write_config(tmp_path, "sft.yaml", sft_config(tmp_path, "sft-node-loss", max_steps=4))
    entrypoint = ["python", "ray_jobs/train_sft.py", "--config", str(config), "--verbose"]
    env = {**JOB_ENV, **s3.env()}
    job = cluster.submit_job(entrypoint, "sft-node-loss", ROOT, env)
    seen: list[tuple[float, int]] = []

    def newest() -> int:
        steps = registered(fs, run)
        if steps and (not seen or steps[-1] != seen[-1][1]):
            seen.append((time.time(), steps[-1]))
        return steps[-1] if steps else 0

    wait_for(lambda: newest() >= 1 or _ended(cluster, job), "checkpoint 1", timeout_s=900)
    worker = wait_for(
        lambda: [a for a in cluster.state("actors", job_id=cluster.job(job)["job_id"])
                 if a["class_name"] == "RayTrainWorker" and a["state"] == "ALIVE"],
        "the training worker",
    )[0]  # fmt: skip
    node = next(n for n in cluster.nodes if n != HEAD and cluster.node_id(n) == worker["node_id"])
    try:
        killed_at = cluster.kill_node(node)
        at_kill = newest()
        wait_for(lambda: newest() == 4 or cluster.job(job)["status"] != "RUNNING", "checkpoint 4")
        result = cluster.wait_job(job, 900)
    finally:
        cluster.add_node(NodeSpec(f"{node}-again", 2, GPU))  # Serve's two replicas need two gpu-1x nodes
    assert result["status"] == "SUCCEEDED", f"{result['message']}\n{cluster.job_logs(job)[-6000:]}"
    final = json.loads(fs.cat_file(f"{output}/training_summary.json"))["metrics"]
    restarted_at = final["resumed_from_step"]
    assert final["step"] == 4 and 1 <= at_kill <= restarted_at < 4, (at_kill, final)
    assert checkpoints(fs, run) == [1, 2, 3, 4]
    # Recovery: from the kill to the first checkpoint the restarted worker recorded (a checkpoint the
    # dying worker was still writing can land after the kill; it is the one the restart resumes from).
    first_after_restart = next(t for t, step in seen if step > restarted_at)
    report(
        "sft_node_loss",
        recovery_s=round(first_after_restart - killed_at, 1),
        checkpoint_at_kill=at_kill,
        resumed_from_step=restarted_at,
        job_seconds=_job_seconds(result),
    )

    resumed = [*entrypoint, "--resume", "--set", "max_steps=5"]
    succeeded(cluster, cluster.submit_job(resumed, "sft-resumed", ROOT, env))
    final = json.loads(fs.cat_file(f"{output}/training_summary.json"))["metrics"]
    assert final["step"] == 5 and final["resumed_from_step"] == 4, final
    assert checkpoints(fs, run) == [1, 2, 3, 4, 5]
    assert fs.exists(f"{output}/model.safetensors")


def checkpoints(fs: Any, run: str) -> list[int]:
    fs.invalidate_cache()  # s3fs keeps a folder's listing: the second job's checkpoint was missed
    names = [Path(p).name for p in fs.ls(run, detail=False)]
    return sorted(int(n.split("-")[1]) for n in names if n.startswith("checkpoint-"))


def registered(fs: Any, run: str) -> list[int]:
    """Steps Ray Train has recorded as persisted (its snapshot lists finished checkpoints only)."""
    path = f"{run}/checkpoint_manager_snapshot.json"
    fs.invalidate_cache()
    if not fs.exists(path):
        return []
    text = fs.cat_file(path).decode()
    return sorted({int(part[:7]) for part in text.split("checkpoint-")[1:] if part[:7].isdigit()})


# `make test-extra`: CI's budget (6-7 min: two vLLM replicas start on a loaded machine). CI serves the same
# captioner app on one machine (test_serve.py) and checks node autoscaling (test_ray_autoscaling.py).
@pytest.mark.ci_extra
@pytest.mark.timeout(1800)
def test_serve_autoscales_from_one_to_two_replicas_and_back(cluster: LocalCluster, tmp_path: Path) -> None:
    """`serve deploy` through the dashboard: the captioner engine deployment (min 1, max 2 replicas,
    each on a gpu-1x node) reaches 2 replicas under a steady load of concurrent requests and returns to
    1 once the load stops."""
    import httpx

    config = yaml.safe_load((ROOT / "serve_configs" / "captioner.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["args"]["captioner"]["engine"].update(model=str(ANNOTATOR), max_pixels=128 * 128, resources=GPU)
    for deployment in app["deployments"]:
        if deployment["name"] == "Captioner":
            deployment["autoscaling_config"] = {
                "min_replicas": 1,
                "max_replicas": 2,
                "target_ongoing_requests": 2,
                "upscale_delay_s": 2,
                "downscale_delay_s": 10,
                "look_back_period_s": 11,  # must exceed the 10 s metrics interval
            }
    path = write_config(tmp_path, "serve.yaml", config)
    serve = [str(Path(sys.executable).parent / "serve"), "--address", cluster.dashboard_url]
    env = cluster.client_env()
    subprocess.run([serve[0], "deploy", str(path), *serve[1:]], env=env, check=True, timeout=300)
    timeline: list[tuple[float, int]] = []
    replica_nodes: set[str] = set()

    def replicas() -> int:
        apps = cluster.api("/api/serve/applications/")["applications"]
        deployment = apps.get("captioner", {}).get("deployments", {}).get("Captioner", {})
        running = [r for r in deployment.get("replicas", []) if r["state"] == "RUNNING"]
        replica_nodes.update(r["node_id"] for r in running)
        if not timeline or timeline[-1][1] != len(running):
            timeline.append((time.time(), len(running)))
        return len(running)

    try:
        wait_for(lambda: replicas() == 1 and _ready(f"http://127.0.0.1:{port}"), "the first replica", 900, 2)
        pair = ANNOTATOR.parent.parent / "sample_pairs" / PAIRS[0]
        files = {
            name: (f"{name}.png", (pair / f"{name}.png").read_bytes(), "image/png")
            for name in ("source", "target")
        }
        stop = time.time() + 900
        answered = []

        def load() -> None:
            with httpx.Client(timeout=300) as client:
                while time.time() < stop:
                    reply = client.post(
                        f"http://127.0.0.1:{port}/v1/instructions", files=files, data={"length": "short"}
                    )
                    answered.append(reply.status_code)

        threads = [threading.Thread(target=load, daemon=True) for _ in range(8)]
        for thread in threads:
            thread.start()
        started = time.time()
        wait_for(lambda: replicas() == 2, "a second replica under load", 900, 1)
        scaled_up_s = time.time() - started
        stop = time.time()  # end the load
        for thread in threads:
            thread.join(timeout=330)
        ended = time.time()
        wait_for(lambda: replicas() == 1, "the return to one replica", 600, 1)
        report(
            "serve_autoscaling",
            up_after_load_s=round(scaled_up_s, 1),
            down_after_load_s=round(time.time() - ended, 1),
            timeline=[(round(t - timeline[0][0], 1), n) for t, n in timeline],
        )
        assert answered and set(answered) <= {200, 503}, sorted(set(answered))
        assert answered.count(200) > 0
        gpu_nodes = {cluster.node_id(n) for n in cluster.nodes if n != HEAD}
        assert len(replica_nodes) == 2 and replica_nodes <= gpu_nodes, "one replica per gpu-1x node"
    finally:
        subprocess.run([serve[0], "shutdown", "-y", *serve[1:]], env=env, timeout=300)


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
