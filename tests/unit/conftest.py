"""Helpers for the unit tests: run ansible-playbook on the control machine,
and load one of the collection's plugins as plain Python."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def plugin_module(relative: str):
    """A plugin of the collection (plugins/...), imported from its file."""
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / "plugins" / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ansible_playbook(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """One ansible-playbook run with the project's ansible.cfg, ENV added."""
    env = {
        **os.environ,
        **(env or {}),
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
    }
    return subprocess.run(
        ["ansible-playbook", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


# The settings the template tests look at, each rendered once per session.
VARIANTS = {
    "default": {},
    "upstart": {"gearman_init_system": "upstart", "gearman_port": 4731},
    "local_db": {"gearman_db_on_same_host": True},
    "remote_db": {"gearman_db_on_same_host": False},
    "builtin": {"gearman_queue_type": "builtin"},
    "extra_params": {"gearman_extra_params": ["--round-robin"]},
    "odd_password": {"gearman_mysql_password": "s3cr$t#%"},
    "small_queue": {"gearman_expected_queue_depth": 200000},
    "huge_queue": {"gearman_expected_queue_depth": 134217689},
}


def _render(folder: Path, extra_vars: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    extra = {"render_dir": str(folder), "gearman_mysql_password": "unit-pw", **extra_vars}
    result = ansible_playbook("-i", "localhost,", str(ROOT / "tests/unit/render.yml"), "-e", json.dumps(extra))
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> dict[str, Path]:
    """The gearman role's templates rendered for each of VARIANTS."""
    base = tmp_path_factory.mktemp("rendered")
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            name: pool.submit(_render, base / name, extra) for name, extra in VARIANTS.items()
        }
        return {name: future.result() for name, future in futures.items()}
