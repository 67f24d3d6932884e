"""The cluster connection: kubeconfig files and the in-cluster service account, loaded into a
small :class:`ClusterConfig` (docs/development.md, "The operator's own kubeconfig loader").

Why not kubernetes-asyncio's loader: importing ``kubernetes_asyncio.config`` imports the whole
generated client (its package ``__init__``), about 1,260 modules and 63 MiB of resident memory,
for a process whose idle size should stay near 60 MB; the operator sends its own requests
(kube/rest/transport.py) and only needs the server, TLS settings and credentials.

Supported, with client-go's rules: several files joined by ``os.pathsep`` (like $KUBECONFIG;
missing ones skipped; the first file that names a cluster, user or context, or sets
``current-context``, wins); relative paths resolved against the directory of the file that holds
them; CA, client certificate and key as files or ``-data``; ``insecure-skip-tls-verify``,
``tls-server-name``, ``proxy-url`` (http/https: aiohttp has no SOCKS); ``token``, ``tokenFile``
(re-read every minute), ``username``/``password``; exec credential plugins
(kube/rest/execplugin.py). Users with an ``auth-provider`` (oidc; gcp and azure were removed from
client-go) are handed to kubernetes-asyncio's loader, imported only then
(kube/rest/authprovider.py). Refused with an error naming the user: impersonation (``as``,
``as-groups``, ...), which kubernetes-asyncio ignored silently, and ``interactiveMode: Always``.

Types are client-go's too, which decodes the file into typed structs: a boolean field
(``insecure-skip-tls-verify``, ``disable-compression``, exec ``provideClusterInfo``) must be a
YAML boolean, a string field a string, ``args`` and ``env`` lists of strings. Anything else is a
:class:`KubeConfigError` naming the entry and the field, never coerced: ``bool("false")`` is
True, so ``insecure-skip-tls-verify: "false"`` once turned TLS verification off (issue 24, F5).

Files are read synchronously: once, at start, before anything else runs.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from vworkspace.kube.rest.config import ClusterConfig, KubeConfigError
from vworkspace.kube.rest.credentials import (
    ClientCertificate,
    CredentialError,
    Credentials,
    StaticCredentials,
    TokenFileCredentials,
    basic,
    bearer,
    load_certificate,
)
from vworkspace.kube.rest.execplugin import API_VERSIONS, ExecConfig, ExecCredentials

DEFAULT_KUBECONFIG = "~/.kube/config"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_CLUSTER_EXTENSION = "client.authentication.k8s.io/exec"
IMPERSONATION = ("as", "as-uid", "as-groups", "as-user-extra")

Entry = dict[str, Any]


@attrs.frozen
class _Merged:
    """Named entries of all files (first wins), each with the directory of its file."""

    clusters: dict[str, tuple[Entry, Path]]
    users: dict[str, tuple[Entry, Path]]
    contexts: dict[str, tuple[Entry, Path]]
    current_context: str | None


def existing_kubeconfigs(paths: str) -> list[str]:
    """``paths`` (``os.pathsep``-separated) with ``~`` expanded, those that are files; raise
    :class:`KubeConfigError` "no kubeconfig at ..." when none is."""
    expanded = [os.path.expanduser(p) for p in paths.split(os.pathsep) if p]
    found = [p for p in expanded if Path(p).is_file()]
    if not found:
        raise KubeConfigError(f"no kubeconfig at {os.pathsep.join(expanded)}")
    return found


async def load_kubeconfig(
    paths: str | None,
    *,
    context: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClusterConfig:
    """Load ``context`` (default: ``current-context``) from the kubeconfig files in ``paths``
    (None: ``~/.kube/config``). ``environ``: the environment exec plugins run with (the app's;
    empty if not given). Raises :class:`KubeConfigError` naming the file and the problem."""
    files = existing_kubeconfigs(paths or DEFAULT_KUBECONFIG)
    where = os.pathsep.join(files)
    merged = _merge([(Path(f), _read_file(f)) for f in files])
    try:
        name = context or merged.current_context
        if not name:
            raise KubeConfigError("no current-context is set and no context was given")
        ctx = _lookup(merged.contexts, "context", name)[0]
        what = f"context {name!r}"
        cluster_name, user_name = _str(ctx, "cluster", what=what), _str(ctx, "user", what=what)
        cluster, cluster_dir = _lookup(merged.clusters, "cluster", cluster_name)
        user, user_dir = _lookup(merged.users, "user", user_name) if user_name else ({}, Path())
        if "auth-provider" in user:
            # kubernetes-asyncio coerces as bool() does (not "false" is False, so verification
            # would be off): the cluster's fields are checked here first.
            _cluster_settings(cluster_name, cluster, cluster_dir)
            # Imported here only: it loads kubernetes-asyncio (kube/rest/authprovider.py).
            from vworkspace.kube.rest.authprovider import load_with_library

            return await load_with_library(where, context=name)
        return _cluster_config(
            cluster_entry=(cluster_name, cluster, cluster_dir),
            user_entry=(user_name, user, user_dir),
            environ=environ or {},
        )
    except (KubeConfigError, CredentialError, ssl.SSLError, ValueError, TypeError) as err:
        raise KubeConfigError(f"cannot use kubeconfig {where}: {err}") from err


def in_cluster_config(
    *, host: str, port: str, service_account: Path = SERVICE_ACCOUNT
) -> ClusterConfig:
    """The Pod's service account: ``host``/``port`` from ``KUBERNETES_SERVICE_HOST``/``_PORT``
    (the app reads them), the token re-read every minute (projected tokens rotate)."""
    where = "cannot use the in-cluster service account"
    if not host or not port:
        raise KubeConfigError(f"{where}: KUBERNETES_SERVICE_HOST/PORT are not set")
    ca = service_account / "ca.crt"
    if not ca.is_file():
        raise KubeConfigError(f"{where}: no CA certificate at {ca}")
    try:
        credentials = TokenFileCredentials(service_account / "token").load()
    except CredentialError as err:
        raise KubeConfigError(f"{where}: {err}") from err
    server_host = f"[{host}]" if ":" in host else host
    return ClusterConfig(
        server=f"https://{server_host}:{port}", ca_file=str(ca), credentials=credentials
    )


def _read_file(path: str) -> Entry:
    try:
        with open(path, "rb") as source:
            doc = yaml.load(source, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError) as err:
        raise KubeConfigError(f"cannot use kubeconfig {path}: {err}") from err
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise KubeConfigError(
            f"cannot use kubeconfig {path}: not a kubeconfig file (a YAML {type(doc).__name__})"
        )
    return doc


def _merge(docs: list[tuple[Path, Entry]]) -> _Merged:
    merged = _Merged(clusters={}, users={}, contexts={}, current_context=None)
    current: str | None = None
    for path, doc in docs:
        for section, key, into in (
            ("clusters", "cluster", merged.clusters),
            ("users", "user", merged.users),
            ("contexts", "context", merged.contexts),
        ):
            for name, entry in _named(doc, section=section, key=key, path=path):
                into.setdefault(name, (entry, path.parent))
        what = f"cannot use kubeconfig {path}"
        current = current or _str(doc, "current-context", what=what) or None
    return attrs.evolve(merged, current_context=current)


def _named(doc: Entry, *, section: str, key: str, path: Path) -> list[tuple[str, Entry]]:
    items = doc.get(section) or []
    problem = f"cannot use kubeconfig {path}: not a kubeconfig file ({section}"
    if not isinstance(items, list):
        raise KubeConfigError(f"{problem} is not a list)")
    found = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise KubeConfigError(f"{problem}: an entry without a name)")
        entry = item.get(key) or {}
        if not isinstance(entry, dict):
            raise KubeConfigError(f"{problem}: {item['name']!r} has no {key} mapping)")
        found.append((item["name"], entry))
    return found


def _lookup(entries: dict[str, tuple[Entry, Path]], kind: str, name: str) -> tuple[Entry, Path]:
    if not name:
        raise KubeConfigError(f"the context names no {kind}")
    if name not in entries:
        raise KubeConfigError(f"{kind} {name!r} not found")
    return entries[name]


def _cluster_config(
    *,
    cluster_entry: tuple[str, Entry, Path],
    user_entry: tuple[str, Entry, Path],
    environ: Mapping[str, str],
) -> ClusterConfig:
    cluster_name, cluster, cluster_dir = cluster_entry
    config, ca_data = _cluster_settings(cluster_name, cluster, cluster_dir)
    user_name, user, user_dir = user_entry
    return attrs.evolve(
        config,
        client_certificate=_client_certificate(user_name, user, user_dir),
        credentials=_credentials(
            user_name,
            user,
            user_dir,
            cluster_info=_exec_cluster_info(config, ca_data, cluster),
            environ=environ,
        ),
    )


def _cluster_settings(
    cluster_name: str, cluster: Entry, cluster_dir: Path
) -> tuple[ClusterConfig, bytes | None]:
    """The cluster half of the config (no credentials) and the CA's bytes, if any."""
    what = f"cluster {cluster_name!r}"
    server = _str(cluster, "server", what=what)
    if not server:
        raise KubeConfigError(f"{what} has no server")
    proxy = _str(cluster, "proxy-url", what=what) or None
    if proxy and not proxy.startswith(("http://", "https://")):
        raise KubeConfigError(f"{what}: proxy-url {proxy!r} is not supported (http or https only)")
    _bool(cluster, "disable-compression", what=what)  # unused; checked as client-go does
    ca_data = _data(cluster, "certificate-authority", cluster_dir, what=what)
    ca_file = _path(_str(cluster, "certificate-authority", what=what), cluster_dir)
    config = ClusterConfig(
        server=server,
        ca_file=ca_file if cluster.get("certificate-authority-data") is None else None,
        ca_data=_pem_text(ca_data, cluster_name)
        if cluster.get("certificate-authority-data")
        else None,
        insecure=_bool(cluster, "insecure-skip-tls-verify", what=what),
        tls_server_name=_str(cluster, "tls-server-name", what=what) or None,
        proxy_url=proxy,
    )
    return config, ca_data


