"""The programs the suite drives for real, and the Debian package that brings each.

One table serves both ends: ``scripts/test`` installs what is missing before pytest
starts, and a test that needs a program calls ``need()``, which fails (never skips) with
the package to install, so a machine without it shows red rather than quietly testing
less.

Run as a script (``python3 tests/support/tools.py install [PROGRAM ...]``) it installs the
missing packages with ``apt-get`` where this is a Debian machine and we are root (or may
sudo without a password), and otherwise prints one line per missing program naming its
package; ``scripts/bench`` uses it for ``wrk``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Final

#: program on PATH -> Debian package that installs it
TOOLS: Final[dict[str, str]] = {
    "redis-server": "redis-server",
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
    "chromium": "chromium",
}


def missing_message(binary: str) -> str:
    package = TOOLS.get(binary, binary)
    return (
        f"{binary} is not installed: the tests drive the real program "
        f"(Debian package {package!r}: apt-get install {package}; scripts/test installs it)"
    )


def need(binary: str) -> str:
    """The path of ``binary``; a failed test naming its package when it is missing."""
    path = shutil.which(binary)
    if path is None:
        import pytest

        pytest.fail(missing_message(binary), pytrace=False)
    return path


def missing(programs: Iterable[str] = TOOLS) -> list[str]:
    return [b for b in programs if shutil.which(b) is None]


def install(programs: Sequence[str] = tuple(TOOLS)) -> int:
    """Install the Debian packages of the missing ``programs`` (a program outside
    ``TOOLS`` is its own package); 0 when nothing is missing after. Each one still missing
    gets a line naming its package."""
    absent = missing(programs)
    if not absent:
        return 0
    packages = sorted({TOOLS.get(b, b) for b in absent})
    apt = shutil.which("apt-get")
    sudo: list[str] = []
    if os.geteuid() != 0:
        if (
            shutil.which("sudo")
            and subprocess.run(["sudo", "-n", "true"], check=False).returncode == 0
        ):
            sudo = ["sudo", "-n"]
        else:
            apt = None
    if apt is not None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        print(f"installing Debian packages: {' '.join(packages)}", flush=True)
        subprocess.run([*sudo, apt, "update", "-qq"], check=False, env=env)
        subprocess.run(
            [*sudo, apt, "install", "-y", "-qq", "--no-install-recommends", *packages],
            check=False,
            env=env,
        )
    still = missing(programs)
    for binary in still:
        if binary in TOOLS:
            print(missing_message(binary), file=sys.stderr)
        else:
            print(f"{binary} is not installed (Debian package {binary!r})", file=sys.stderr)
    return 1 if still else 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["install"]:
        sys.exit("usage: python3 tests/support/tools.py install [PROGRAM ...]")
    sys.exit(install(sys.argv[2:] or tuple(TOOLS)))
