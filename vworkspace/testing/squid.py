"""A real forward proxy for the egress tests: Debian's squid, with CONNECT and Basic auth.

Pull mode's clusters often reach their control plane only through an authenticating corporate
proxy (issue 27), so the tests put the operator behind the proxy those networks actually run
rather than a hand-made imitation: ``squid -N -f <conf>`` on ``127.0.0.1:<free port>``, with
its own configuration, pid and log files in a temporary directory, no disk cache, CONNECT
allowed to any port, and Basic auth checked by squid's ``basic_ncsa_auth`` helper against an
htpasswd file (APR1 hash from ``openssl passwd``, so no extra dependency).

The proof that a client went *through* the proxy: squid resolves names from its own
``hosts_file``, which maps test names such as ``controlplane.vworkspace.test`` to 127.0.0.1.
Those names do not resolve on the host (``.test`` is reserved, RFC 6761), so a client that
reaches ``https://controlplane.vworkspace.test:<port>`` can only have done it via squid, and
squid's access log shows the CONNECT.

Trade-offs: squid writes an access-log line when a transaction *ends*, so a CONNECT tunnel a
client keeps alive appears only once it closes (stop the client, or the proxy, before reading
it). When run as root, squid drops to its ``cache_effective_user`` (Debian: ``proxy``), so the
working directory is a fresh one under the system temp directory owned by that user rather than
a pytest ``tmp_path`` (whose parents are private to root). ``scripts/install-squid.sh``
installs the package.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import attrs

from vworkspace.testing.controlplane import free_port
from vworkspace.testing.processes import ManagedProcess, StartStop

INSTALL_SCRIPT = "scripts/install-squid.sh"
SQUID_ENV = "VWORKSPACE_SQUID"
_HELPERS = Path("/usr/lib/squid")
_RUN_AS = "proxy"  # Debian's cache_effective_user; squid refuses to serve as root
_LOG_FORMAT = "vworkspace %ts.%03tu %rm %ru %>Hs %un %Ss"


class SquidError(RuntimeError):
    """squid is missing, failed to start or wrote something unexpected; the message says which."""


@attrs.frozen
class AccessEntry:
    """One line of squid's access log. ``target``: ``host:port`` for CONNECT, else the URL;
    ``user``: the authenticated user name, None when there was none."""

    timestamp: float
    method: str
    target: str
    status: int
    user: str | None
    result: str  # squid's result code, e.g. TCP_TUNNEL, TCP_DENIED

    @property
    def host(self) -> str:
        """The target's host (for CONNECT and absolute URLs alike)."""
        rest = self.target.split("://", 1)[-1]
        return rest.split("/", 1)[0].rsplit(":", 1)[0]