_YAML_TYPES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _yaml_type(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return _YAML_TYPES.get(type(value), f"a YAML {type(value).__name__}")


def _named_field(what: str, field: str, *, nested: bool) -> str:
    """``cluster 'c': server``, or for a nested section ``user 'u': exec.command``."""
    return f"{what}.{field}" if nested else f"{what}: {field}"


def _bool(entry: Entry, field: str, *, what: str, nested: bool = False) -> bool:
    """A boolean field as client-go reads it: a YAML boolean, or absent/null for false.

    A string is refused, not converted: ``bool("false")`` is True. The value is shown (the
    boolean fields hold no secrets), shortened."""
    value = entry.get(field)
    if value is None or isinstance(value, bool):
        return bool(value)
    shown = f"{_yaml_type(value)} {str(value)[:40]!r}"
    raise KubeConfigError(
        f"{_named_field(what, field, nested=nested)} must be true or false "
        f"(a YAML boolean), not {shown}"
    )


def _str(entry: Entry, field: str, *, what: str, nested: bool = False) -> str:
    """A string field as client-go reads it: a YAML string, or absent/null for "".

    A number, a boolean or a list is refused, not converted with ``str()`` (client-go refuses
    the file). The value is not shown: the field may be a token or a password."""
    value = entry.get(field)
    if value is None or isinstance(value, str):
        return value or ""
    raise KubeConfigError(
        f"{_named_field(what, field, nested=nested)} must be a string, not {_yaml_type(value)}"
    )


def _strings(entry: Entry, field: str, *, what: str) -> list[str]:
    """A list-of-strings field (exec ``args``); absent or null is empty."""
    value = entry.get(field)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise KubeConfigError(f"{what}.{field} must be a list of strings")
    return value


def _path(value: str, base: Path) -> str | None:
    if not value:
        return None
    path = Path(value)
    return str(path if path.is_absolute() else base / path)


def _data(entry: Entry, field: str, base: Path, *, what: str) -> bytes | None:
    """The bytes of ``field-data`` (base64) or of the file ``field`` names; None if neither."""
    data = _str(entry, f"{field}-data", what=what)
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise KubeConfigError(f"{what}: {field}-data is not valid base64") from None
    path = _path(_str(entry, field, what=what), base)
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise KubeConfigError(f"{what}: cannot read {field} {path}: {err.strerror}") from None


def _pem_text(data: bytes | None, cluster_name: str) -> str | None:
    try:
        return data.decode("ascii") if data else None
    except UnicodeDecodeError:
        raise KubeConfigError(
            f"cluster {cluster_name!r}: certificate-authority-data is not PEM"
        ) from None


def _client_certificate(user_name: str, user: Entry, base: Path) -> ClientCertificate | None:
    what = f"user {user_name!r}"
    cert = _data(user, "client-certificate", base, what=what)
    key = _data(user, "client-key", base, what=what)
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise KubeConfigError(f"{what}: a client certificate needs both the certificate and key")
    certificate = ClientCertificate(cert_pem=cert, key_pem=key)
    try:  # fail at start, naming the user, rather than at the first TLS handshake
        load_certificate(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), certificate)
    except ssl.SSLError as err:
        raise KubeConfigError(f"{what}: unusable client certificate or key: {err}") from None
    return certificate


