"""Running the mock in-process (tests) and talking to its admin API (tests, e2e, the demo)."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
from aiohttp import web

from vworkspace.api.jsontypes import JsonObj
from vworkspace.mockcontrolplane.server import ADMIN_HEADER, MEDIA_TYPE, create_app
from vworkspace.mockcontrolplane.signer import Signer
from vworkspace.mockcontrolplane.state import MockState


class MockControlPlane:
    """The mock on a free loopback port, with direct access to its state for assertions.

    ``ssl_context``: serve HTTPS with it (a context whose ``verify_mode`` is ``CERT_REQUIRED``
    makes every client present a certificate its CAs trust; see
    :mod:`vworkspace.testing.egresspki`). ``url_host``: the host name :attr:`url` shows instead
    of the listen address, e.g. a name that only a test proxy resolves."""

    def __init__(
        self,
        *,
        visibility_timeout: float = 60.0,
        strict_registration: bool = False,
        admin_token: str = "",
        host: str = "127.0.0.1",
        port: int = 0,
        state: MockState | None = None,
        signer: Signer | None = None,
        ssl_context: ssl.SSLContext | None = None,
        url_host: str = "",
        encrypt_to: str = "",
    ) -> None:
        # Pass the state of a stopped mock to restart it with everything it knew.
        self.state = state or MockState(
            visibility_timeout=visibility_timeout,
            strict_registration=strict_registration,
            signer=signer,
            encrypt_to=encrypt_to,
        )
        self.admin_token = admin_token
        self._host = host
        self._port = port
        self._ssl_context = ssl_context
        self._url_host = url_host
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self._url_host or self._host}:{self.port}"

    @property
    def address_url(self) -> str:
        """:attr:`url` with the listen address rather than ``url_host`` (for the test's own
        admin calls when ``url_host`` resolves only through a proxy)."""
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self._host}:{self.port}"

    async def start(self) -> MockControlPlane:
        self._runner = web.AppRunner(
            create_app(self.state, admin_token=self.admin_token),
            access_log=None,
            # A client that disconnects mid-request (a killed agent) must not have its request
            # completed behind its back.
            handler_cancellation=True,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MockControlPlane:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # Test helpers (docs/pull-mode.md, "The mock control plane").
    def add_registration_token(self, token: str, cluster_id: str) -> None:
        self.state.add_registration_token(token, cluster_id)

    def set_bootstrap_token(self, cluster_id: str, token: str) -> None:
        self.state.set_bootstrap_token(cluster_id, token)

    async def enqueue(
        self,
        cluster_id: str,
        job: JsonObj,
        *,
        signing: str = "sign",
        encrypt: str = "",
        recipient: str = "",
    ) -> None:
        """``encrypt``/``recipient``: see mockcontrolplane/sealer.py (encrypted, then signed)."""
        await self.state.enqueue(
            cluster_id, job, signing=signing, encrypt=encrypt, recipient=recipient
        )

    def was_acked(self, job_id: str) -> bool:
        return job_id in self.state.acked

    def job_result(self, job_id: str) -> JsonObj | None:
        return self.state.results.get(job_id)

    def job_statuses(self, job_id: str) -> list[JsonObj]:
        return list(self.state.statuses.get(job_id, []))

    def events(
        self, cluster_id: str, *, kind: str = "", namespace: str = "", name: str = ""
    ) -> list[JsonObj]:
        return self.state.events(cluster_id, kind=kind, namespace=namespace, name=name)

    def pending_count(self, cluster_id: str) -> int:
        return self.state.pending_count(cluster_id)


class AdminClient:
    """The mock's admin API over HTTP (for a mock in another process or Pod). ``ssl_context``:
    the client context for a mock served over HTTPS by a private CA (and requiring a client
    certificate); ``server_hostname``: the name to verify when ``base_url`` is an address that
    differs from the certificate's name."""

    def __init__(
        self,
        base_url: str,
        *,
        admin_token: str = "",
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._headers = {"Accept": MEDIA_TYPE}
        if admin_token:
            self._headers[ADMIN_HEADER] = admin_token
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _call(self, method: str, path: str, body: JsonObj | None = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(timeout=self._timeout) as session,
            session.request(
                method,
                self.base_url + path,
                json=body,
                headers=self._headers,
                ssl=self._ssl if self._ssl is not None else True,
                server_hostname=self._server_hostname,
            ) as resp,
        ):
            text = await resp.text()
            return resp.status, (await resp.json(content_type=None)) if text else None

    async def enqueue(
        self,
        cluster_id: str,
        job: JsonObj,
        *,
        signing: str = "",
        encrypt: str = "",
        recipient: str = "",
    ) -> None:
        """``signing``: a mode of mockcontrolplane/signer.py (default: sign if it has a key);
        ``encrypt`` (``payload``, ``values``, ``none``) and ``recipient``: sealer.py."""
        request: JsonObj = {"clusterId": cluster_id, "job": job}
        if signing:
            request["signing"] = signing
        if encrypt:
            request["encrypt"] = encrypt
        if recipient:
            request["recipient"] = recipient
        status, body = await self._call("POST", "/api/admin/enqueue", request)
        if status != 204:
            raise RuntimeError(f"enqueue failed: {status} {body}")

    async def events(
        self, cluster_id: str, *, kind: str = "", namespace: str = "", name: str = ""
    ) -> list[JsonObj]:
        query = "&".join(
            f"{k}={v}"
            for k, v in {
                "cluster": cluster_id,
                "kind": kind,
                "namespace": namespace,
                "name": name,
            }.items()
            if v
        )
        status, body = await self._call("GET", f"/api/admin/events?{query}")
        if status != 200:
            raise RuntimeError(f"events failed: {status} {body}")
        return list(body.get("events") or [])

    async def job_result(self, job_id: str) -> JsonObj | None:
        status, body = await self._call("GET", f"/api/admin/jobs/{job_id}/result")
        if status == 404:
            return None
        if status != 200:
            raise RuntimeError(f"job result failed: {status} {body}")
        result: JsonObj = body
        return result
