"""A deliberately small, synchronous Kubernetes REST client for test fixtures.

Fixtures run outside any event loop (a session-scoped fixture must not be tied to one test's
loop), so they talk to the API server with the standard library instead of kubernetes-asyncio.
It speaks JSON, server-side apply and nothing else; the operator itself never uses it.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from vworkspace.api.jsontypes import JsonObj

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer; ``status`` is the HTTP code, ``body`` the decoded Status if any."""

    def __init__(self, status: int, body: JsonObj, method: str, path: str) -> None:
        self.status = status
        self.body = body
        self.reason = str(body.get("reason", ""))
        self.message = str(body.get("message", ""))
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")


class RestClient:
    def __init__(
        self,
        *,
        server: str,
        token: str,
        ca_file: str | None = None,
        ca_data: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if (ca_file is None) == (ca_data is None):
            raise ValueError("give exactly one of ca_file and ca_data")
        self.server = server.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._ssl = ssl.create_default_context(cafile=ca_file, cadata=ca_data)

    @classmethod
    def from_kubeconfig(cls, path: Path, *, timeout: float = 30.0) -> RestClient:
        """A client for the current context of a token-authenticated kubeconfig (as written by
        :class:`~vworkspace.testing.ControlPlane`)."""
        config = yaml.safe_load(path.read_text())
        context_name = config["current-context"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        ca_data = base64.b64decode(cluster["certificate-authority-data"]).decode()
        return cls(server=cluster["server"], token=user["token"], ca_data=ca_data, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
        accept: str = "application/json",
    ) -> JsonObj:
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self._token}")
        req.add_header("Accept", accept)
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout, context=self._ssl) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                decoded = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                decoded = {"message": raw.decode(errors="replace")}
            raise ApiError(err.code, decoded, method, path) from None
        if not raw:
            return {}
        text = raw.decode()
        try:
            result: JsonObj = json.loads(text)
        except json.JSONDecodeError:
            return {"text": text}
        return result

    def get(self, path: str, **query: str) -> JsonObj:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: JsonObj) -> JsonObj:
        return self.request("POST", path, body=body)

    def delete(self, path: str, **query: str) -> JsonObj:
        return self.request("DELETE", path, query=query or None)

    def apply(self, path: str, obj: JsonObj, *, field_manager: str, force: bool = True) -> JsonObj:
        """Server-side apply ``obj`` at ``path`` (the object's own URL)."""
        query = {"fieldManager": field_manager}
        if force:
            query["force"] = "true"
        return self.request("PATCH", path, body=obj, content_type=APPLY_PATCH, query=query)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except ApiError as err:
            if err.status == 404:
                return False
            raise
        return True

    def wait_for(
        self, what: str, check: Callable[[], bool], *, timeout: float, interval: float = 0.2
    ) -> None:
        """Poll ``check`` until it is true; raise TimeoutError naming ``what`` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)
