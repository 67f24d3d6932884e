"""kubeconfig exec credential plugins (``users[].user.exec``), as client-go runs them.

The plugin (``aws eks get-token``, ``gke-gcloud-auth-plugin``, ``kubelogin``, ...) is run as an
asyncio subprocess, so the event loop keeps serving while it works, with ``KUBERNETES_EXEC_INFO``
describing the request. Its stdout is an ``ExecCredential`` (``client.authentication.k8s.io/v1``
or ``v1beta1``; ``v1alpha1`` was removed from client-go) whose ``status`` has a bearer ``token``
or ``clientCertificateData`` + ``clientKeyData``, and optionally an ``expirationTimestamp``.

The credential is cached until that timestamp (forever without one) and the plugin re-run when
it has expired or after the server answered 401. One run at a time: concurrent requests wait for
the run in progress instead of starting their own. A run is bounded by ``timeout`` (client-go has
none; an operator must not hang on a plugin waiting for a browser login).

Differences from client-go, on purpose: the operator has no terminal, so ``interactiveMode:
Always`` is refused at load time and plugins get no stdin (``spec.interactive`` is false); the
plugin's stderr is kept (its tail is quoted in the error when it fails) instead of being passed
through. The environment the plugin sees is the one the app hands down (``environ``) plus the
kubeconfig's ``env`` entries: nothing below ``app/`` reads the process environment.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import attrs

from vworkspace.kube.rest import safejson
from vworkspace.kube.rest.credentials import (
    ClientCertificate,
    Credential,
    CredentialError,
    bearer,
)

API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXEC_TIMEOUT = 60.0


@attrs.frozen
class ExecConfig:
    """One ``user.exec`` entry, validated. ``cluster_info``: the ``spec.cluster`` object sent in
    ``KUBERNETES_EXEC_INFO`` when ``provideClusterInfo`` is set, else None."""

    user: str
    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    api_version: str = API_VERSIONS[0]
    cluster_info: Mapping[str, Any] | None = attrs.field(default=None, repr=False)


@attrs.define
class ExecCredentials:
    """The :class:`~vworkspace.kube.rest.credentials.Credentials` of an exec plugin. ``now``: wall
    clock seconds (expiry timestamps are absolute)."""

    config: ExecConfig
    environ: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    timeout: float = EXEC_TIMEOUT
    now: Callable[[], float] = time.time
    _cached: Credential | None = attrs.field(default=None, init=False, repr=False)
    _expires: float | None = attrs.field(default=None, init=False)
    _lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False, repr=False)

    async def current(self) -> Credential:
        async with self._lock:
            if self._cached is None or (self._expires is not None and self.now() >= self._expires):
                self._cached, self._expires = await self._run()
            return self._cached

    def invalidate(self) -> None:
        self._cached = None

    async def _run(self) -> tuple[Credential, float | None]:
        out = await run_plugin(self.config, environ=self.environ, timeout_s=self.timeout)
        return parse_exec_credential(out, config=self.config)


def exec_info(config: ExecConfig) -> str:
    spec: dict[str, Any] = {"interactive": False}
    if config.cluster_info is not None:
        spec["cluster"] = dict(config.cluster_info)
    return json.dumps({"apiVersion": config.api_version, "kind": "ExecCredential", "spec": spec})


def describe(config: ExecConfig) -> str:
    return f"exec plugin {config.command!r} of user {config.user!r}"


async def run_plugin(config: ExecConfig, *, environ: Mapping[str, str], timeout_s: float) -> bytes:
    """The plugin's stdout; :class:`CredentialError` if it cannot start, fails or hangs."""
    env = {**environ, **config.env, "KUBERNETES_EXEC_INFO": exec_info(config)}
    try:
        proc = await asyncio.create_subprocess_exec(
            config.command,
            *config.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as err:
        raise CredentialError(f"{describe(config)} cannot be started: {err}") from err
    try:
        out, err_out = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CredentialError(f"{describe(config)} did not finish within {timeout_s:g}s") from None
    if proc.returncode != 0:
        tail = err_out.decode(errors="replace").strip()[-500:]
        raise CredentialError(f"{describe(config)} exited with {proc.returncode}: {tail}")
    return out


def parse_exec_credential(out: bytes, *, config: ExecConfig) -> tuple[Credential, float | None]:
    """The credential and its expiry (epoch seconds, or None) from the plugin's stdout."""
    where = describe(config)
    try:
        doc = safejson.loads(out)
    except safejson.JsonError as err:
        raise CredentialError(f"{where} printed no JSON ExecCredential: {err}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
        raise CredentialError(f"{where} printed JSON that is not an ExecCredential")
    if doc.get("apiVersion") != config.api_version:
        raise CredentialError(
            f"{where} answered apiVersion {doc.get('apiVersion')!r}, "
            f"the kubeconfig asks for {config.api_version!r}"
        )
    status = doc.get("status")
    if not isinstance(status, dict):
        raise CredentialError(f"{where}: ExecCredential has no status")
    return _credential(status, where), _expiry(status.get("expirationTimestamp"), where)


def _credential(status: Mapping[str, Any], where: str) -> Credential:
    token = status.get("token")
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if bool(cert) != bool(key):
        raise CredentialError(
            f"{where}: status.clientCertificateData and status.clientKeyData must be set together"
        )
    certificate = None
    if cert and key:
        if not isinstance(cert, str) or not isinstance(key, str):
            raise CredentialError(f"{where}: client certificate and key must be PEM strings")
        certificate = ClientCertificate(cert_pem=cert.encode(), key_pem=key.encode())
    if token is not None and not isinstance(token, str):
        raise CredentialError(f"{where}: status.token must be a string")
    if not token and certificate is None:
        raise CredentialError(
            f"{where}: ExecCredential status has neither token nor clientCertificateData"
        )
    headers = bearer(token).headers if token else {}
    return Credential(headers=headers, certificate=certificate)


def _expiry(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        # RFC 3339 as Kubernetes writes it ("2026-01-02T03:04:05Z"); 3.11 reads the "Z".
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        raise CredentialError(
            f"{where}: status.expirationTimestamp {value!r} is not an RFC 3339 time"
        ) from None
    if stamp.tzinfo is None:
        raise CredentialError(f"{where}: status.expirationTimestamp {value!r} has no time zone")
    return stamp.timestamp()
