#!/usr/bin/env python3
"""Build the lab's base images: a minimal Debian or Ubuntu root file system
made with debootstrap, imported into Docker, with systemd as PID 1.

No registry is needed: the image is built from the distribution's own
package archive.  Ubuntu's Release files are checked against the archive key
pinned in lab/keys/ (fingerprint below); the build never turns signature
checking off.

Usage:
    base_image.py [--force] DISTRO [DISTRO ...]
    base_image.py --list
    base_image.py --probe DISTRO        # exit 0 when the archive answers
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
UBUNTU_KEYRING = HERE / "keys" / "ubuntu-archive-2018.gpg"
UBUNTU_KEY_FINGERPRINT = "F6ECB3762474EDA9D21B7022871920D1991BC93C"
UBUNTU_MIRROR = os.environ.get("LAB_UBUNTU_MIRROR", "http://archive.ubuntu.com/ubuntu")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
IMAGE_REPO = "gearman-lab/base"

# What every lab host needs before Ansible reaches it: systemd as init, a
# Python for the modules (python3-apt so the apt module need not install it),
# and the tools the tests read the host with.
PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-apt",
    "iproute2",
    "procps",
    "ca-certificates",
    "gnupg",
    "sudo",
]


@dataclasses.dataclass(frozen=True)
class Distro:
    name: str  # the name users pass: debian-12, ubuntu-24.04 ...
    family: str  # debian or ubuntu
    suite: str  # bookworm, noble ...
    script: str  # debootstrap script to use (new Ubuntu suites reuse gutsy)
    components: tuple[str, ...]

    @property
    def tag(self) -> str:
        return f"{IMAGE_REPO}:{self.name}"

    @property
    def mirror(self) -> str:
        return DEBIAN_MIRROR if self.family == "debian" else UBUNTU_MIRROR


DISTROS = {
    d.name: d
    for d in (
        Distro("debian-12", "debian", "bookworm", "bookworm", ("main",)),
        Distro("debian-13", "debian", "trixie", "trixie", ("main",)),
        Distro("ubuntu-22.04", "ubuntu", "jammy", "gutsy", ("main", "universe")),
        Distro("ubuntu-24.04", "ubuntu", "noble", "gutsy", ("main", "universe")),
        Distro("ubuntu-26.04", "ubuntu", "resolute", "gutsy", ("main", "universe")),
    )
}


def log(msg: str) -> None:
    print(f"[base-image] {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


# The recipe's edition, kept in the image as a label: raise it whenever
# PACKAGES or prepare_rootfs change, and images of an older recipe are
# rebuilt instead of reused.
RECIPE = "2"
RECIPE_LABEL = "gearman-lab.recipe"


def image_exists(tag: str) -> bool:
    """An image of this tag, made by this edition of the recipe."""
    found = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{ index .Config.Labels \"%s\" }}" % RECIPE_LABEL, tag],
        capture_output=True,
        text=True,
    )
    return found.returncode == 0 and found.stdout.strip() == RECIPE


def archive_answers(distro: Distro, timeout: float = 15.0) -> bool:
    """True when the distribution's Release file can be fetched."""
    url = f"{distro.mirror}/dists/{distro.suite}/Release"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def check_pinned_key() -> None:
    """Refuse to build Ubuntu when the pinned keyring is not the one we expect."""
    # A home of its own for each call: two builds at once (make test builds
    # the images side by side) must not race on ~/.gnupg's first creation
    # and locks.
    with tempfile.TemporaryDirectory(prefix="lab-gpg-") as home:
        shown = subprocess.run(
            ["gpg", "--homedir", home, "--show-keys", "--with-colons", str(UBUNTU_KEYRING)],
            capture_output=True,
            text=True,
        )
    if shown.returncode != 0:
        raise SystemExit(f"gpg could not read {UBUNTU_KEYRING}: {shown.stderr.strip()}")
    out = shown.stdout
    fingerprints = [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]
    if fingerprints != [UBUNTU_KEY_FINGERPRINT]:
        raise SystemExit(
            f"{UBUNTU_KEYRING} holds {fingerprints}, expected only {UBUNTU_KEY_FINGERPRINT}"
        )


def sources_list(distro: Distro) -> str:
    comps = " ".join(distro.components)
    if distro.family == "debian":
        return (
            f"deb {distro.mirror} {distro.suite} {comps}\n"
            f"deb {distro.mirror} {distro.suite}-updates {comps}\n"
            f"deb http://deb.debian.org/debian-security {distro.suite}-security {comps}\n"
        )
    return (
        f"deb {distro.mirror} {distro.suite} {comps}\n"
        f"deb {distro.mirror} {distro.suite}-updates {comps}\n"
        f"deb {distro.mirror} {distro.suite}-security {comps}\n"
    )