def _credentials(
    user_name: str,
    user: Entry,
    base: Path,
    *,
    cluster_info: Mapping[str, Any],
    environ: Mapping[str, str],
) -> Credentials:
    what = f"user {user_name!r}"
    refused = [key for key in IMPERSONATION if user.get(key)]
    if refused:
        raise KubeConfigError(f"{what}: impersonation ({', '.join(refused)}) is not supported")
    token, token_file = _str(user, "token", what=what), _str(user, "tokenFile", what=what)
    username, password = _str(user, "username", what=what), _str(user, "password", what=what)
    kinds = [
        kind
        for kind, present in (
            ("token", token or token_file),
            ("username/password", username or password),
            ("exec", user.get("exec")),
        )
        if present
    ]
    if len(kinds) > 1:
        raise KubeConfigError(f"{what}: more than one authentication method ({', '.join(kinds)})")
    if user.get("exec"):
        return ExecCredentials(
            _exec_config(user_name, user["exec"], base, cluster_info), environ=environ
        )
    if token_file:
        return TokenFileCredentials(Path(str(_path(token_file, base)))).load()
    if token:
        return StaticCredentials(bearer(token))
    if username or password:
        return StaticCredentials(basic(username, password))
    return StaticCredentials()


def _exec_config(
    user_name: str, spec: Any, base: Path, cluster_info: Mapping[str, Any]
) -> ExecConfig:
    what = f"user {user_name!r}: exec"
    if not isinstance(spec, dict):
        raise KubeConfigError(f"{what}.command is required")
    command = _str(spec, "command", what=what, nested=True)
    if not command:
        raise KubeConfigError(f"{what}.command is required")
    if spec.get("apiVersion") not in API_VERSIONS:
        raise KubeConfigError(
            f"{what}.apiVersion {spec.get('apiVersion')!r} is not supported "
            f"(use one of {', '.join(API_VERSIONS)})"
        )
    _interactive_mode(spec, what=what)
    if os.sep in command and not os.path.isabs(command):
        command = str(base / command)  # as client-go: relative to the kubeconfig's directory
    return ExecConfig(
        user=user_name,
        command=command,
        args=tuple(_strings(spec, "args", what=what)),
        env=_exec_env(spec, what=what),
        api_version=spec["apiVersion"],
        cluster_info=cluster_info
        if _bool(spec, "provideClusterInfo", what=what, nested=True)
        else None,
    )


INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")


def _interactive_mode(spec: Entry, *, what: str) -> None:
    """client-go's three values (absent: its default); ``Always`` needs a terminal."""
    mode = _str(spec, "interactiveMode", what=what, nested=True)
    if mode and mode not in INTERACTIVE_MODES:
        raise KubeConfigError(
            f"{what}.interactiveMode {mode!r} is not one of {', '.join(INTERACTIVE_MODES)}"
        )
    if mode == "Always":
        raise KubeConfigError(
            f"{what}.interactiveMode Always needs a terminal; the operator has none"
        )


def _exec_env(spec: Entry, *, what: str) -> dict[str, str]:
    env = spec.get("env") or []
    if not isinstance(env, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("name"), str)
        and isinstance(e.get("value", ""), str)
        for e in env
    ):
        raise KubeConfigError(f"{what}.env must be a list of name/value entries, both strings")
    return {e["name"]: e.get("value", "") for e in env}


def _exec_cluster_info(config: ClusterConfig, ca: bytes | None, cluster: Entry) -> Entry:
    """``spec.cluster`` of ``KUBERNETES_EXEC_INFO`` (client-go's
    ``clientauthentication.Cluster``)."""
    info: Entry = {"server": config.server, "insecure-skip-tls-verify": config.insecure}
    if config.tls_server_name:
        info["tls-server-name"] = config.tls_server_name
    if ca:
        info["certificate-authority-data"] = base64.b64encode(ca).decode()
    if config.proxy_url:
        info["proxy-url"] = config.proxy_url
    for extension in cluster.get("extensions") or []:
        if isinstance(extension, dict) and extension.get("name") == EXEC_CLUSTER_EXTENSION:
            info["config"] = extension.get("extension")
    return info
