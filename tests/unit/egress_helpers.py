"""Real parts for the egress unit tests: a throw-away PKI (cryptography), an HTTPS server that
counts the requests it saw (aiohttp ``web``, optionally requiring a client certificate) and a
small CONNECT proxy with Basic auth and the misbehaviours corporate proxies show (407, an HTML
login page). The black-box tests use squid (vworkspace/testing/squid.py); these stay in-process
so that each unit test takes milliseconds."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vworkspace.kube.rest.credentials import ClientCertificate, load_certificate

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


@attrs.frozen
class Pair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_ca(common_name: str = "egress test CA") -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Pair(cert, key)


def issue(
    ca: Pair,
    common_name: str,
    *,
    server: bool,
    not_before: datetime.datetime = NOW - DAY,
    not_after: datetime.datetime = NOW + 30 * DAY,
) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName("controlplane.vworkspace.test"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    return Pair(builder.sign(ca.key, hashes.SHA256()), key)


@attrs.define
class Pki:
    ca: Pair
    server: Pair
    client: Pair
    other_ca: Pair

    @classmethod
    def create(cls) -> Pki:
        ca = new_ca()
        return cls(
            ca=ca,
            server=issue(ca, "controlplane", server=True),
            client=issue(ca, "cluster-1", server=False),
            other_ca=new_ca("unrelated CA"),
        )


@attrs.define
class CountingServer:
    """An HTTPS control plane stand-in: every request is recorded (method, path, whether a
    client certificate came); answers 200 ``{}`` in the agent media type."""

    url: str = ""
    requests: list[tuple[str, str, bool]] = attrs.field(factory=list)


@contextlib.asynccontextmanager
async def https_server(
    pki: Pki, *, require_client_cert: bool = False, host: str = "127.0.0.1"
) -> AsyncIterator[CountingServer]:
    seen = CountingServer()

    async def handle(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        seen.requests.append((request.method, request.path, bool(peer)))
        if request.method == "POST" and request.path.endswith(("/ack", "/result")):
            return web.Response(status=204)
        return web.Response(
            body=b'{"clusterId": "c1", "token": "t1"}',
            content_type="application/vnd.vworkspace.agent.v1+json",
        )

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    load_certificate(context, ClientCertificate(pki.server.cert_pem, pki.server.key_pem))
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=pki.ca.cert_pem.decode())
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    seen.url = f"https://{host}:{port}"
    try:
        yield seen
    finally:
        await runner.cleanup()


@attrs.define
class ConnectProxy:
    """A forward proxy for CONNECT only. ``mode``: "tunnel" (relays, after checking Basic auth
    when ``credentials`` are set), "407" (always asks for credentials), "html" (answers CONNECT
    with 200 and a login page instead of a tunnel, then closes; "html-keep-open" keeps the
    connection, so the client's TLS handshake reads the page), "403" (refuses)."""

    mode: str = "tunnel"
    credentials: tuple[str, str] | None = None
    # Names only the proxy can resolve (as a corporate proxy resolves external names).
    hosts: dict[str, str] = attrs.field(factory=dict)
    port: int = 0
    connects: list[str] = attrs.field(factory=list)
    auth_headers: list[str] = attrs.field(factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        request_line, *header_lines = head.split("\r\n")
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in header_lines if line)
        }
        method, target, _ = request_line.split(" ", 2)
        self.connects.append(f"{method} {target}")
        auth = headers.get("proxy-authorization", "")
        self.auth_headers.append(auth)
        if self.mode == "407" or (self.credentials and not self._authorized(auth)):
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n\r\n'
            )
        elif self.mode == "403":
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        elif self.mode in ("html", "html-keep-open"):
            page = b"<html><body><form>Sign in to the corporate network</form></body></html>"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                + f"Content-Length: {len(page)}\r\n\r\n".encode()
                + page
            )
            if self.mode == "html-keep-open":  # and read on, as a keep-alive connection does
                await writer.drain()
                while await reader.read(65536):
                    pass
        elif method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.hosts.get(host, host), int(port)
            )
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
            return
        else:
            writer.write(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    def _authorized(self, header: str) -> bool:
        assert self.credentials is not None
        user, password = self.credentials
        expected = base64.b64encode(f"{user}:{password}".encode()).decode()
        return header == f"Basic {expected}"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def connect_proxy(
    mode: str = "tunnel",
    credentials: tuple[str, str] | None = None,
    hosts: dict[str, str] | None = None,
) -> AsyncIterator[ConnectProxy]:
    proxy = ConnectProxy(mode=mode, credentials=credentials, hosts=hosts or {})
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