def parse_access_log(text: str) -> list[AccessEntry]:
    """The entries of a log written with this module's ``logformat``; other lines are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) != 7 or fields[0] != "vworkspace":
            continue
        _, stamp, method, target, status, user, result = fields
        entries.append(
            AccessEntry(
                timestamp=float(stamp),
                method=method,
                target=target,
                status=int(status),
                user=None if user == "-" else user,
                result=result,
            )
        )
    return entries


def find_squid(env: Mapping[str, str]) -> Path:
    """``$VWORKSPACE_SQUID``, else squid on PATH or in /usr/sbin (not on a user's PATH)."""
    named = env.get(SQUID_ENV)
    found = named or shutil.which("squid", path=env.get("PATH")) or "/usr/sbin/squid"
    if not Path(found).is_file():
        raise SquidError(
            f"no squid binary (looked at {'$' + SQUID_ENV if named else 'PATH and /usr/sbin'}); "
            f"{INSTALL_SCRIPT} installs Debian's squid package"
        )
    return Path(found)


def _apr1_hash(password: str) -> str:
    # The password goes on stdin, never into a process list.
    done = subprocess.run(
        ["openssl", "passwd", "-apr1", "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if done.returncode != 0:
        raise SquidError(f"openssl passwd -apr1 failed: {done.stderr.strip()}")
    return done.stdout.strip()


class Squid(StartStop):
    """squid on ``127.0.0.1:<free port>``. With ``user``/``password``, every request must carry
    Basic proxy credentials (else 407); without, any local client is served. ``hosts``: names
    squid (and only squid) resolves to 127.0.0.1."""

    def __init__(
        self,
        *,
        user: str | None = "egress",
        password: str | None = "egress-proxy-password",
        hosts: tuple[str, ...] = ("controlplane.vworkspace.test",),
        start_timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if (user is None) != (password is None):
            raise ValueError("Squid: give both user and password, or neither")
        self.user = user
        self.password = password
        self.hosts = hosts
        self.start_timeout = start_timeout
        self.binary = find_squid(os.environ if env is None else env)
        self.port = 0
        self.directory: Path | None = None
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """The proxy's URL without credentials (what may be logged)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url_with_credentials(self) -> str:
        """The proxy's URL with ``user:password@`` (what goes into HTTPS_PROXY)."""
        if self.user is None or self.password is None:
            return self.url
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        """The proxy's URL with other credentials (a wrong password, for example)."""
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def access_log_path(self) -> Path:
        assert self.directory is not None, "Squid was not started"
        return self.directory / "access.log"

    @property
    def cache_log_path(self) -> Path:
        assert self.directory is not None, "Squid was not started"
        return self.directory / "cache.log"

    def access_log(self) -> list[AccessEntry]:
        """The transactions squid has finished so far (a live CONNECT tunnel is not among
        them: see the module's docstring)."""
        try:
            return parse_access_log(self.access_log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return []

    def start(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="vworkspace-squid-"))
        self.port = free_port()
        conf = self._write_files(self.directory)
        self._proc = ManagedProcess(
            name="squid",
            argv=[str(self.binary), "-N", "-f", str(conf)],
            log_path=self.directory / "squid.out",
        )
        self._proc.start()
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop squid and its helpers (their process group). The files stay until
        :meth:`cleanup`, so a failing test can still read the logs."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.stop()

    def cleanup(self) -> None:
        """Remove the working directory (after :meth:`stop`)."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    def _write_files(self, directory: Path) -> Path:
        lines = [
            f"http_port 127.0.0.1:{self.port}",
            f"pid_filename {directory / 'squid.pid'}",
            f"cache_log {directory / 'cache.log'}",
            f"logformat vworkspace {_LOG_FORMAT}",
            f"access_log stdio:{directory / 'access.log'} vworkspace",
            "buffered_logs off",
            "cache_store_log none",
            "logfile_rotate 0",
            f"coredump_dir {directory}",
            "netdb_filename none",
            "pinger_enable off",
            "cache deny all",
            "cache_mem 8 MB",
            "shutdown_lifetime 0 seconds",
            "connect_timeout 10 seconds",
            "visible_hostname vworkspace-test-squid",
            f"hosts_file {directory / 'hosts'}",
        ]
        hosts = ["127.0.0.1 localhost", *(f"127.0.0.1 {name}" for name in self.hosts)]
        (directory / "hosts").write_text("\n".join(hosts) + "\n")
        if self.user is not None and self.password is not None:
            helper = _HELPERS / "basic_ncsa_auth"
            if not helper.is_file():
                raise SquidError(
                    f"no {helper} (squid's Basic auth helper, in Debian's squid package); "
                    f"{INSTALL_SCRIPT} installs it"
                )
            (directory / "passwd").write_text(f"{self.user}:{_apr1_hash(self.password)}\n")
            lines += [
                f"auth_param basic program {helper} {directory / 'passwd'}",
                "auth_param basic children 2 startup=1 idle=1",
                "auth_param basic realm vworkspace-test-proxy",
                "acl authenticated proxy_auth REQUIRED",
                "http_access allow authenticated",
            ]
        else:
            lines.append("http_access allow all")
        lines.append("http_access deny all")
        conf = directory / "squid.conf"
        conf.write_text("\n".join(lines) + "\n")
        if os.geteuid() == 0:
            self._hand_over(directory)
        return conf

    @staticmethod
    def _hand_over(directory: Path) -> None:
        """As root, squid works as ``proxy``: that user must write the logs and pid file."""
        try:
            account = pwd.getpwnam(_RUN_AS)
        except KeyError as err:
            raise SquidError(
                f"running as root, squid needs the '{_RUN_AS}' user (created by Debian's squid "
                f"package; {INSTALL_SCRIPT} installs it)"
            ) from err
        for path in [directory, *directory.iterdir()]:
            os.chown(path, account.pw_uid, account.pw_gid)

    def _wait_listening(self) -> None:
        """Until squid accepts a connection (it binds only after parsing the configuration and
        starting its helpers), or it exits, or ``start_timeout`` passes."""
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = self._proc.exit_code()
            if code is not None:
                raise self._fail(f"squid exited with {code} before it listened")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise self._fail(f"squid did not listen on 127.0.0.1:{self.port} in {self.start_timeout}s")

    def _fail(self, what: str) -> SquidError:
        assert self._proc is not None
        assert self.directory is not None
        try:
            cache_log = self.cache_log_path.read_text(errors="replace").splitlines()[-20:]
        except FileNotFoundError:
            cache_log = []
        return SquidError(
            f"{what}; files in {self.directory}:\n{self._proc.log_tail()}\n" + "\n".join(cache_log)
        )
