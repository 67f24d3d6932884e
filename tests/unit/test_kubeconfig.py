"""The operator's own kubeconfig loader (kube/rest/kubeconfig.py): what it reads, what it refuses,
and the credentials it produces (token files re-read, exec plugins re-run when expired).

The TLS test runs a small local HTTPS server that requires a client certificate; the rest reads
kubeconfig files written into a temporary directory. Exec plugins are small Python scripts.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vworkspace.kube.rest.client import KubeClient, KubeConfigError
from vworkspace.kube.rest.credentials import CredentialError, TokenFileCredentials
from vworkspace.kube.rest.errors import ApiError
from vworkspace.kube.rest.execplugin import ExecCredentials
from vworkspace.kube.rest.kubeconfig import in_cluster_config, load_kubeconfig
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.transport import ssl_context
from vworkspace.webhooks.certs import Issued, new_ca, new_serving_pair

DAY = datetime.timedelta(days=1)
V1 = "client.authentication.k8s.io/v1"


def kubeconfig(
    path: Path,
    *,
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    current: str | None = "ctx",
    name: str = "c",
) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": name, "cluster": cluster or {"server": "https://k:6443"}}],
                "users": [{"name": "u", "user": user or {}}],
                "contexts": [{"name": "ctx", "context": {"cluster": name, "user": "u"}}],
                **({"current-context": current} if current else {}),
            }
        )
    )
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def client_pair(ca: Issued, common_name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + DAY)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, cert)


async def test_a_token_user_sends_a_bearer_token(tmp_path: Path) -> None:
    config = await load_kubeconfig(str(kubeconfig(tmp_path / "kc", user={"token": "t-1"})))
    assert config.server == "https://k:6443"
    assert (await config.credentials.current()).headers == {"Authorization": "Bearer t-1"}


async def test_basic_auth(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "kc", user={"username": "ann", "password": "pw"})
    config = await load_kubeconfig(str(path))
    expected = "Basic " + b64(b"ann:pw")
    assert (await config.credentials.current()).headers == {"Authorization": expected}


async def test_a_token_file_is_relative_to_the_kubeconfig_and_reread_every_minute(
    tmp_path: Path,
) -> None:
    (tmp_path / "conf").mkdir()
    token = tmp_path / "conf" / "token"
    token.write_text("first\n")
    config = await load_kubeconfig(
        str(kubeconfig(tmp_path / "conf" / "kc", user={"tokenFile": "token"}))
    )
    credentials = config.credentials
    assert isinstance(credentials, TokenFileCredentials)
    now = [1000.0]
    credentials.clock = lambda: now[0]
    credentials.invalidate()  # the next read happens on the fake clock
    assert (await credentials.current()).headers["Authorization"] == "Bearer first"
    token.write_text("second\n")
    now[0] += 59
    assert (await credentials.current()).headers["Authorization"] == "Bearer first"
    now[0] += 1
    assert (await credentials.current()).headers["Authorization"] == "Bearer second"
    token.write_text("third\n")
    credentials.invalidate()  # after a 401
    assert (await credentials.current()).headers["Authorization"] == "Bearer third"
    token.unlink()  # a failed re-read keeps the last good token
    now[0] += 60
    assert (await credentials.current()).headers["Authorization"] == "Bearer third"


async def test_a_missing_token_file_is_named(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "kc", user={"tokenFile": "/nonexistent/token"})
    with pytest.raises(KubeConfigError, match="cannot read token file /nonexistent/token"):
        await load_kubeconfig(str(path))


async def test_insecure_skip_tls_verify(tmp_path: Path) -> None:
    path = kubeconfig(
        tmp_path / "kc", cluster={"server": "https://k", "insecure-skip-tls-verify": True}
    )
    config = await load_kubeconfig(str(path))
    assert config.insecure
    context = ssl_context(config)
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname


@pytest.fixture
async def mtls_server(tmp_path: Path) -> AsyncIterator[tuple[str, Issued]]:
    """An HTTPS server on 127.0.0.1 that requires a client certificate from ``ca`` and answers
    with the client's common name."""
    ca = new_ca("test-ca", validity=DAY)
    server = new_serving_pair(ca, hosts=("127.0.0.1",), common_name="server", validity=DAY)
    (tmp_path / "srv.crt").write_bytes(server.cert_pem)
    (tmp_path / "srv.key").write_bytes(server.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=ca.cert_pem.decode())
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(tmp_path / "srv.crt", tmp_path / "srv.key")

    async def whoami(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(pair[0] for pair in (peer or {}).get("subject", ()))
        return web.json_response({"cn": subject.get("commonName")})

    app = web.Application()
    app.router.add_get("/whoami", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    yield f"https://127.0.0.1:{runner.addresses[0][1]}", ca
    await runner.cleanup()


@pytest.mark.parametrize("value", ["false", "true", "no", 0, 1, ["false"]])
async def test_insecure_skip_tls_verify_must_be_a_yaml_boolean(tmp_path: Path, value: Any) -> None:
    """Regression (issue 24, F5): ``insecure-skip-tls-verify: "false"`` (a string) turned TLS
    verification off, bool("false") being True. client-go refuses the file; so do we."""
    path = kubeconfig(
        tmp_path / "kc", cluster={"server": "https://k", "insecure-skip-tls-verify": value}
    )
    with pytest.raises(KubeConfigError) as err:
        await load_kubeconfig(str(path))
    assert str(err.value).startswith(
        f"cannot use kubeconfig {path}: cluster 'c': insecure-skip-tls-verify must be true or "
        "false (a YAML boolean), not "
    )


@pytest.mark.parametrize(("text", "insecure"), [("false", False), ("true", True), ("", False)])
async def test_insecure_skip_tls_verify_reads_yaml_booleans(
    tmp_path: Path, text: str, insecure: bool
) -> None:
    path = tmp_path / "kc"
    kubeconfig(path)
    path.write_text(
        path.read_text().replace(
            "server: https://k:6443",
            f"server: https://k:6443\n    insecure-skip-tls-verify: {text}",
        )
    )
    config = await load_kubeconfig(str(path))
    assert config.insecure is insecure
    assert ssl_context(config).verify_mode == (ssl.CERT_NONE if insecure else ssl.CERT_REQUIRED)


async def test_the_string_false_is_refused_before_the_auth_provider_library_sees_it(
    tmp_path: Path,
) -> None:
    """kubernetes-asyncio's loader, used for auth-provider users, coerces the same way."""
    provider = {"name": "oidc", "config": {"client-id": "k", "idp-issuer-url": "https://idp"}}
    path = kubeconfig(
        tmp_path / "kc",
        cluster={"server": "https://k", "insecure-skip-tls-verify": "false"},
        user={"auth-provider": provider},
    )
    with pytest.raises(KubeConfigError, match="insecure-skip-tls-verify must be true or false"):
        await load_kubeconfig(str(path))


@pytest.mark.parametrize(
    ("cluster", "user", "problem"),
    [
        ({"disable-compression": "false"}, {}, "cluster 'c': disable-compression must be true or false (a YAML boolean), not a string 'false'"),
        ({"tls-server-name": 7}, {}, "cluster 'c': tls-server-name must be a string, not an integer"),
        ({"certificate-authority": ["ca.crt"]}, {}, "cluster 'c': certificate-authority must be a string, not a list"),
        ({"certificate-authority-data": 12}, {}, "cluster 'c': certificate-authority-data must be a string, not an integer"),
        ({"proxy-url": {"url": "http://p"}}, {}, "cluster 'c': proxy-url must be a string, not a mapping"),
        ({}, {"token": 123456}, "user 'u': token must be a string, not an integer"),
        ({}, {"username": "ann", "password": 1234}, "user 'u': password must be a string, not an integer"),
        ({}, {"tokenFile": True}, "user 'u': tokenFile must be a string, not a boolean"),
        ({}, {"client-certificate-data": 1, "client-key-data": 2}, "user 'u': client-certificate-data must be a string, not an integer"),
        ({}, {"exec": {"command": 7, "apiVersion": V1}}, "user 'u': exec.command must be a string, not an integer"),
        ({}, {"exec": {"command": "x", "apiVersion": V1, "provideClusterInfo": "false"}}, "user 'u': exec.provideClusterInfo must be true or false (a YAML boolean), not a string 'false'"),
        ({}, {"exec": {"command": "x", "apiVersion": V1, "interactiveMode": True}}, "user 'u': exec.interactiveMode must be a string, not a boolean"),
        ({}, {"exec": {"command": "x", "apiVersion": V1, "interactiveMode": "always"}}, "user 'u': exec.interactiveMode 'always' is not one of Never, IfAvailable, Always"),
        ({}, {"exec": {"command": "x", "apiVersion": V1, "args": ["--port", 8080]}}, "user 'u': exec.args must be a list of strings"),
        ({}, {"exec": {"command": "x", "apiVersion": V1, "env": [{"name": "A", "value": 1}]}}, "user 'u': exec.env must be a list of name/value entries, both strings"),
    ],
)  # fmt: skip
async def test_fields_of_the_wrong_type_are_refused_naming_the_field(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any], problem: str
) -> None:
    """Nothing is coerced with bool() or str(): client-go refuses such a file, and a number
    that was meant as a string is a mistake to report, not to guess at."""
    path = kubeconfig(tmp_path / "kc", cluster={"server": "https://k", **cluster}, user=user)
    with pytest.raises(KubeConfigError) as err:
        await load_kubeconfig(str(path))
    assert str(err.value) == f"cannot use kubeconfig {path}: {problem}"
    for secret in ("123456", "1234"):
        assert secret not in str(err.value)  # a token or password of the wrong type is not shown


async def test_context_and_current_context_fields_must_be_strings(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump({"current-context": 7}))
    with pytest.raises(KubeConfigError) as err:
        await load_kubeconfig(str(path))
    assert (
        str(err.value)
        == f"cannot use kubeconfig {path}: current-context must be a string, not an integer"
    )
    path.write_text(yaml.safe_dump({"contexts": [{"name": "x", "context": {"cluster": 1}}]}))
    with pytest.raises(KubeConfigError) as err:
        await load_kubeconfig(str(path), context="x")
    assert (
        str(err.value)
        == f"cannot use kubeconfig {path}: context 'x': cluster must be a string, not an integer"
    )


async def test_provide_cluster_info_false_gives_the_plugin_no_cluster(tmp_path: Path) -> None:
    exec_ = {"command": "x", "apiVersion": V1, "provideClusterInfo": False}
    config = await load_kubeconfig(str(kubeconfig(tmp_path / "kc", user={"exec": exec_})))
    assert isinstance(config.credentials, ExecCredentials)
    assert config.credentials.config.cluster_info is None


async def test_client_certificate_and_ca_data_authenticate_over_tls(
    tmp_path: Path, mtls_server: tuple[str, Issued]
) -> None:
    url, ca = mtls_server
    client_cert = client_pair(ca, "alice")
    path = kubeconfig(
        tmp_path / "kc",
        cluster={"server": url, "certificate-authority-data": b64(ca.cert_pem)},
        user={
            "client-certificate-data": b64(client_cert.cert_pem),
            "client-key-data": b64(client_cert.key_pem),
        },
    )
    client = await KubeClient.from_kubeconfig(str(path))
    try:
        assert await client.request("GET", ApiPath.parse("/whoami")) == {"cn": "alice"}
    finally:
        await client.close()


async def test_client_certificate_files_are_read_relative_to_the_kubeconfig(
    tmp_path: Path, mtls_server: tuple[str, Issued]
) -> None:
    url, ca = mtls_server
    client_cert = client_pair(ca, "bob")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "bob.crt").write_bytes(client_cert.cert_pem)
    (tmp_path / "bob.key").write_bytes(client_cert.key_pem)
    path = kubeconfig(
        tmp_path / "kc",
        cluster={"server": url, "certificate-authority": "ca.crt"},
        user={"client-certificate": "bob.crt", "client-key": "bob.key"},
    )
    client = await KubeClient.from_kubeconfig(str(path))
    try:
        assert await client.request("GET", ApiPath.parse("/whoami")) == {"cn": "bob"}
    finally:
        await client.close()


