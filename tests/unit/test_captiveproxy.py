"""The misbehaving proxy (vworkspace/testing/captiveproxy.py) misbehaves as documented, seen
through aiohttp, the client the agent uses."""

from __future__ import annotations

import aiohttp
import pytest

from vworkspace.testing.captiveproxy import LOGIN_PAGE, CaptiveMode, CaptiveProxy, ProxyRequest

TARGET = "controlplane.vworkspace.test:8443"


async def test_html_mode_answers_plain_requests_with_the_login_page() -> None:
    async with (
        CaptiveProxy(CaptiveMode.HTML) as proxy,
        aiohttp.ClientSession() as session,
        session.get(f"http://{TARGET}/healthz", proxy=proxy.url) as resp,
    ):
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert await resp.read() == LOGIN_PAGE
    assert proxy.requests == [ProxyRequest("GET", f"http://{TARGET}/healthz", False)]


async def test_html_mode_answers_connect_with_a_page_where_tls_was_expected() -> None:
    async with CaptiveProxy(CaptiveMode.HTML) as proxy, aiohttp.ClientSession() as session:
        # The TLS handshake reads "HTTP/1.1 200 OK" where a ServerHello belongs.
        with pytest.raises(aiohttp.ClientSSLError):
            await session.get(f"https://{TARGET}/healthz", proxy=proxy.url)
    assert proxy.requests == [ProxyRequest("CONNECT", TARGET, False)]


async def test_auth_mode_refuses_connect_with_407_whatever_the_credentials() -> None:
    async with CaptiveProxy(CaptiveMode.AUTH) as proxy, aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientHttpProxyError) as caught:
            await session.get(f"https://{TARGET}/healthz", proxy=proxy.url_with("u", "secret"))
        assert caught.value.status == 407
    assert proxy.requests == [ProxyRequest("CONNECT", TARGET, True)]


async def test_html_close_mode_answers_connect_with_a_page_and_hangs_up() -> None:
    async with CaptiveProxy(CaptiveMode.HTML_CLOSE) as proxy, aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(f"https://{TARGET}/healthz", proxy=proxy.url)
    assert proxy.requests == [ProxyRequest("CONNECT", TARGET, False)]