def prepare_rootfs(root: Path, distro: Distro) -> None:
    """Make the tree fit to boot systemd inside a container."""
    (root / "etc/apt/sources.list").write_text(sources_list(distro))
    # A fresh machine-id is made on first boot when the file is empty.
    (root / "etc/machine-id").write_text("")
    # Units that make no sense (or hang) in a container.
    for unit in (
        "getty@tty1.service",
        "serial-getty@ttyS0.service",
        "systemd-udevd.service",
        "systemd-udev-trigger.service",
        "systemd-firstboot.service",
        "systemd-remount-fs.service",
        "sys-kernel-debug.mount",
        "sys-kernel-tracing.mount",
    ):
        link = root / "etc/systemd/system" / unit
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/dev/null")
    # Keep the image small: no documentation, no package lists.
    dpkg_cfg = root / "etc/dpkg/dpkg.cfg.d/01-lab-nodoc"
    dpkg_cfg.write_text(
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
        "path-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n"
    )
    # As the official Debian and Ubuntu container images do: dpkg does not
    # sync each file it unpacks (a container's disk is thrown away with it),
    # and apt fetches no translations. The test hosts install hundreds of
    # packages each.
    (root / "etc/dpkg/dpkg.cfg.d/02-lab-unsafe-io").write_text("force-unsafe-io\n")
    (root / "etc/apt/apt.conf.d/02-lab-no-languages").write_text('Acquire::Languages "none";\n')
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    # apt's "cache is fresh" test reads these times: make the empty lists
    # look old, so the first apt run with cache_valid_time updates them.
    for stale in ("var/lib/apt/lists/partial", "var/lib/apt/lists"):
        os.utime(root / stale, (0, 0))
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def build(distro: Distro, force: bool = False) -> None:
    if image_exists(distro.tag) and not force:
        log(f"{distro.tag} is present (recipe {RECIPE})")
        return
    if not shutil.which("debootstrap"):
        raise SystemExit("debootstrap is missing: apt-get install debootstrap")
    cmd = [
        "debootstrap",
        "--variant=minbase",
        "--include=" + ",".join(PACKAGES),
        "--components=" + ",".join(distro.components),
    ]
    if distro.family == "ubuntu":
        check_pinned_key()
        cmd.append(f"--keyring={UBUNTU_KEYRING}")
    workdir = Path(tempfile.mkdtemp(prefix=f"lab-{distro.name}-", dir=os.environ.get("LAB_TMPDIR")))
    root = workdir / "rootfs"
    cmd += [distro.suite, str(root)]
    if distro.family == "ubuntu":
        script = Path("/usr/share/debootstrap/scripts") / distro.script
        cmd += [distro.mirror, str(script)]
    # Debian: no mirror URL, debootstrap's own default is used.
    log(f"building {distro.tag}: {' '.join(cmd)}")
    try:
        run(cmd, stdout=subprocess.DEVNULL if os.environ.get("LAB_QUIET") else None)
        prepare_rootfs(root, distro)
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(root), "-c", "."],
            stdout=subprocess.PIPE,
        )
        run(
            [
                "docker",
                "import",
                "--change",
                'CMD ["/lib/systemd/systemd"]',
                "--change",
                "ENV container=docker",
                "--change",
                f"LABEL {RECIPE_LABEL}={RECIPE}",
                "-",
                distro.tag,
            ],
            stdin=tar.stdout,
            stdout=subprocess.DEVNULL,
        )
        if tar.wait() != 0:
            raise SystemExit("tar of the root file system failed")
        log(f"{distro.tag} built")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("distros", nargs="*", metavar="DISTRO")
    parser.add_argument("--force", action="store_true", help="rebuild even when present")
    parser.add_argument("--list", action="store_true", help="list the known distributions")
    parser.add_argument("--probe", action="store_true", help="exit 0 when the archive answers")
    parser.add_argument("--present", action="store_true", help="exit 0 when the image of this recipe is there")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(DISTROS))
        return 0
    unknown = [d for d in args.distros if d not in DISTROS]
    if unknown or not args.distros:
        parser.error(f"choose among: {', '.join(DISTROS)} (got {unknown or 'nothing'})")
    for name in args.distros:
        distro = DISTROS[name]
        if args.present:
            if not image_exists(distro.tag):
                return 1
        elif args.probe:
            if not archive_answers(distro):
                log(f"{distro.mirror} does not answer for {distro.suite}")
                return 1
        else:
            build(distro, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
