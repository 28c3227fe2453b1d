"""The preload callback: a task's worker process starts with the plugins
already loaded that it would otherwise load for itself, and only where the
callback is enabled (the project's ansible.cfg enables it)."""

from __future__ import annotations

import json
import re

from conftest import ROOT, ansible_playbook

# Loaded in the controller's process by the callback, so in every task's
# fork: Python modules of plugins, as the worker would have imported them.
PRELOADED = {
    "ansible_collections.jobqueue.gearman.plugins.filter.files_to_write",
    "ansible_collections.jobqueue.gearman.plugins.test.answers",
    "ansible_collections.community.docker.plugins.connection.docker",
    "ansible_collections.ansible.builtin.plugins.action.set_fact",
    "ansible_collections.ansible.builtin.plugins.lookup.template",
}


def loaded_in_worker(env: dict[str, str] | None = None) -> dict:
    """What a task's worker found loaded before it used a plugin of its own."""
    run = ansible_playbook("-i", "localhost,", str(ROOT / "tests/unit/preload.yml"), env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    found = re.search(r'"msg": "LOADED (.*)"\n', run.stdout)
    assert found, run.stdout
    return json.loads(json.loads(f'"{found.group(1)}"'))


def test_with_the_callback_each_task_starts_with_the_plugins_loaded():
    loaded = loaded_in_worker()
    assert loaded["jinja_plugins"], "Ansible's own Jinja filters and tests were not loaded"
    assert PRELOADED <= set(loaded["modules"]), PRELOADED - set(loaded["modules"])


def test_without_it_each_task_loads_them_itself():
    # Another aggregate callback in its place: the rest of ansible.cfg as it is.
    loaded = loaded_in_worker({"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.timer"})
    assert not loaded["jinja_plugins"]
    assert not PRELOADED & set(loaded["modules"])


def test_without_the_docker_collection_it_loads_the_rest_and_warns_of_nothing():
    # Only this collection (the clone's link), not the ones the ansible
    # package brings: community.docker is not there.
    run = ansible_playbook("-i", "localhost,", str(ROOT / "tests/unit/preload.yml"),
                           env={"ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"),
                                "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "WARNING" not in run.stdout + run.stderr, run.stdout + run.stderr
    assert '\\"jinja_plugins\\": true' in run.stdout, run.stdout
