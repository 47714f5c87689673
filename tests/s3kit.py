"""A real S3 endpoint for tests: moto's standalone server on 127.0.0.1 (in this process, or as its own
process where a test kills it or turns authentication on), and the environment that points s3fs at it the
standard AWS way (AWS_ENDPOINT_URL and key variables; no file under ~/.aws is read)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def aws_env(endpoint: str, key: str = "testing") -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": key,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true"}


def make_bucket(endpoint: str) -> str:
    """A new, empty bucket on the server: each test gets its own."""
    import boto3

    name = f"eb-{uuid.uuid4().hex[:12]}"
    env = aws_env(endpoint)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=name)
    return name


def objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    """Every object in a bucket, by key."""
    import boto3

    c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing")
    keys = [o["Key"] for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])]
    return {k: c.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


class ThreadedServer:
    """moto's server on a thread of this process: starts in well under a second."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.stop()


class ProcessServer:
    """`python -m moto.server` as its own process, which a test can kill; `env` adds to its environment
    (INITIAL_NO_AUTH_ACTION_COUNT=0 makes it check credentials)."""

    def __init__(self, env: dict[str, str] | None = None, log: Path | None = None):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        out = open(log, "w") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     env=dict(os.environ, **(env or {})), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.kill()
        pytest.fail(f"moto's server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
