"""Start or join Ray with resources that cannot deadlock a pipeline on a small machine.

Logical CPUs are a scheduling budget, not cores. Each vLLM engine actor and each Ray Data actor
reserves whole logical CPUs while it mostly waits; with `num_cpus` equal to a laptop's 2 cores, two
such actors leave nothing for the map tasks that feed them and the pipeline stalls forever. So a
local cluster gets at least `MIN_LOCAL_CPUS` logical CPUs, and our CPU map stages ask for a fraction
of one. On a real cluster (`address` set, or `RAY_ADDRESS`) Ray's own resources are used unchanged.

Fractional CPUs let up to 4 × 8 small tasks run at once, and each needs its own Python worker process
(~60 MB, seconds of a core to start): on a 2-core machine the synthesis job had 14 idle workers at its
peak at 10× input against a handful at 1×. So the read and validate stages run at most one task per
physical core (`local_task_concurrency`) when we started Ray here; a cluster keeps Ray's scheduling.

Ray records a driver's whole command line as its job's entrypoint (shown by `ray list jobs` and the
dashboard), so a store URL with a password typed on the command line would be kept there: the
entrypoint is recorded with credentials masked (`redaction.redact_text`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

MIN_LOCAL_CPUS = 8
_started_locally = False


def local_cpus(physical: int | None = None) -> int:
    """Logical CPUs for a local Ray: the physical count, but never fewer than MIN_LOCAL_CPUS."""
    return max(physical or os.cpu_count() or 1, MIN_LOCAL_CPUS)


def local_task_concurrency() -> int | None:
    """Most concurrent tasks per CPU-light stage: the physical cores if this process started a local
    Ray, else None (Ray decides)."""
    return (os.cpu_count() or 1) if _started_locally else None


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local Ray sized by `local_cpus`."""
    import ray

    if ray.is_initialized():
        return
    global _started_locally
    address = address or os.environ.get("RAY_ADDRESS")
    _started_locally = not address
    with _redacted_entrypoint():
        if address:
            ray.init(address=address, log_to_driver=True)
            return
        # Local workers inherit this process's environment (offline flags, VLLM_CPU_KVCACHE_SPACE, ...).
        ray.init(num_cpus=num_cpus or local_cpus(), include_dashboard=False)


@contextlib.contextmanager
def shutdown_if_started() -> Iterator[None]:
    """Shut Ray down after the block only if it was not running before: a command ends the Ray it
    started, and leaves alone one its caller (a notebook, a test session) had running."""
    import ray

    running = ray.is_initialized()
    try:
        yield
    finally:
        if not running:
            ray.shutdown()


@contextlib.contextmanager
def _redacted_entrypoint() -> Iterator[None]:
    """While Ray starts, the command line it records as the job's entrypoint has its secrets masked.
    Ray 2.60 reads it through `ray._private.utils.get_entrypoint_name`; should that move, Ray records
    the plain command line and `tests/test_secrets.py` fails."""
    from ray._private import utils

    from editcaption.redaction import redact_text

    original = getattr(utils, "get_entrypoint_name", None)
    if original is None:
        yield
        return
    utils.get_entrypoint_name = lambda: redact_text(original())
    try:
        yield
    finally:
        utils.get_entrypoint_name = original
