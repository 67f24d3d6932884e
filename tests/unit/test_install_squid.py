"""scripts/install-squid.sh against fake apt-get, sudo and id (nothing is installed): quiet when
squid is there, apt-get update only when the first install fails, sudo when not root, a clear
message when neither root nor sudo."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-squid.sh"
TOOLS = ("bash", "cat", "date", "env", "head", "mktemp", "rm", "sed", "chmod", "touch")


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """A PATH holding only the script's tools and fakes: ``id`` (root unless FAKE_UID is set),
    ``apt-get`` (records its arguments and DEBIAN_FRONTEND; ``install`` fails until ``update``
    ran, then "installs" squid at $INSTALL_SQUID_SBIN)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run the script"
        (bin_dir / tool).symlink_to(found)
    _fake(bin_dir, "id", 'echo "${FAKE_UID:-0}"\n')
    _fake(
        bin_dir,
        "apt-get",
        f"""echo "apt-get $* DEBIAN_FRONTEND=${{DEBIAN_FRONTEND:-}}" >> {tmp_path}/calls
case "$1" in
  update) touch {tmp_path}/updated ;;
  install)
    [ -e {tmp_path}/updated ] || {{ echo "E: Unable to locate package squid"; exit 100; }}
    printf '#!/bin/bash\\necho "Squid Cache: Version 5.7"\\n' > "$INSTALL_SQUID_SBIN"
    chmod +x "$INSTALL_SQUID_SBIN" ;;
esac
""",
    )
    return tmp_path


def run(world: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": str(world / "bin"),
        "INSTALL_SQUID_SBIN": str(world / "squid"),
        **env,
    }
    return subprocess.run(
        [str(world / "bin" / "bash"), str(SCRIPT)],
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def calls(world: Path) -> list[str]:
    path = world / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_quiet_and_untouched_when_squid_is_there(world: Path) -> None:
    _fake(world / "bin", "squid", "exit 0\n")
    done = run(world)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert calls(world) == []


def test_as_root_installs_and_updates_the_lists_only_after_a_failed_install(world: Path) -> None:
    done = run(world)
    assert done.returncode == 0, done.stderr
    install = "apt-get install -y -qq --no-install-recommends squid DEBIAN_FRONTEND=noninteractive"
    assert calls(world) == [install, "apt-get update -qq DEBIAN_FRONTEND=", install]
    assert "Unable to locate" not in done.stdout + done.stderr  # the retry succeeded: quiet
    assert "squid 5.7 installed in" in done.stdout
    assert run(world).stdout == ""  # idempotent: now present, nothing to do
    assert len(calls(world)) == 3


def test_not_root_goes_through_sudo(world: Path) -> None:
    _fake(world / "bin", "sudo", f'echo "sudo $1" >> {world}/calls\nexec "$@"\n')
    (world / "updated").touch()  # fresh lists: one install is enough
    done = run(world, FAKE_UID="1000")
    assert done.returncode == 0, done.stderr
    assert calls(world)[0] == "sudo env"
    assert calls(world)[1].startswith("apt-get install")


def test_not_root_without_sudo_says_what_to_install(world: Path) -> None:
    done = run(world, FAKE_UID="1000")
    assert done.returncode == 1
    assert "install Debian's 'squid' package" in done.stderr
    assert calls(world) == []


def test_a_failing_install_shows_apt_gets_output(world: Path) -> None:
    _fake(world / "bin", "apt-get", 'echo "E: mirror unreachable"; exit 100\n')
    done = run(world)
    assert done.returncode == 1
    assert "E: mirror unreachable" in done.stderr
    assert "installing squid with apt-get failed" in done.stderr
    assert not os.path.exists(world / "squid")