async def test_a_key_that_does_not_match_the_certificate_is_named(tmp_path: Path) -> None:
    ca = new_ca("test-ca", validity=DAY)
    one, other = client_pair(ca, "one"), client_pair(ca, "other")
    path = kubeconfig(
        tmp_path / "kc",
        user={
            "client-certificate-data": b64(one.cert_pem),
            "client-key-data": b64(other.key_pem),
        },
    )
    with pytest.raises(KubeConfigError, match="user 'u': unusable client certificate or key"):
        await load_kubeconfig(str(path))


async def test_two_files_merge_first_wins_and_paths_follow_their_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = tmp_path / "a" / "kc"
    first.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": "https://first"}}],
                "users": [{"name": "u", "user": {"token": "from-first"}}],
            }
        )
    )
    second = kubeconfig(
        tmp_path / "b" / "kc",
        cluster={"server": "https://second", "certificate-authority": "ca.crt"},
        user={"token": "from-second"},
    )
    (tmp_path / "b" / "ca.crt").write_bytes(new_ca("b-ca", validity=DAY).cert_pem)
    config = await load_kubeconfig(f"{first}{os.pathsep}{second}")
    # The cluster and user come from the first file, the context and current-context from
    # the second (the first sets neither).
    assert config.server == "https://first"
    assert (await config.credentials.current()).headers["Authorization"] == "Bearer from-first"
    config = await load_kubeconfig(f"{second}{os.pathsep}{first}")
    assert config.server == "https://second"
    assert config.ca_file == str(tmp_path / "b" / "ca.crt")


