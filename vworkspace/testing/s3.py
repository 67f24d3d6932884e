"""An S3 endpoint on 127.0.0.1: SeaweedFS's ``weed mini``, the real one, for Velero and the tests.

``weed`` is built by ``scripts/build-backup-controllers.sh`` into the same cache as
kube-apiserver (the SeaweedFS module's pseudo-version the script pins, :data:`VERSION`).
``weed mini`` runs master, volume server, filer, S3 gateway and an admin server in one process,
meant for development. :class:`SeaweedS3` starts it as a
:class:`~vworkspace.testing.processes.ManagedProcess` with:

* every listener on 127.0.0.1 (``-ip``/``-ip.bind``) and on a free port chosen here: master,
  volume, filer, S3 and admin, each with its gRPC port (mini's defaults, 8333 and friends, would
  collide between sessions on one machine); WebDAV, the Iceberg and Lance catalogs and the
  admin's legacy port off; no telemetry (``-master.telemetry=false``: nothing leaves the box);
* data, unix sockets and logs (``-logtostderr``, into the log file) in its own data directory;
* its own generated access key and secret as the one S3 identity, in a static identities file
  (``-s3.config``, mode 0600, the format of ``weed s3 -config``). Mini also takes
  ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` from its environment; the file keeps the secret
  out of the process environment and is the way every ``weed s3`` takes identities;
* the bucket (:data:`DEFAULT_BUCKET` unless told otherwise) created at start (``-bucket``), so
  starting needs no S3 client.

The same keys are written as an AWS shared-credentials file (:attr:`SeaweedS3.credentials_file`,
mode 0600, profile ``default``), which is what Velero's AWS plugin reads
(``AWS_SHARED_CREDENTIALS_FILE``). The secret is never printed: ``repr`` and :meth:`describe`
name the file, not its content.

"Ready" is the S3 gateway's ``/healthz`` answering 200 and the filer listing
``/buckets/<bucket>/`` (mini creates the bucket before it says it is ready; a plain HTTP GET on
the loopback filer needs no S3 signature). SeaweedFS ignores the region; clients need one, so
:data:`REGION` is what they are told.

The helpers that speak S3 (:meth:`SeaweedS3.client`, :meth:`create_bucket`,
:meth:`list_objects`) use boto3, a *test* dependency (``pip install -e '.[test]'``), imported
only when called: the rest of this module, and ``testenv start --with s3``, need nothing beyond
the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vworkspace.testing.assets import ensure_built, find_built
from vworkspace.testing.controlplane import ControlPlaneError, free_port
from vworkspace.testing.processes import ManagedProcess, StartStop

WEED = "weed"
# What scripts/build-backup-controllers.sh pins; the stamp in the cache holds it.
VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
BUILD_SCRIPT = "build-backup-controllers.sh"
DEFAULT_BUCKET = "velero"
REGION = "us-east-1"
# mini's services that listen, each with an HTTP and a gRPC port of our choosing.
_SERVICES = ("master", "volume", "filer", "s3", "admin")


class S3Error(ControlPlaneError):
    """weed is missing or did not become ready; the message carries its log tail. A
    :class:`ControlPlaneError`, so ``testenv`` reports it as it reports the control plane's."""


def find_weed(env: Mapping[str, str], *, beside: Path | None = None) -> Path:
    """The ``weed`` binary, beside the control plane's or in the cache (:func:`find_built`)."""
    return find_built([WEED], env, beside=beside, script=BUILD_SCRIPT, error=S3Error)[WEED]


