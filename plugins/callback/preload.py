"""The preload callback: loads, once in ansible-playbook's own process,
the plugins that each task's worker process would otherwise load anew.

Ansible runs every task, skipped ones included, in a process forked from
its own. What that process loads for itself (the Jinja filters and tests,
the connection, shell and become plugins with their documented options,
the action plugins' code) is lost when the task ends, so the next task's
process loads it again. Loaded here first, before any task, it is in
every fork already. On a converged host of this project's lab that is
about a tenth of a re-run of site.yml (docs/benchmarks.md).

Nothing here changes what a task does; a plugin that fails to load is
left for the task that needs it, which then reports the error as it
would have."""

from __future__ import annotations

DOCUMENTATION = r"""
name: preload
type: aggregate
version_added: 1.1.0
short_description: Load plugins once before the first task, not once a task
description:
  - Loads, in the controller's main process, the plugins every task's
    worker process would otherwise load for itself, so that the workers
    forked after it have them already - Ansible's own Jinja filters and
    tests with this collection's, the connection plugins C(ssh), C(local)
    and C(community.docker.docker) (where that collection is installed)
    with the configured default, the C(sh) shell, the C(sudo) and C(su)
    become plugins, common lookups and the action plugins this
    collection's roles use.
  - It changes no task's result; only how long a run takes. A plugin that
    cannot be loaded is skipped (shown with -vvv).
  - Enabled in the project's C(ansible.cfg); from your own, add it to
    C(callbacks_enabled). A list in the environment
    (E(ANSIBLE_CALLBACKS_ENABLED)) replaces the configuration file's, so
    name it there as well.
requirements:
  - Enabled in C(callbacks_enabled).
"""

import importlib.util
import pathlib

from ansible.plugins.callback import CallbackBase
from ansible.utils.display import Display

display = Display()

COLLECTION = "jobqueue.gearman"
CONNECTIONS = ("ansible.builtin.ssh", "ansible.builtin.local", "community.docker.docker")
SHELLS = ("ansible.builtin.sh",)
BECOMES = ("ansible.builtin.sudo", "ansible.builtin.su")
LOOKUPS = ("ansible.builtin.template", "ansible.builtin.vars", "ansible.builtin.file", "ansible.builtin.env")
ACTIONS = ("ansible.builtin.normal", "ansible.builtin.set_fact", "ansible.builtin.assert",
           "ansible.builtin.include_vars", "ansible.builtin.validate_argument_spec",
           "ansible.builtin.gather_facts", "ansible.builtin.service", "ansible.builtin.package",
           "ansible.builtin.command", "ansible.builtin.shell", "ansible.builtin.copy",
           "ansible.builtin.template", "ansible.builtin.fetch", "ansible.builtin.debug", "ansible.builtin.fail")


def own_plugins(kind: str) -> list[str]:
    """This collection's plugins of one kind (filter, test), by file name."""
    folder = pathlib.Path(__file__).resolve().parents[1] / kind
    return sorted(f"{COLLECTION}.{path.stem}" for path in folder.glob("*.py") if not path.stem.startswith("_"))


def installed(name: str) -> bool:
    """Whether the collection of a plugin's full name is installed (asking
    the loader for a plugin of a missing one prints a warning)."""
    namespace, collection = name.split(".")[:2]
    if (namespace, collection) == ("ansible", "builtin"):
        return True
    try:
        return importlib.util.find_spec(f"ansible_collections.{namespace}.{collection}") is not None
    except (ImportError, ValueError):  # its namespace is not there either
        return False


def preload() -> list[str]:
    """Load every plugin named above; return those that would not load."""
    from ansible import constants as C
    from ansible.plugins import loader

    # The first name a Jinja plugin loader resolves fills its cache with
    # every one of Ansible's own filters (or tests) at once.
    jinja = [
        (loader.filter_loader, ["ansible.builtin.bool", *own_plugins("filter")]),
        (loader.test_loader, ["ansible.builtin.match", *own_plugins("test")]),
    ]
    # The others: the plugin's code, and its documented options for the
    # configurable kinds (connection, shell, become, lookup).
    classes = [
        (loader.connection_loader, [*CONNECTIONS, C.DEFAULT_TRANSPORT]),
        (loader.shell_loader, SHELLS),
        (loader.become_loader, BECOMES),
        (loader.lookup_loader, LOOKUPS),
        (loader.action_loader, ACTIONS),
    ]
    failed = []
    for plugins, names, options in [(p, n, {}) for p, n in jinja] + [(p, n, {"class_only": True}) for p, n in classes]:
        for name in dict.fromkeys(names):
            if "." in name and not installed(name):
                failed.append(f"{plugins.type} {name} (not installed)")
                continue
            try:
                found = plugins.get(name, **options)
            except Exception as error:  # the plugin's own error, left for a task that uses it
                display.vvv(f"preload: {plugins.type} {name}: {error}")
                found = None
            if found is None:
                failed.append(f"{plugins.type} {name}")
    return failed


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "jobqueue.gearman.preload"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_start(self, playbook):
        missing = preload()
        if missing:
            display.vvv(f"preload: not found: {', '.join(missing)}")