@pytest.mark.parametrize(
    ("document", "context", "problem"),
    [
        ({}, "nope", "context 'nope' not found"),
        ({"contexts": [{"name": "x", "context": {"cluster": "gone", "user": "u"}}]}, "x", "cluster 'gone' not found"),
        ({"clusters": [{"name": "c", "cluster": {"server": "https://k"}}], "contexts": [{"name": "x", "context": {"cluster": "c", "user": "gone"}}]}, "x", "user 'gone' not found"),
        ({"clusters": [{"name": "c", "cluster": {}}], "contexts": [{"name": "x", "context": {"cluster": "c"}}]}, "x", "cluster 'c' has no server"),
        ({"contexts": []}, None, "no current-context is set and no context was given"),
    ],
)  # fmt: skip
async def test_missing_entries_are_named(
    tmp_path: Path, document: dict[str, Any], context: str | None, problem: str
) -> None:
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(KubeConfigError) as err:
        await load_kubeconfig(str(path), context=context)
    assert str(err.value) == f"cannot use kubeconfig {path}: {problem}"


async def test_impersonation_is_refused_naming_the_user(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "kc", user={"token": "t", "as": "admin"})
    with pytest.raises(KubeConfigError, match="user 'u': impersonation \\(as\\) is not supported"):
        await load_kubeconfig(str(path))


