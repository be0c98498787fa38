"""A Ray cluster of several nodes on one machine: a head and worker raylets started with `ray start`.

The commands are the ones docs/cluster.md gives for a laptop; tests and `benchmarks/cluster.py` use this
to run jobs on real separate raylets (custom resources standing for GPU node types, node loss by
SIGKILL, the fake multi-node autoscaler). Everything here is private to one cluster, so it can run
beside other Ray sessions on a shared machine:

- its own ports (the GCS, the dashboard on loopback, each node's dashboard agent and Ray Client port are
  free ports picked here; Ray's defaults 6379 / 8265 / 52365 / 10001 may belong to someone else);
- its own temp dirs (`--temp-dir`, one per node as real nodes have their own disks, and `RAY_TMPDIR`
  so no `ray_current_cluster` file elsewhere is read or rewritten);
- its own token (`RAY_AUTH_MODE=token`, a fresh `RAY_AUTH_TOKEN`): Ray 2.60 turns token auth on for a
  head when `~/.ray/auth_token` exists but not for a joining node, which then cannot connect;
- a marker in the environment of every process it starts, which their children inherit, so `stop()`
  ends exactly this cluster's processes and never another Ray (`ray stop` would end them all).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER_ENV = "EDITCAPTION_LOCAL_CLUSTER"
NODE_ENV = "EDITCAPTION_LOCAL_NODE"
HEAD = "head"
START_ATTEMPTS = 3
# One `ray start` (a CPU-starved head took minutes); one that hangs is ended and retried.
START_TIMEOUT_S = 600
# A busy shared machine (CI beside a training run) starts processes slowly: Ray's defaults for the
# dashboard to come up, a raylet to register with the GCS and a worker process with its raylet ran out
# there. Worker processes start when work needs them, not one idle one per logical CPU at start-up.
PATIENT_RAY_ENV = {
    "RAY_DASHBOARD_STARTUP_TIMEOUT_S": "600",
    "RAY_raylet_start_wait_time_s": "600",
    "RAY_worker_register_timeout_seconds": "600",
    "RAY_enable_worker_prestart": "0",
    "RAY_prestart_worker_first_driver": "0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class NodeSpec:
    """One worker node: its name (for `kill_node`), logical CPUs and custom resources."""

    name: str
    num_cpus: int = 1  # `ray start --num-cpus` takes an integer
    resources: dict[str, float] = field(default_factory=dict)


class LocalCluster:
    """Head + worker raylets on this machine; `with LocalCluster(...) as cluster:` stops them after.

    `head_cpus=0` keeps work off the head as on KubeRay (the head only runs drivers: job entrypoints,
    the Ray Train controller, Serve's controller and proxy). `object_store_mb` is per node: each raylet
    would otherwise reserve 30% of the machine's memory for its store.
    """

    def __init__(
        self,
        head_cpus: int = 0,
        object_store_mb: int = 128,
        env: dict[str, str] | None = None,
        autoscaling_config: dict[str, Any] | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex[:8]
        # Short: Ray's Unix socket paths live under it and must stay under 108 bytes.
        self.root = Path(tempfile.gettempdir()) / f"raylc-{self.id}"
        self.object_store_bytes = object_store_mb * 1024 * 1024
        self.head_cpus = head_cpus
        self.autoscaling_config = autoscaling_config
        self.port = free_port()
        self.dashboard_port = free_port()
        self.token = secrets.token_hex(32)
        self.nodes: list[str] = []
        self._env = {
            **os.environ,
            **(env or {}),
            # `python` in a job's entrypoint is this interpreter, as on a cluster image.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "RAY_TMPDIR": str(self.root),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            MARKER_ENV: self.id,
        }
        for key, value in PATIENT_RAY_ENV.items():
            self._env.setdefault(key, value)
        self._env.pop("RAY_ADDRESS", None)

    # ------------------------------------------------------------------ addresses and clients

    @property
    def address(self) -> str:
        """The GCS address drivers join (`ray.init(address=...)`)."""
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        """The Jobs API (`ray job submit --address ...`), on loopback only."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def client_env(self) -> dict[str, str]:
        """Environment for a client process (`ray job submit`, `ray status`, a driver): the token, this
        cluster's temp dir, and no RAY_ADDRESS inherited from elsewhere."""
        return {k: v for k, v in self._env.items() if k not in (MARKER_ENV, NODE_ENV)}

    # ------------------------------------------------------------------ starting

    def start(self, workers: list[NodeSpec] = ()) -> LocalCluster:
        """Start the head (dashboard on loopback), then each worker node, and wait until all joined."""
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [
            "--head",
            f"--port={self.port}",
            f"--num-cpus={self.head_cpus}",
            f"--temp-dir={self.root / 'ray'}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
        ]
        env = {}
        if self.autoscaling_config is not None:
            config = self.root / "autoscaling.yaml"
            provider = {**self.autoscaling_config["provider"], "gcs_address": self.address}
            config.write_text(json.dumps({**self.autoscaling_config, "provider": provider}))
            cmd.append(f"--autoscaling-config={config}")
            env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        self._ray_start(HEAD, cmd, env)
        for spec in workers:
            self.add_node(spec)
        return self

    def add_node(self, spec: NodeSpec) -> None:
        """Start one more worker raylet and wait until the cluster counts it."""
        if spec.name in self.nodes or spec.name == HEAD:
            raise ValueError(f"a node named {spec.name!r} already exists")
        # Its own temp dir, as a real node has its own disk: Ray's working-dir plugin re-unpacks a job's
        # package (rmtree, then unzip) on each node that starts work for it, which in a shared session
        # dir deletes the files under the other nodes' running workers.
        cmd = [
            f"--address={self.address}",
            f"--num-cpus={spec.num_cpus}",
            f"--temp-dir={self.root / f'n-{spec.name}'}",
        ]
        if spec.resources:
            cmd.append(f"--resources={json.dumps(spec.resources)}")
        before = len(self.alive_nodes())
        self._ray_start(spec.name, cmd)
        self._wait(lambda: len(self.alive_nodes()) > before, f"node {spec.name} to join", timeout_s=600)

    def _ray_start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        """`ray start` for one node. Ray gives a new raylet 30 s (fixed) to register with the GCS; on a
        machine starved of CPU that can run out, so a failed start is cleaned up and tried again."""
        log = self.root / f"ray-start-{name}.log"
        for attempt in range(1, START_ATTEMPTS + 1):
            cmd = [
                str(Path(sys.executable).parent / "ray"),
                "start",
                *args,
                "--node-ip-address=127.0.0.1",
                f"--object-store-memory={self.object_store_bytes}",
                f"--dashboard-agent-listen-port={free_port()}",
                "--disable-usage-stats",
            ]
            with log.open("a") as out:
                out.write(f"--- attempt {attempt}: {' '.join(cmd)}\n")
                out.flush()
                try:
                    returncode = subprocess.run(
                        cmd,
                        env={**self._env, **(env or {}), NODE_ENV: name},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        timeout=START_TIMEOUT_S,
                    ).returncode
                except subprocess.TimeoutExpired:
                    out.write(f"--- attempt {attempt}: no answer after {START_TIMEOUT_S} s\n")
                    returncode = None
            if returncode == 0:
                self.nodes.append(name)
                return
            self._end(self.pids(name))  # whatever this attempt left running
        tail = log.read_text(errors="replace")[-3000:] + self._log_tails()
        self.stop()
        raise RuntimeError(f"`ray start` for node {name} failed {START_ATTEMPTS} times:\n{tail}")

    def _log_tails(self, lines: int = 15) -> str:
        """The last lines of each raylet's and GCS's log, for an error message (stop() removes them)."""
        out = []
        # Each node's own temp dir holds its session dir (and a `session_latest` link to it).
        for logs in sorted(self.root.glob("*/session_latest/logs")):
            for path in sorted(logs.glob("raylet*.out")) + sorted(logs.glob("gcs_server.out")):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"\n--- {logs.parent.parent.name}/{path.name}:\n" + "\n".join(text))
        return "".join(out)

    # ------------------------------------------------------------------ looking at it

    def alive_nodes(self) -> list[dict[str, Any]]:
        """The live nodes as the state API lists them (`node_id`, `resources_total`, `is_head_node`, ...)."""
        return [n for n in self.state("nodes") if n["state"] == "ALIVE"]

    def state(self, kind: str, **filters: str) -> list[dict[str, Any]]:
        """Ray's state API (`nodes`, `actors`, `tasks`, ...), dead entries included; `filters` are equalities."""
        params: list[tuple[str, Any]] = [("detail", 1), ("limit", 10_000)]
        for key, value in filters.items():
            params += [("filter_keys", key), ("filter_predicates", "="), ("filter_values", value)]
        return self.api(f"/api/v0/{kind}", params)["data"]["result"]["result"]

    def api(self, path: str, params: Any = None) -> Any:
        """GET a dashboard endpoint (state API, Jobs API, Serve API) with this cluster's token."""
        import httpx

        reply = httpx.get(
            self.dashboard_url + path,
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )
        reply.raise_for_status()
        return reply.json()

    # ------------------------------------------------------------------ jobs

    def submit_job(
        self,
        entrypoint: list[str],
        submission_id: str,
        working_dir: Path | None,
        env_vars: dict[str, str] | None = None,
    ) -> str:
        """`ray job submit --working-dir ... --no-wait -- <entrypoint>`, as docs/cluster.md runs jobs.

        `working_dir=None` uploads nothing: the job imports the installed package and the entrypoint
        must name its script by absolute path (for nodes that share one session directory, see
        tests/test_ray_autoscaling.py)."""
        cmd = [
            str(Path(sys.executable).parent / "ray"),
            "job",
            "submit",
            f"--address={self.dashboard_url}",
            f"--submission-id={submission_id}",
            *(["--working-dir=."] if working_dir is not None else []),
            f"--runtime-env-json={json.dumps({'env_vars': env_vars or {}})}",
            "--no-wait",
            "--",
            *entrypoint,
        ]
        done = subprocess.run(
            cmd,
            cwd=working_dir or self.root,
            env=self.client_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"`ray job submit` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return submission_id

    def job(self, submission_id: str) -> dict[str, Any]:
        """The Jobs API's record of a job: `status`, `driver_info` (its pid), `job_id`, times, message."""
        return self.api(f"/api/jobs/{submission_id}")

    def wait_job(self, submission_id: str, timeout_s: float = 900) -> dict[str, Any]:
        """Wait until the job ends (SUCCEEDED, FAILED or STOPPED) and return its record."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            job = self.job(submission_id)
            if job["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
                return job
            time.sleep(1)
        raise TimeoutError(
            f"job {submission_id} still {job['status']} after {timeout_s} s:\n{self.job_logs(submission_id)[-4000:]}"
        )

    def job_logs(self, submission_id: str) -> str:
        return self.api(f"/api/jobs/{submission_id}/logs")["logs"]

    def stop_running_jobs(self) -> list[str]:
        """Stop every job still pending or running (`ray job stop` for each); returns their submission ids.
        A test that failed half-way leaves no job running on a cluster the next test shares."""
        import httpx

        running = [
            j["submission_id"]
            for j in self.api("/api/jobs/")
            if j["status"] in ("PENDING", "RUNNING") and j.get("submission_id")
        ]
        for submission_id in running:
            httpx.post(
                f"{self.dashboard_url}/api/jobs/{submission_id}/stop",
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=60,
            ).raise_for_status()
        for submission_id in running:
            self.wait_job(submission_id, timeout_s=120)
        return running

    def node_id(self, node: str) -> str:
        """The Ray node id of a node this object started (read from its raylet's command line)."""
        cmdline = Path(f"/proc/{self.raylet_pid(node)}/cmdline").read_bytes().split(b"\0")
        for arg in cmdline:
            if arg.startswith(b"--node_id="):
                return arg.split(b"=", 1)[1].decode()
        raise LookupError(f"the raylet of {node!r} has no --node_id argument")

    def pids(self, node: str | None = None) -> list[int]:
        """Processes of this cluster (of one node's `ray start`, if named), found by their environment."""
        wanted = [f"{MARKER_ENV}={self.id}".encode()]
        if node is not None:
            wanted.append(f"{NODE_ENV}={node}".encode())
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if all(w in environ for w in wanted):
                found.append(int(proc.name))
        return found

    def raylet_pid(self, node: str) -> int:
        """The raylet of a node this object started."""
        for pid in self.pids(node):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    return pid
        raise LookupError(f"no raylet running for node {node!r}")

    # ------------------------------------------------------------------ failures and stopping

    def kill_node(self, node: str) -> float:
        """SIGKILL a worker node's raylet (a lost machine); returns when it was killed (time.time())."""
        if node == HEAD:
            raise ValueError("kill a worker node, not the head")
        os.kill(self.raylet_pid(node), signal.SIGKILL)
        killed_at = time.time()
        self.nodes.remove(node)
        return killed_at

    def stop(self, grace_s: float = 10) -> None:
        """End every process of this cluster (SIGTERM, then SIGKILL), and remove its temp dir."""
        self._end(self.pids(), grace_s)
        self.nodes.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def _end(self, pids: list[int], grace_s: float = 10) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.time() + grace_s
        while time.time() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.5)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _wait(self, done: Any, what: str, timeout_s: float = 120) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if done():
                return
            time.sleep(0.5)
        raise TimeoutError(f"gave up waiting for {what} after {timeout_s} s")

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
