"""Child processes that cannot outlive the test run.

Each child runs in its own session, so a Ctrl-C in the terminal reaches only the Python parent,
which then stops the children in order (controller-manager, apiserver, etcd). On Linux the child
also asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), so a parent killed
with SIGKILL leaves no orphans behind. SIGKILL rather than SIGTERM because kube-apiserver's
graceful shutdown can hang for good once etcd has gone too (seen here), and the data is
throw-away anyway. The kernel ties that signal to the *thread* that forked
the child, so we only ask for it when starting from the main thread; elsewhere the atexit hook
in :mod:`vworkspace.testing.controlplane` is what cleans up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

_PR_SET_PDEATHSIG = 1


def _child_setup(parent_pid: int, *, die_with_parent: bool) -> Callable[[], None]:
    def setup() -> None:
        os.setsid()
        if die_with_parent and sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            # The parent may have died between fork and prctl: then nobody would signal us.
            if os.getppid() != parent_pid:
                os._exit(1)

    return setup


class ManagedProcess:
    """One long-running child with its output in a log file. ``env``: the child's whole
    environment (None: inherit ours); for programs configured only through it (Flux's
    controllers take the cluster from ``KUBECONFIG``)."""

    def __init__(
        self,
        *,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        die_with_parent = threading.current_thread() is threading.main_thread()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
                env=self.env,
                preexec_fn=_child_setup(os.getpid(), die_with_parent=die_with_parent),
            )

    def exit_code(self) -> int | None:
        """None while running (or never started), else the exit code."""
        return None if self._proc is None else self._proc.poll()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL the whole process group."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class StartStop:
    """``with component:`` for the test environment's components (control plane, kwok, Flux,
    the chart repository, SeaweedFS, Velero, Argo): :meth:`start` on entry, :meth:`stop` (with
    its defaults) on exit, whatever the block raised. A base class rather than
    :class:`contextlib.AbstractContextManager` because entering must start the component."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