def plugin(tmp_path: Path, body: str) -> dict[str, Any]:
    """An exec entry running ``body`` as a Python script; it may use ``runs`` (how many times
    it ran before, counted in a file) and ``info`` (KUBERNETES_EXEC_INFO, decoded)."""
    script = tmp_path / "plugin.py"
    script.write_text(
        "import json, os, pathlib, sys\n"
        f"counter = pathlib.Path({str(tmp_path / 'runs')!r})\n"
        "runs = int(counter.read_text()) if counter.exists() else 0\n"
        "counter.write_text(str(runs + 1))\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n" + body
    )
    return {"apiVersion": V1, "command": sys.executable, "args": [str(script)]}


def credential(status: str) -> str:
    head = f"print(json.dumps({{'apiVersion': {V1!r}, 'kind': 'ExecCredential', 'status': "
    return head + status + "}))\n"


async def test_an_exec_plugin_token_is_cached_until_it_expires(tmp_path: Path) -> None:
    exec_ = plugin(
        tmp_path,
        credential(
            "{'token': f'tok-{runs}-' + os.environ['EXTRA'] + '-' + info['spec']['cluster']"
            "['server'], 'expirationTimestamp': '2030-01-01T00:00:00Z'}"
        ),
    )
    exec_ |= {"env": [{"name": "EXTRA", "value": "x"}], "provideClusterInfo": True}
    config = await load_kubeconfig(str(kubeconfig(tmp_path / "kc", user={"exec": exec_})))
    credentials = config.credentials
    assert isinstance(credentials, ExecCredentials)
    now = [datetime.datetime(2029, 12, 31, 23, 59, tzinfo=datetime.UTC).timestamp()]
    credentials.now = lambda: now[0]
    first = await credentials.current()
    assert first.headers == {"Authorization": "Bearer tok-0-x-https://k:6443"}
    assert await credentials.current() == first  # cached: the plugin did not run again
    now[0] += 60  # 2030-01-01T00:00:00Z: expired
    assert (await credentials.current()).headers["Authorization"].startswith("Bearer tok-1-")
    credentials.invalidate()  # after a 401
    assert (await credentials.current()).headers["Authorization"].startswith("Bearer tok-2-")
    assert (tmp_path / "runs").read_text() == "3"


