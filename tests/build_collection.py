#!/usr/bin/env python3
"""Build the collection's tarball from this clone and install it, with
ansible-galaxy, into an empty folder, as a user would from a release:

    tests/build_collection.py [FOLDER]    (default: .cache/collection)

FOLDER/dist holds the tarball; FOLDER is then a collections path
(FOLDER/ansible_collections/jobqueue/gearman). Its dependencies are not
installed: the ansible package ships them. Prints the tarball's path."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def galaxy(*args, cwd: Path) -> None:
    result = subprocess.run([BIN / "ansible-galaxy", "collection", *args], capture_output=True, text=True, cwd=cwd)
    if result.returncode:
        raise SystemExit(f"ansible-galaxy collection {args[0]} failed:\n{result.stdout}{result.stderr}")


def build(folder: Path) -> Path:
    """Only FOLDER/dist and FOLDER/ansible_collections are replaced."""
    for old in (folder / "dist", folder / "ansible_collections"):
        shutil.rmtree(old, ignore_errors=True)
    (folder / "dist").mkdir(parents=True)
    galaxy("build", "--output-path", folder / "dist", ROOT, cwd=ROOT)
    (tarball,) = (folder / "dist").glob("*.tar.gz")
    # --force: the clone itself is a collections path (collections/, for
    # the plugins), where ansible-galaxy would find it "already installed".
    galaxy("install", "--no-deps", "--force", "--collections-path", folder, tarball, cwd=folder)
    return tarball


if __name__ == "__main__":
    print(build(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT / ".cache" / "collection"))
