"""API-server answers outside the success path (issue 16): an HTML page from a proxy with 200,
truncated JSON, 429 with and without Retry-After, garbage on a watch stream. A small scripted
HTTP server stands in, since the real API server does not misbehave on demand; the informer's
behaviour against the real one is in tests/integration/test_informer.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from vworkspace.kube.cache.informer import WatchDecodeError, _decode_event
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.config import ClusterConfig
from vworkspace.kube.rest.errors import (
    ApiError,
    InvalidResponseError,
    NotFoundError,
    RetryableError,
)
from vworkspace.kube.rest.paths import ApiPath

Script = list[web.Response]


@pytest.fixture
async def kube() -> AsyncIterator[tuple[KubeClient, Script]]:
    script: Script = []

    async def handle(request: web.Request) -> web.Response:
        return script.pop(0)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    config = ClusterConfig(server=f"http://127.0.0.1:{runner.addresses[0][1]}")
    client = KubeClient(config, request_timeout=5)
    yield client, script
    await client.close()
    await runner.cleanup()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>Proxy login</body></html>", "text/html"),
        (b'{"kind": "ConfigMap", "metadata": {"na', "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"kind": "ConfigMap", "n": ' + b"7" * 5_000 + b"}", "application/json"),  # F4
    ],
)
async def test_a_success_status_with_a_body_that_is_not_an_object_is_retryable(
    kube: tuple[KubeClient, Script], body: bytes, content_type: str
) -> None:
    client, script = kube
    script.append(web.Response(body=body, headers={"Content-Type": content_type}))
    with pytest.raises(InvalidResponseError) as err:
        await client.request("GET", ApiPath.parse("/api/v1/namespaces/x/configmaps/y"))
    assert isinstance(err.value, RetryableError)
    assert len(err.value.message) < 400


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "1e9"}, 60.0),
    ],
)
async def test_429_carries_retry_after_when_given(
    kube: tuple[KubeClient, Script], headers: dict[str, str], expected: float | None
) -> None:
    client, script = kube
    script.append(web.Response(status=429, text="<html>slow down</html>", headers=headers))
    with pytest.raises(RetryableError) as err:
        await client.request("GET", ApiPath.parse("/api/v1/namespaces"))
    assert err.value.status == 429
    assert err.value.retry_after == expected


async def test_a_5xx_html_page_is_retryable_with_a_short_message(
    kube: tuple[KubeClient, Script],
) -> None:
    client, script = kube
    script.append(web.Response(status=502, text="<html>" + "bad gateway " * 1000 + "</html>"))
    with pytest.raises(RetryableError) as err:
        await client.request("GET", ApiPath.parse("/api/v1/namespaces"))
    assert len(err.value.message) <= 1000


@pytest.mark.parametrize(
    "line",
    [
        b"<html>",
        b'{"type": "ADDED", "object": {"metadata": {"na',
        b'"just a string"',
        b'{"type": "EXPLODED", "object": {}}',
        b'{"type": "ADDED", "object": "x"}',
        b'{"type": "MODIFIED", "object": {"metadata": {}}}',
        b'{"type": "DELETED", "object": {"metadata": ["x"]}}',
        b'{"type": "ADDED", "object": {"metadata": {"name": "a"}, "n": ' + b"7" * 5_000 + b"}}",
        b"[" * 100_000,
    ],
)
def test_watch_garbage_is_a_typed_decode_error(line: bytes) -> None:
    with pytest.raises(WatchDecodeError):
        _decode_event(line)


async def test_an_error_body_with_a_5000_digit_integer_is_still_the_typed_error(
    kube: tuple[KubeClient, Script],
) -> None:
    """Regression (issue 24, F4): the error-body decoder caught only JSONDecodeError."""
    client, script = kube
    body = b'{"kind": "Status", "code": ' + b"7" * 5_000 + b"}"
    script.append(web.Response(status=404, body=body, content_type="application/json"))
    with pytest.raises(NotFoundError) as err:
        await client.request("GET", ApiPath.parse("/api/v1/namespaces/x/configmaps/y"))
    assert err.value.status == 404


async def test_a_success_body_with_a_5000_digit_integer_says_why(
    kube: tuple[KubeClient, Script],
) -> None:
    client, script = kube
    body = b'{"kind": "ConfigMap", "n": ' + b"7" * 5_000 + b"}"
    script.append(web.Response(body=body, content_type="application/json"))
    with pytest.raises(InvalidResponseError) as err:
        await client.request("GET", ApiPath.parse("/api/v1/namespaces/x/configmaps/y"))
    assert "a number too long to decode" in err.value.message


def test_bookmarks_and_errors_decode() -> None:
    bookmark = b'{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}}'
    assert _decode_event(bookmark)["type"] == "BOOKMARK"
    error = b'{"type": "ERROR", "object": {"code": 410, "message": "too old"}}'
    assert _decode_event(error)["object"]["code"] == 410


async def test_a_403_is_logged_with_the_servers_message(kube: tuple[KubeClient, Script]) -> None:
    # A 403 is a missing RBAC rule: it must show in the log even when the caller only turns it
    # into a status condition (vworkspace/testing/identity.py reads the verb and resource).
    from structlog.testing import capture_logs

    client, script = kube
    message = (
        'helmreleases.helm.toolkit.fluxcd.io "shop" is forbidden: User '
        '"system:serviceaccount:ns:op" cannot patch resource "helmreleases" in API group '
        '"helm.toolkit.fluxcd.io" in the namespace "team"'
    )
    script.append(
        web.json_response(
            {"kind": "Status", "status": "Failure", "reason": "Forbidden", "message": message},
            status=403,
        )
    )
    path = "/apis/helm.toolkit.fluxcd.io/v2/namespaces/team/helmreleases/shop"
    with capture_logs() as logs, pytest.raises(ApiError) as err:
        await client.request("PATCH", ApiPath.parse(path))
    assert err.value.status == 403
    assert logs == [
        {
            "event": "forbidden by the API server",
            "log_level": "warning",
            "method": "PATCH",
            "path": path,
            "error": message,
        }
    ]
