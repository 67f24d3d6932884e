"""A Helm chart repository on 127.0.0.1 holding the project's own test charts.

There is no internet here, so the `real` tier and the demo install the project's own small
charts (``tests/fixtures/charts``): ``demo-app`` 0.1.0 and 0.2.0 (the same source packaged twice,
``helm package --version``, for upgrades) and ``demo-app-failing-hook`` 0.1.0 (its post-install
hook always fails). They are packaged with the helm binary the test assets already hold, indexed
with ``helm repo index`` and served as a plain Helm HTTP repository (``index.yaml`` + ``.tgz``)
by :mod:`http.server` in a daemon thread: no dependency, and source-controller fetches it like
any chart repository.

Trade-offs: packaging takes about a second per chart at start rather than committing binary
``.tgz`` files that could drift from their sources; the index has relative URLs, so the same
folder serves on any port. Plain HTTP on loopback only; nothing here is fit for a real network.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs

from vworkspace.testing.assets import candidate_dirs
from vworkspace.testing.processes import StartStop

HELM_ENV = "VWORKSPACE_HELM"
DEMO_CHART = "demo-app"
FAILING_HOOK_CHART = "demo-app-failing-hook"


@attrs.frozen
class ChartPackage:
    """One chart version the repository carries: the source folder and the version to stamp."""

    source: str
    version: str


# What the repository carries. demo-app 0.2.0 is demo-app's source under another version.
PACKAGES = (
    ChartPackage(DEMO_CHART, "0.1.0"),
    ChartPackage(DEMO_CHART, "0.2.0"),
    ChartPackage(FAILING_HOOK_CHART, "0.1.0"),
)


class ChartRepoError(RuntimeError):
    """The charts could not be packaged or served; the message says which and why."""


def charts_dir() -> Path:
    """``tests/fixtures/charts`` of this checkout (the charts are test fixtures, not shipped)."""
    return Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "charts"


def find_helm(env: Mapping[str, str]) -> Path:
    """``$VWORKSPACE_HELM``, else the helm beside the test binaries (where they are looked for,
    in the same order), else helm on PATH."""
    named = env.get(HELM_ENV)
    if named:
        candidates = [Path(named)]
    else:
        candidates = [directory / "helm" for _source, directory in candidate_dirs(env)]
        on_path = shutil.which("helm", path=env.get("PATH"))
        candidates += [Path(on_path)] if on_path else []
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ChartRepoError(
        f"no helm binary (looked at {', '.join(map(str, candidates))} and PATH); "
        f"scripts/build-test-assets.sh builds one, or set ${HELM_ENV}"
    )


def _helm(helm: Path, *args: str) -> None:
    done = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise ChartRepoError(
            f"helm {' '.join(args)} failed (exit {done.returncode}): "
            + (done.stderr.strip() or done.stdout.strip())
        )


def package_charts(
    helm: Path,
    dest: Path,
    *,
    source: Path | None = None,
    packages: tuple[ChartPackage, ...] = PACKAGES,
) -> list[Path]:
    """Package every chart version into ``dest`` and write its ``index.yaml``; returns the
    ``.tgz`` files. The index's URLs are relative, so ``dest`` can be served from any address."""
    source = source or charts_dir()
    dest.mkdir(parents=True, exist_ok=True)
    archives = []
    for package in packages:
        chart = source / package.source
        if not (chart / "Chart.yaml").is_file():
            raise ChartRepoError(f"{chart} is not a chart (no Chart.yaml)")
        _helm(helm, "package", str(chart), "--version", package.version, "--destination", str(dest))
        archives.append(dest / f"{package.source}-{package.version}.tgz")
    _helm(helm, "repo", "index", str(dest))
    return archives


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves the folder; counts requests per path (tests measure index downloads)."""

    hits: dict[str, int]

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.hits[path] = self.hits.get(path, 0) + 1
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        # One line per request on stderr would drown pytest's output; the counts are kept.
        pass


SAMPLE_CHARTS_PORT = 8879
"""Where ``testenv start --with charts`` serves by default: the URL the sample
``manifests/samples/applicationinstance-demo-app.yaml`` names (8879 was ``helm serve``'s)."""


class ChartRepository(StartStop):
    """The packaged charts served on ``http://127.0.0.1:<free port>/``.

    Use it as a context manager, or :meth:`start` and :meth:`stop`. ``url`` is what a
    HelmRepository's ``spec.url`` (or an ApplicationInstance's ``spec.chart.url``) takes.
    """

    def __init__(self, *, helm: Path, work_dir: Path | None = None, port: int = 0) -> None:
        """``port`` 0 picks a free one; a fixed port gives a stable URL (a sample, a demo)."""
        self._helm = helm
        self._port = port
        self._own_dir = work_dir is None
        self.directory = work_dir or Path(tempfile.mkdtemp(prefix="vworkspace-charts-"))
        self.hits: dict[str, int] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise ChartRepoError("the chart repository has not been started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def chart(self, version: str = "0.1.0", name: str = DEMO_CHART) -> dict[str, str]:
        """An ApplicationInstance's ``spec.chart`` for a chart of this repository."""
        return {"sourceType": "helm", "url": self.url, "name": name, "version": version}

    def index_downloads(self) -> int:
        """How many times ``index.yaml`` was fetched so far."""
        return self.hits.get("/index.yaml", 0)

    def start(self) -> None:
        package_charts(self._helm, self.directory)
        # A subclass per repository, so each counts its own requests.
        counting = type("_Handler", (_QuietHandler,), {"hits": self.hits})
        handler = functools.partial(counting, directory=str(self.directory))
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="chart-repository", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_chart_repository(
    env: Mapping[str, str], *, work_dir: Path | None = None, port: int = 0
) -> ChartRepository:
    """Package the test charts and serve them; for the pytest fixture ``chart_repo``, the demo
    and ``testenv start``. The caller stops it (or lets the daemon thread end with the process).
    Raises :class:`ChartRepoError` (no helm, a chart that does not package) or ``OSError`` (the
    port is taken)."""
    repo = ChartRepository(helm=find_helm(env), work_dir=work_dir, port=port)
    repo.start()
    return repo
