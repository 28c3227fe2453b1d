"""A test action: what the task's own worker process found loaded when it
started, before the task used any plugin of its own (tests/unit/test_preload.py)."""

from __future__ import annotations

import sys

from ansible.plugins import loader
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        return {
            "changed": False,
            "jinja_plugins": bool(loader.filter_loader._cached_non_collection_wrappers)
            and bool(loader.test_loader._cached_non_collection_wrappers),
            "modules": sorted(name for name in sys.modules if ".plugins." in name and name.startswith("ansible_collections.")),
        }
