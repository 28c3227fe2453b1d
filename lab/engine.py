#!/usr/bin/env python3
"""Make sure this machine can run the lab: a Docker engine that answers, and
debootstrap and gpg to build base images.

On a Debian or Ubuntu machine, as root, whatever is missing is installed from
the distribution's packages and dockerd is started when no engine answers
(also where no systemd runs). Anywhere else it says what to install and
exits non-zero.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DOCKERD_LOG = Path(os.environ.get("LAB_DOCKERD_LOG", "/var/log/lab-dockerd.log"))
# Debian package that provides each command we need.
NEEDED = {"docker": "docker.io", "dockerd": "docker.io", "debootstrap": "debootstrap", "gpg": "gpg"}


def say(msg: str) -> None:
    print(f"[engine] {msg}", flush=True)


def engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    probe = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
    )
    return probe.returncode == 0


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def missing_packages() -> list[str]:
    return sorted({pkg for cmd, pkg in NEEDED.items() if not shutil.which(cmd)})


def apt_install(packages: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    say(f"installing {' '.join(packages)}")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def start_dockerd() -> None:
    """Start dockerd: through systemd when it runs, else in the background."""
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        say("starting docker.service")
        subprocess.run(["systemctl", "start", "docker.service"], check=False)
    else:
        say(f"starting dockerd in the background (log: {DOCKERD_LOG})")
        DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(DOCKERD_LOG, "ab") as log:
            subprocess.Popen(  # noqa: S603 - fixed command
                ["dockerd"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if engine_answers():
            say("the Docker engine answers")
            return
        time.sleep(1)
    raise SystemExit(f"dockerd did not answer within 60 s; see {DOCKERD_LOG}")


def main() -> int:
    missing = missing_packages()
    if missing:
        if not can_install():
            print(
                "This machine lacks: "
                + ", ".join(missing)
                + ".\nInstall them (on Debian or Ubuntu, as root: apt-get install "
                + " ".join(missing)
                + "), start the Docker engine, and run make again.",
                file=sys.stderr,
            )
            return 1
        apt_install(missing)
    if engine_answers():
        return 0
    if os.geteuid() != 0:
        print(
            "No Docker engine answers. Start one (for example: sudo systemctl start docker, "
            "or run dockerd as root), or run make as root, and try again.",
            file=sys.stderr,
        )
        return 1
    start_dockerd()
    return 0


if __name__ == "__main__":
    sys.exit(main())
