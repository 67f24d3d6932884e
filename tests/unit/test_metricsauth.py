"""The /metrics authentication and authorization filter (TokenReview + SubjectAccessReview, with
a bounded TTL cache) and the HTTPS metrics listener it guards."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry, Counter

from vworkspace.api.jsontypes import JsonObj
from vworkspace.app.http import Address, Endpoints, ServingCert
from vworkspace.app.metricsauth import (
    SUBJECT_ACCESS_REVIEWS,
    TOKEN_REVIEWS,
    MetricsAuthorizer,
    bearer_token,
)
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.rest.errors import error_for
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.tls import CertificateError
from vworkspace.webhooks.certs import new_ca, write_webhook_certs

SA = "system:serviceaccount:monitoring:prometheus"


class FakeApiServer:
    """Answers reviews like the API server: ``tokens`` maps token -> user; ``allowed`` names the
    users RBAC lets ``get /metrics``."""

    def __init__(self) -> None:
        self.tokens: dict[str, JsonObj] = {
            "good": {
                "username": SA,
                "uid": "uid-1",
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/pod-name": ["prom-0"]},
            },
            "other": {"username": "system:serviceaccount:default:nobody", "groups": []},
        }
        self.allowed = {SA}
        self.calls: list[tuple[str, JsonObj, float | None]] = []
        self.fail: Exception | None = None

    async def request(
        self, method: str, path: ApiPath, *, body: Any = None, timeout_s: float | None = None
    ) -> JsonObj:
        assert method == "POST"
        self.calls.append((path, body, timeout_s))
        if self.fail is not None:
            raise self.fail
        if path == TOKEN_REVIEWS:
            user = self.tokens.get(body["spec"]["token"])
            if user is None:
                return {"status": {"authenticated": False, "error": "invalid bearer token"}}
            return {"status": {"authenticated": True, "user": user}}
        assert path == SUBJECT_ACCESS_REVIEWS
        allowed = body["spec"]["user"] in self.allowed
        return {"status": {"allowed": allowed, "reason": "RBAC" if allowed else ""}}

    def count(self, path: ApiPath) -> int:
        return sum(1 for p, _, _ in self.calls if p == path)


@pytest.fixture
def api() -> FakeApiServer:
    return FakeApiServer()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def authorizer(api: FakeApiServer, clock: FakeClock) -> MetricsAuthorizer:
    return MetricsAuthorizer(api=api, clock=clock, timeout_s=3.0)


async def check(authorizer: MetricsAuthorizer, header: str | None) -> tuple[int, str]:
    decision = await authorizer.authorize(authorization=header, path="/metrics", verb="get")
    return decision.status, decision.message


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer a b", None),
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("  Bearer   abc  ", "abc"),
    ],
)
def test_bearer_token_is_read_like_the_api_server(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


async def test_no_token_is_401_without_asking_the_api_server(
    authorizer: MetricsAuthorizer, api: FakeApiServer
) -> None:
    assert await check(authorizer, None) == (401, "Unauthorized")
    assert await check(authorizer, "Basic dXNlcjpwYXNz") == (401, "Unauthorized")
    assert api.calls == []


async def test_an_allowed_scraper_passes_and_the_reviews_carry_its_identity(
    authorizer: MetricsAuthorizer, api: FakeApiServer
) -> None:
    assert await check(authorizer, "Bearer good") == (200, "")
    (token_path, token_body, t1), (sar_path, sar_body, t2) = api.calls
    assert (token_path, sar_path) == (TOKEN_REVIEWS, SUBJECT_ACCESS_REVIEWS)
    assert token_body == {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": "good"},
    }
    assert sar_body == {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": SA,
            "uid": "uid-1",
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/pod-name": ["prom-0"]},
            "nonResourceAttributes": {"path": "/metrics", "verb": "get"},
        },
    }
    assert t1 == t2 == 3.0  # every review has an explicit deadline


async def test_allowed_answers_are_cached_for_a_minute(
    authorizer: MetricsAuthorizer, api: FakeApiServer, clock: FakeClock
) -> None:
    for _ in range(5):
        assert (await check(authorizer, "Bearer good"))[0] == 200
        await clock.advance(10)
    assert len(api.calls) == 2  # one TokenReview, one SubjectAccessReview for five scrapes
    await clock.advance(15)  # 65 s after the first scrape
    api.allowed.clear()  # the ClusterRoleBinding was deleted
    assert await check(authorizer, "Bearer good") == (
        403,
        f"Authorization denied for user {SA}",
    )
    assert len(api.calls) == 4


async def test_unknown_tokens_are_401_and_cached_for_ten_seconds(
    authorizer: MetricsAuthorizer, api: FakeApiServer, clock: FakeClock
) -> None:
    assert await check(authorizer, "Bearer stolen") == (401, "Unauthorized")
    await clock.advance(9)
    assert await check(authorizer, "Bearer stolen") == (401, "Unauthorized")
    assert api.count(TOKEN_REVIEWS) == 1
    assert api.count(SUBJECT_ACCESS_REVIEWS) == 0
    api.tokens["stolen"] = api.tokens["good"]  # the token became valid (e.g. just issued)
    await clock.advance(1)
    assert (await check(authorizer, "Bearer stolen"))[0] == 200


async def test_a_denied_user_is_403_and_a_new_binding_counts_within_ten_seconds(
    authorizer: MetricsAuthorizer, api: FakeApiServer, clock: FakeClock
) -> None:
    assert await check(authorizer, "Bearer other") == (
        403,
        "Authorization denied for user system:serviceaccount:default:nobody",
    )
    api.allowed.add("system:serviceaccount:default:nobody")
    await clock.advance(5)
    assert (await check(authorizer, "Bearer other"))[0] == 403  # still the cached denial
    await clock.advance(5)
    assert (await check(authorizer, "Bearer other"))[0] == 200
    # The token itself stayed cached (authenticated, 60 s); only access was asked again.
    assert api.count(TOKEN_REVIEWS) == 1
    assert api.count(SUBJECT_ACCESS_REVIEWS) == 2


async def test_api_failures_are_500_and_never_cached(
    authorizer: MetricsAuthorizer, api: FakeApiServer
) -> None:
    api.fail = TimeoutError()
    assert await check(authorizer, "Bearer good") == (500, "Authentication failed")
    # The operator lacks RBAC for TokenReviews: also a failure, not a verdict on the token.
    api.fail = error_for(
        status=403,
        body={"reason": "Forbidden", "message": "cannot create tokenreviews"},
        method="POST",
        path=TOKEN_REVIEWS,
    )
    assert await check(authorizer, "Bearer good") == (500, "Authentication failed")
    api.fail = None
    assert (await check(authorizer, "Bearer good"))[0] == 200
    assert api.count(TOKEN_REVIEWS) == 3


async def test_authorization_errors_are_500_naming_the_user(api: FakeApiServer) -> None:
    class SarFails(FakeApiServer):
        async def request(
            self, method: str, path: ApiPath, *, body: Any = None, timeout_s: float | None = None
        ) -> JsonObj:
            if path == SUBJECT_ACCESS_REVIEWS:
                raise OSError("connection reset")
            return await super().request(method, path, body=body, timeout_s=timeout_s)

    authorizer = MetricsAuthorizer(api=SarFails(), clock=FakeClock())
    assert await check(authorizer, "Bearer good") == (
        500,
        f"Authorization for user {SA} failed",
    )


async def test_the_caches_are_bounded(api: FakeApiServer, clock: FakeClock) -> None:
    authorizer = MetricsAuthorizer(api=api, clock=clock, max_entries=2)
    for token in ("t1", "t2", "t3"):  # unknown tokens: a spray of garbage
        await check(authorizer, f"Bearer {token}")
    assert api.count(TOKEN_REVIEWS) == 3
    await check(authorizer, "Bearer t3")  # still cached
    assert api.count(TOKEN_REVIEWS) == 3
    await check(authorizer, "Bearer t1")  # evicted: asked again
    assert api.count(TOKEN_REVIEWS) == 4


# -- the HTTPS listener -------------------------------------------------------------------


def insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def fetch(
    url: str, *, token: str | None = None, ssl_context: ssl.SSLContext | bool = False
) -> tuple[int, str, Mapping[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, ssl=ssl_context) as resp,
    ):
        return resp.status, await resp.text(), resp.headers


def registry_with_a_sample() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("demo_total", "A sample.", registry=registry).inc()
    return registry


async def test_secure_metrics_are_https_behind_the_filter_and_probes_stay_http(
    authorizer: MetricsAuthorizer,
) -> None:
    endpoints = Endpoints(
        registry=registry_with_a_sample(),
        not_ready=list,
        probes=Address("127.0.0.1", 0),
        metrics=Address("127.0.0.1", 0),
        metrics_tls=ServingCert(),
        authorizer=authorizer,
    )
    await endpoints.start()
    try:
        metrics = f"https://127.0.0.1:{endpoints.bound['metrics'].port}/metrics"
        assert endpoints.bound["metrics"].port != endpoints.bound["probes"].port
        status, text, headers = await fetch(metrics, ssl_context=insecure())
        assert (status, text) == (401, "Unauthorized\n")
        assert headers["WWW-Authenticate"] == "Bearer"
        assert (await fetch(metrics, token="other", ssl_context=insecure()))[0] == 403
        status, text, _ = await fetch(metrics, token="good", ssl_context=insecure())
        assert status == 200
        assert "demo_total 1.0" in text
        with pytest.raises(aiohttp.ClientError):  # no plain HTTP on the metrics port
            await fetch(metrics.replace("https", "http"), token="good")
        probes = f"http://127.0.0.1:{endpoints.bound['probes'].port}"
        assert (await fetch(f"{probes}/readyz"))[:2] == (200, "ok")
        assert (await fetch(f"{probes}/metrics"))[0] == 404
    finally:
        await endpoints.stop()


async def test_the_self_signed_pair_names_localhost_and_leaves_no_files(
    authorizer: MetricsAuthorizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    endpoints = Endpoints(
        registry=CollectorRegistry(),
        not_ready=list,
        probes=None,
        metrics=Address("127.0.0.1", 0),
        metrics_tls=ServingCert(),
        authorizer=authorizer,
    )
    # The key was only on disk while loading.
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []
    await endpoints.start()
    try:
        port = endpoints.bound["metrics"].port
        pem = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", port))
    finally:
        await endpoints.stop()
    cert = x509.load_pem_x509_certificate(pem.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]


async def test_a_mounted_pair_is_served_verified_and_reloaded(
    authorizer: MetricsAuthorizer, tmp_path: Path
) -> None:
    ca = new_ca("metrics-test-ca", validity=datetime.timedelta(days=1))
    files = write_webhook_certs(tmp_path, hosts=("127.0.0.1",), ca=ca)
    endpoints = Endpoints(
        registry=registry_with_a_sample(),
        not_ready=list,
        probes=None,
        metrics=Address("127.0.0.1", 0),
        metrics_tls=ServingCert(directory=tmp_path, reload_interval=0.05),
        authorizer=authorizer,
    )
    await endpoints.start()
    try:
        url = f"https://127.0.0.1:{endpoints.bound['metrics'].port}/metrics"
        verified = ssl.create_default_context(cafile=str(files.ca_cert))
        assert (await fetch(url, token="good", ssl_context=verified))[0] == 200
        # cert-manager rotates the pair under a new CA: new handshakes get the new one.
        new = new_ca("rotated-ca", validity=datetime.timedelta(days=1))
        write_webhook_certs(tmp_path / "new", hosts=("127.0.0.1",), ca=new)
        files.key.write_bytes((tmp_path / "new" / "tls.key").read_bytes())
        files.cert.write_bytes((tmp_path / "new" / "tls.crt").read_bytes())
        rotated = ssl.create_default_context(cafile=str(tmp_path / "new" / "ca.crt"))
        async with asyncio.timeout(5):
            while True:
                try:
                    if (await fetch(url, token="good", ssl_context=rotated))[0] == 200:
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
    finally:
        await endpoints.stop()


def test_secure_metrics_refuse_the_probes_listener_and_half_configurations(
    authorizer: MetricsAuthorizer, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"cannot share the probes listener 127\.0\.0\.1:8081"):
        Endpoints(
            registry=CollectorRegistry(),
            not_ready=list,
            probes=Address("127.0.0.1", 8081),
            metrics=Address("0.0.0.0", 8081),
            metrics_tls=ServingCert(),
            authorizer=authorizer,
        )
    with pytest.raises(ValueError, match="both a serving certificate and an authorizer"):
        Endpoints(
            registry=CollectorRegistry(),
            not_ready=list,
            probes=None,
            metrics=Address("127.0.0.1", 0),
            metrics_tls=ServingCert(),
        )
    with pytest.raises(CertificateError, match="cannot load"):
        Endpoints(
            registry=CollectorRegistry(),
            not_ready=list,
            probes=None,
            metrics=Address("127.0.0.1", 0),
            metrics_tls=ServingCert(directory=tmp_path),
            authorizer=authorizer,
        )


async def test_plain_metrics_still_share_the_probes_listener() -> None:
    endpoints = Endpoints(
        registry=registry_with_a_sample(),
        not_ready=list,
        probes=Address("127.0.0.1", 0),
        metrics=Address("127.0.0.1", 0),
    )
    await endpoints.start()
    try:
        assert endpoints.bound["metrics"] == endpoints.bound["probes"]
        port = endpoints.bound["metrics"].port
        status, text, _ = await fetch(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert "demo_total 1.0" in text
    finally:
        await endpoints.stop()