async def test_an_exec_plugin_may_return_a_client_certificate(
    tmp_path: Path, mtls_server: tuple[str, Issued]
) -> None:
    url, ca = mtls_server
    pair = client_pair(ca, "from-plugin")
    exec_ = plugin(
        tmp_path,
        credential(
            f"{{'clientCertificateData': {pair.cert_pem.decode()!r}, "
            f"'clientKeyData': {pair.key_pem.decode()!r}}}"
        ),
    )
    path = kubeconfig(
        tmp_path / "kc",
        cluster={"server": url, "certificate-authority-data": b64(ca.cert_pem)},
        user={"exec": exec_},
    )
    client = await KubeClient.from_kubeconfig(str(path))
    try:
        assert await client.request("GET", ApiPath.parse("/whoami")) == {"cn": "from-plugin"}
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("print('not json')", "printed no JSON ExecCredential"),
        ("print('{\"kind\": ' + '7' * 5000 + '}')", "printed no JSON ExecCredential: a number too long to decode"),
        ("print('[' * 100000)", "printed no JSON ExecCredential: nested too deeply"),
        ("print(json.dumps({'kind': 'Other'}))", "printed JSON that is not an ExecCredential"),
        (credential("{}"), "status has neither token nor clientCertificateData"),
        (credential("{'token': 't', 'expirationTimestamp': 'soon'}"), "'soon' is not an RFC 3339 time"),
        ("sys.stderr.write('login required'); sys.exit(3)", "exited with 3: login required"),
        (
            "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1', 'kind': 'ExecCredential', 'status': {'token': 't'}}))",
            "answered apiVersion 'client.authentication.k8s.io/v1beta1'",
        ),
    ],
)  # fmt: skip
async def test_bad_plugin_output_is_a_clear_error(tmp_path: Path, body: str, problem: str) -> None:
    config = await load_kubeconfig(
        str(kubeconfig(tmp_path / "kc", user={"exec": plugin(tmp_path, body)}))
    )
    with pytest.raises(CredentialError) as err:
        await config.credentials.current()
    assert f"exec plugin {sys.executable!r} of user 'u'" in str(err.value)
    assert problem in str(err.value)


@pytest.mark.parametrize(
    ("exec_", "problem"),
    [
        ({"apiVersion": V1}, "exec.command is required"),
        ({"command": "x", "apiVersion": "client.authentication.k8s.io/v1alpha1"}, "exec.apiVersion 'client.authentication.k8s.io/v1alpha1' is not supported"),
        ({"command": "x", "apiVersion": V1, "interactiveMode": "Always"}, "exec.interactiveMode Always needs a terminal"),
    ],
)  # fmt: skip
async def test_unusable_exec_entries_are_refused_at_load(
    tmp_path: Path, exec_: dict[str, Any], problem: str
) -> None:
    with pytest.raises(KubeConfigError, match=f"user 'u': {problem}"):
        await load_kubeconfig(str(kubeconfig(tmp_path / "kc", user={"exec": exec_})))


async def test_an_oidc_auth_provider_falls_back_to_kubernetes_asyncio(tmp_path: Path) -> None:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    id_token = f"{part({'alg': 'none'})}.{part({'exp': 4102444800})}.sig"  # expires in 2100
    provider = {
        "name": "oidc",
        "config": {"client-id": "k", "idp-issuer-url": "https://idp", "id-token": id_token},
    }
    path = kubeconfig(tmp_path / "kc", user={"auth-provider": provider})
    config = await load_kubeconfig(str(path))
    assert config.server == "https://k:6443"
    headers = (await config.credentials.current()).headers
    assert {k.lower(): v for k, v in headers.items()} == {"authorization": f"Bearer {id_token}"}


def test_in_cluster_reads_the_service_account(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_bytes(new_ca("cluster-ca", validity=DAY).cert_pem)
    config = in_cluster_config(host="fd00::1", port="443", service_account=tmp_path)
    assert config.server == "https://[fd00::1]:443"
    assert config.ca_file == str(tmp_path / "ca.crt")
    assert isinstance(config.credentials, TokenFileCredentials)


def test_in_cluster_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_HOST/PORT are not set"):
        in_cluster_config(host="", port="", service_account=tmp_path)
    with pytest.raises(KubeConfigError, match=f"no CA certificate at {tmp_path}/ca.crt"):
        in_cluster_config(host="10.0.0.1", port="443", service_account=tmp_path)
    (tmp_path / "ca.crt").write_text("x")
    with pytest.raises(KubeConfigError, match=f"cannot read token file {tmp_path}/token"):
        in_cluster_config(host="10.0.0.1", port="443", service_account=tmp_path)


async def test_a_401_makes_the_next_request_run_the_plugin_again(tmp_path: Path) -> None:
    async def only_second_token(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer tok-1":
            return web.json_response({"kind": "Status", "reason": "Unauthorized"}, status=401)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/x", only_second_token)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    exec_ = plugin(tmp_path, credential("{'token': f'tok-{runs}'}"))  # no expiry: cached
    path = kubeconfig(
        tmp_path / "kc",
        cluster={"server": f"http://127.0.0.1:{runner.addresses[0][1]}"},
        user={"exec": exec_},
    )
    client = await KubeClient.from_kubeconfig(str(path))
    try:
        with pytest.raises(ApiError) as err:
            await client.request("GET", ApiPath.parse("/x"))
        assert err.value.status == 401
        assert await client.request("GET", ApiPath.parse("/x")) == {"ok": True}
        assert (tmp_path / "runs").read_text() == "2"
    finally:
        await client.close()
        await runner.cleanup()
