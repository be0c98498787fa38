"""A real S3-compatible server on loopback for the object-store tests: moto's server, as a child process.

moto[server] is in the dev extras, so a test that needs it fails when it cannot start (missing package,
port taken, server crash) instead of skipping: the tests it serves are the only proof that our jobs
read and write object storage.

Clients reach it the way a user reaches MinIO or any S3-compatible store: through the standard AWS
environment variables (`AWS_ENDPOINT_URL` and keys), which botocore/s3fs and pyarrow (Ray Train's
storage) both read, so the same variables travel to Ray workers in a job's runtime_env.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
from serve_process import stop_process

from editcaption.local_cluster import free_port


@dataclass
class S3Server:
    endpoint: str
    log: Path

    def env(self) -> dict[str, str]:
        """What a client process (or a Ray job's runtime_env) needs to use this server as S3."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):  # noqa: ANN201 - boto3's client type is generated at run time
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


@contextlib.contextmanager
def moto_s3_server(log: Path, timeout_s: float = 60) -> Iterator[S3Server]:
    """Start `python -m moto.server` on a free loopback port, yield it, stop it; raise if it never answers.

    Never imported here: moto's server is Flask, whose unbound `current_app`/`request` proxies raise a
    RuntimeError on any attribute probe, and vLLM's CPU platform probes every module's globals when an
    in-process engine starts, so a test process that had imported it could not start one afterwards."""
    if importlib.util.find_spec("flask") is None or importlib.util.find_spec("moto.server") is None:
        raise RuntimeError(
            "moto's S3 server needs moto[server] (a dev dependency): pip install 'moto[server]'"
        )

    port = free_port()
    out = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"moto's S3 server exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"moto's S3 server did not listen within {timeout_s} s:\n{log.read_text()}"
                )
            time.sleep(0.2)
        yield S3Server(endpoint=f"http://127.0.0.1:{port}", log=log)
    finally:
        stop_process(proc, timeout=10)
        out.close()
