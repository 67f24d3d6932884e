"""Starting without a usable cluster connection: one clear line naming what is wrong, exit 1,
no traceback (a missing kubeconfig, a file that is not one, an unknown context, an API server
that does not answer)."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from vworkspace.kube.rest.client import KubeClient, KubeConfigError


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens once the socket is closed


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    return path


async def test_a_missing_kubeconfig_is_named(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match=f"^no kubeconfig at {tmp_path}/absent$"):
        await KubeClient.from_kubeconfig(str(tmp_path / "absent"))


async def test_a_file_that_is_not_a_kubeconfig_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("just a line of text\n")
    with pytest.raises(KubeConfigError) as err:
        await KubeClient.from_kubeconfig(str(tmp_path / "notes"))
    assert str(err.value).startswith(f"cannot use kubeconfig {tmp_path}/notes: not a kubeconfig")


async def test_an_unknown_context_is_named(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "kc", "https://127.0.0.1:6443")
    with pytest.raises(
        KubeConfigError, match=f"^cannot use kubeconfig {path}: context 'nope' not found$"
    ):
        await KubeClient.from_kubeconfig(str(path), context="nope")


async def test_a_kubeconfig_list_uses_the_files_that_exist(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "kc", "https://127.0.0.1:6443")
    client = await KubeClient.from_kubeconfig(f"{tmp_path / 'absent'}{os.pathsep}{path}")
    try:
        assert client.server == "https://127.0.0.1:6443"
    finally:
        await client.close()


def run_operator(*argv: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")
    }
    env["HOME"] = str(home)  # no ~/.kube/config
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "vworkspace",
            "run",
            "--health-probe-bind-address",
            "127.0.0.1:0",
            *argv,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_run_without_any_cluster_says_where_it_looked(tmp_path: Path) -> None:
    done = run_operator(home=tmp_path)
    assert done.returncode == 1, done.stderr
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    assert "cannot connect to Kubernetes" in output
    assert (
        "not in a Pod and no --kubeconfig or $KUBECONFIG given; no kubeconfig at "
        f"{tmp_path}/.kube/config" in output
    )


def test_run_against_an_api_server_that_does_not_answer_names_it(tmp_path: Path) -> None:
    server = f"https://127.0.0.1:{closed_port()}"
    done = run_operator("--kubeconfig", str(kubeconfig(tmp_path / "kc", server)), home=tmp_path)
    assert done.returncode == 1, done.stderr
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    assert "cannot reach the Kubernetes API server" in output
    assert server in output


def test_register_names_a_missing_kubeconfig_and_an_unreachable_api_server(
    tmp_path: Path,
) -> None:
    # `register` first checks the control plane answers; any HTTP answer will do.
    control_plane = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), http.server.BaseHTTPRequestHandler
    )
    threading.Thread(target=control_plane.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{control_plane.server_address[1]}"
    server = f"https://127.0.0.1:{closed_port()}"
    try:
        for kc, expected in (
            (tmp_path / "absent", "error: cannot connect to Kubernetes: no kubeconfig at "),
            (
                kubeconfig(tmp_path / "kc", server),
                f"error: cannot reach the Kubernetes API server at {server}: ",
            ),
        ):
            done = subprocess.run(
                [
                    *(sys.executable, "-m", "vworkspace", "register", "--kubeconfig", str(kc)),
                    *("--control-plane-endpoint", endpoint, "--registration-token", "t"),
                    *("--cluster-id", "c-1", "--timeout", "5", "--allow-insecure-control-plane"),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 1, done.stderr
            assert done.stderr.startswith(expected), done.stderr
            assert "Traceback" not in done.stderr
    finally:
        control_plane.shutdown()
