"""Ray's autoscaler, for real, with its fake multi-node provider on this machine.

The head runs the autoscaler (`ray start --head --autoscaling-config`, `RAY_FAKE_CLUSTER=1`); the
provider starts and stops worker raylets on this machine instead of cloud VMs. A synthesis job submitted
to a cluster with no worker node asks for two engine actors on `gpu-1x` nodes (the custom resource
that stands for a 1-GPU node type; no GPU exists here): the autoscaler adds nodes for that demand, up to
the node type's `max_workers`, the job finishes, and the idle nodes are removed after `idle_timeout`.
The scorer is the EditScore stand-in (`fake_editscore.py`), as everywhere without a GPU.

The job is submitted without `--working-dir` (it imports the installed package): the fake provider's
nodes share the head's session directory, and Ray's working-dir plugin unpacks the package afresh on
every node that joins (`overwrite=True`), so a node added mid-job deleted the files under the running
workers (`No module named editcaption.io.loading`, 6 Dec). Real nodes have their own disks, and so do
the nodes `LocalCluster` starts itself (tests/test_local_cluster.py); the fake provider's cannot be
given one.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml
from cluster_jobs import JOB_ENV, PAIRS, ROOT, report, synthesis_config
from fake_editscore import fake_editscore_server

from editcaption.local_cluster import LocalCluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

MAX_WORKERS = 2
IDLE_TIMEOUT_MINUTES = 0.25


def autoscaling_config() -> dict:
    """A cluster-launcher config for the fake provider: the head, and a gpu-1x node type from 0 to 2."""
    return {
        "cluster_name": "editcaption-fake",
        "max_workers": MAX_WORKERS,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 2}, "node_config": {}, "max_workers": 0},
            "gpu-1x": {
                "resources": {"CPU": 2, "gpu-1x": 1, "object_store_memory": 128 * 1024 * 1024},
                "node_config": {},
                "min_workers": 0,
                "max_workers": MAX_WORKERS,
            },
        },
        "head_node_type": "ray.head.default",
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
        "upscaling_speed": 1.0,
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@pytest.mark.timeout(1800)
def test_autoscaler_adds_gpu_nodes_for_the_engines_and_removes_them_when_idle(
    tmp_path: Path, sample_pairs_dir: Path
) -> None:
    pairs = tmp_path / "pairs"
    for name in PAIRS[::8]:  # four pairs of four kinds
        shutil.copytree(sample_pairs_dir / name, pairs / name)
    timeline: list[tuple[float, int]] = []
    watching = threading.Event()

    with (
        fake_editscore_server() as scorer,
        LocalCluster(head_cpus=2, autoscaling_config=autoscaling_config()) as cluster,
    ):
        cluster.start()

        def workers() -> int:
            return sum(not n["is_head_node"] for n in cluster.alive_nodes())

        def watch() -> None:
            while not watching.is_set():
                timeline.append((time.time(), workers()))
                time.sleep(1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            config = synthesis_config(str(pairs), str(tmp_path / "out"), scorer, on_cluster=True)
            config["annotator"]["replicas"] = MAX_WORKERS
            path = tmp_path / "job.yaml"
            path.write_text(yaml.safe_dump(config))
            script = str(ROOT / "ray_jobs" / "synthesize.py")
            entrypoint = ["python", script, "--config", str(path), "--verbose"]
            job = cluster.submit_job(entrypoint, "synthesis-autoscaled", None, JOB_ENV)
            result = cluster.wait_job(job, 1200)
            assert result["status"] == "SUCCEEDED", f"{result['message']}\n{cluster.job_logs(job)[-6000:]}"
            ended = time.time()
            deadline = ended + 600
            while time.time() < deadline and (not timeline or timeline[-1][0] < ended or timeline[-1][1] > 0):
                time.sleep(1)
            last_work = last_task_end_by_worker_node(cluster)
        finally:
            watching.set()
            watcher.join(timeout=30)

    counts = [n for _, n in timeline]
    assert counts[0] == 0, "the job started on a cluster without worker nodes"
    assert max(counts) == MAX_WORKERS, f"scaled up to max_workers: {counts}"
    assert counts[-1] == 0, f"scaled back down after the idle timeout: {counts}"
    up = next(t for t, n in timeline if n == MAX_WORKERS)
    down = next(t for t, n in timeline if t > ended and n == 0)
    first_down = next(t for t, n in timeline if t > up and n < MAX_WORKERS)
    # A node can go only once it is idle: its actors gone, so after the last task that ran on it ended.
    # The first node removed went at least the idle timeout after the earliest of those ends (15.9 s for
    # 15 here; 0.8 of it asserted, room for how the autoscaler samples idle time). Neither the job's end
    # nor the last shard bounds it: the driver, the scorer and the writer go on after an engine node is
    # idle (7 Dec, a slow machine: a node went 7 s after the last shard).
    assert len(last_work) == MAX_WORKERS, f"tasks ran on {len(last_work)} worker nodes: {last_work}"
    earliest_idle = min(last_work.values())
    report(
        "autoscaling",
        seconds_to_max_workers=round(up - timeline[0][0], 1),
        seconds_to_zero_after_job=round(down - ended, 1),
        seconds_to_first_removal_after_a_node_was_idle=round(first_down - earliest_idle, 1),
        idle_timeout_s=IDLE_TIMEOUT_MINUTES * 60,
        timeline=_changes(timeline),
    )
    assert first_down - earliest_idle >= IDLE_TIMEOUT_MINUTES * 60 * 0.8, (
        "a node was removed before it had been idle for about the idle timeout"
    )


def last_task_end_by_worker_node(cluster: LocalCluster) -> dict[str, float]:
    """When the last task that ran on each worker node (head excluded) ended, in `time.time()` seconds,
    from Ray's state API (task events stay in the GCS after their node is gone)."""
    workers = {n["node_id"] for n in cluster.state("nodes") if not n["is_head_node"]}
    ends: dict[str, float] = {}
    for task in cluster.state("tasks"):
        node, end = task.get("node_id"), task.get("end_time_ms")
        if node in workers and end:
            ends[node] = max(ends.get(node, 0.0), end / 1000)
    return ends


def _changes(timeline: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """(seconds since start, workers) at each change."""
    start = timeline[0][0]
    out = []
    for t, n in timeline:
        if not out or out[-1][1] != n:
            out.append((round(t - start, 1), n))
    return out
