"""Helpers for the unit tests: run ansible-playbook on the control machine."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def ansible_playbook(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
    }
    return subprocess.run(
        ["ansible-playbook", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def render(tmp_path):
    """Render the gearman role's templates with extra vars; return the folder."""

    def _render(**extra_vars) -> Path:
        extra = {"render_dir": str(tmp_path), "gearman_mysql_password": "unit-pw", **extra_vars}
        result = ansible_playbook(
            "-i", "localhost,", str(ROOT / "tests/unit/render.yml"), "-e", json.dumps(extra)
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return tmp_path

    return _render