def ensure_weed(env: Mapping[str, str], *, beside: Path | None = None) -> Path:
    """:func:`find_weed`, built first when missing in a checkout with Go."""
    return ensure_built([WEED], env, beside=beside, script=BUILD_SCRIPT, error=S3Error)[WEED]


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file only its owner can read (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


class SeaweedS3(StartStop):
    """``weed mini`` as an S3 endpoint on 127.0.0.1 with one identity and one bucket.

    Use it as a context manager, or :meth:`start` and :meth:`stop` (safe twice). The keys are
    generated per instance; :attr:`endpoint_url`, :attr:`region`, :attr:`bucket`,
    :attr:`access_key`, :attr:`secret_key` and :attr:`credentials_file` are what a client needs.
    """

    def __init__(
        self,
        *,
        binary: Path,
        bucket: str = DEFAULT_BUCKET,
        data_dir: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.binary = binary
        self.bucket = bucket
        self.region = REGION
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="vworkspace-s3-"))
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None
        # An AWS-looking access key id (20 upper-case characters) and a 40-character secret.
        self.access_key = "VW" + secrets.token_hex(9).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.ports: dict[str, int] = {}
        self._process: ManagedProcess | None = None

    def __repr__(self) -> str:
        return f"SeaweedS3(endpoint_url={self.endpoint_url!r}, bucket={self.bucket!r})"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.get('s3', 0)}"

    @property
    def filer_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.get('filer', 0)}"

    @property
    def credentials_file(self) -> Path:
        """The keys as an AWS shared-credentials file (profile ``default``), mode 0600."""
        return self.data_dir / "credentials"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / f"{WEED}.log"

    def _write_config(self) -> Path:
        identities = {
            "identities": [
                {
                    "name": "vworkspace-testenv",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        config = self.data_dir / "s3-identities.json"
        _write_private(config, json.dumps(identities, indent=2))
        _write_private(
            self.credentials_file,
            "[default]\n"
            f"aws_access_key_id = {self.access_key}\n"
            f"aws_secret_access_key = {self.secret_key}\n",
        )
        return config

    def _argv(self, config: Path) -> list[str]:
        data = self.data_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        ports = [
            f"-{service}.port{suffix}={self.ports[service + suffix]}"
            for service in _SERVICES
            for suffix in ("", ".grpc")
        ]
        return [
            str(self.binary),
            "-logtostderr=true",
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *ports,
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.port.legacy=0",
            "-webdav=false",
            "-master.telemetry=false",
            f"-filer.localSocket={self.data_dir / 'filer.sock'}",
            f"-s3.localSocket={self.data_dir / 's3.sock'}",
            f"-s3.config={config}",
            f"-bucket={self.bucket}",
        ]

    def start(self) -> None:
        started = time.monotonic()
        self.ports = {
            service + suffix: free_port() for service in _SERVICES for suffix in ("", ".grpc")
        }
        config = self._write_config()
        home = self.data_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        self._process = ManagedProcess(
            name=WEED,
            argv=self._argv(config),
            log_path=self.log_path,
            # weed reads no credentials from here (they are in the identities file); HOME and
            # TMPDIR keep whatever it writes on its own inside the data directory.
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(home), "TMPDIR": str(home)},
        )
        try:
            self._process.start()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _probe(self, url: str, last: list[str]) -> bool:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError as err:
            last[0] = f"{url}: {err.code}"
        except OSError as err:
            last[0] = f"{url}: {err}"
        return False

    def _wait_ready(self) -> None:
        assert self._process is not None
        probes = [f"{self.endpoint_url}/healthz", f"{self.filer_url}/buckets/{self.bucket}/"]
        deadline = time.monotonic() + self.start_timeout
        last = ["no answer yet"]
        while time.monotonic() < deadline:
            code = self._process.exit_code()
            if code is not None:
                raise S3Error(
                    f"{WEED} mini exited with {code} before it was ready "
                    f"(log {self.log_path}):\n{self._process.log_tail()}"
                )
            if all(self._probe(url, last) for url in probes):
                return
            time.sleep(0.2)
        raise S3Error(
            f"{WEED} mini not ready after {self.start_timeout:.0f}s (last: {last[0]}); "
            f"log {self.log_path}:\n{self._process.log_tail()}"
        )

    def check_alive(self) -> None:
        """Raise :class:`S3Error` if weed has exited."""
        code = None if self._process is None else self._process.exit_code()
        if code is not None and self._process is not None:
            raise S3Error(f"{WEED} mini exited with {code}:\n{self._process.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "" if self._process is None else self._process.log_tail(lines)

    def stop(self, *, keep_data_dir: bool = False) -> None:
        if self._process is not None:
            self._process.stop()
        if self._own_dir and not keep_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def summary(self) -> str:
        """One line for ``testenv start --with s3``: where, which bucket, where the keys are."""
        secs = f"{self.startup_seconds:.1f}s" if self.startup_seconds is not None else "?"
        return (
            f"s3: SeaweedFS {WEED} mini ready in {secs} at {self.endpoint_url} (bucket "
            f"{self.bucket}, region {self.region}; AWS credentials file {self.credentials_file}; "
            f"log {self.log_path})"
        )

    def describe(self) -> list[str]:
        """Lines for a terminal: what runs where (never the secret)."""
        return [
            f"{WEED} {VERSION}: {self.binary} (log {self.log_path})",
            f"S3 endpoint {self.endpoint_url}, bucket {self.bucket}, region {self.region}",
            f"credentials: {self.credentials_file} (AWS shared-credentials file, profile default)",
        ]

    # -- S3 through boto3 (a test dependency, imported when used) ------------------------------

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint (path-style addressing, as Velero's BSL uses)."""
        try:
            import boto3
            from botocore.config import Config
        except ImportError as err:
            raise S3Error(
                "boto3 is not installed: it is a test dependency (pip install -e '.[test]')"
            ) from err
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name`` (an existing one of ours is fine)."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)

    def list_objects(self, *, bucket: str | None = None, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` (default: ours) under ``prefix``, sorted."""
        paginator = self.client().get_paginator("list_objects_v2")
        keys: list[str] = []
        for page in paginator.paginate(Bucket=bucket or self.bucket, Prefix=prefix):
            keys.extend(str(item["Key"]) for item in page.get("Contents", []))
        return sorted(keys)


def start_seaweed_s3(
    env: Mapping[str, str],
    *,
    beside: Path | None = None,
    bucket: str = DEFAULT_BUCKET,
    data_dir: Path | None = None,
) -> SeaweedS3:
    """Find (or build) weed, start it and wait until it is ready; the caller stops it.

    For ``testenv start --with s3`` and anything else outside pytest."""
    s3 = SeaweedS3(binary=ensure_weed(env, beside=beside), bucket=bucket, data_dir=data_dir)
    s3.start()
    return s3
