"""The ran_before test, as the restart handlers of MariaDB, the exporter,
the TLS front and Prometheus read it: a restart is left out only where the
start task's own reading says the service was stopped before it acted."""

from __future__ import annotations

import pytest

from conftest import plugin_module

ran_before = plugin_module("test/ran_before.py").ran_before


@pytest.mark.parametrize("state", ["inactive", "failed"])
def test_a_service_the_start_task_found_stopped_did_not_run_before(state):
    assert not ran_before({"changed": True, "status": {"ActiveState": state}})


@pytest.mark.parametrize("result", [
    {"changed": True, "status": {"ActiveState": "active"}},   # started already: the task changed its enablement
    {"changed": False, "skipped": True},                      # skipped: the look found it running
    {},                                                       # the start task has not run yet
    {"changed": True},                                        # no systemd reading (another service manager)
    None,
], ids=["active", "skipped", "not-run", "no-reading", "none"])
def test_anything_else_counts_as_running_so_a_change_restarts_it(result):
    assert ran_before(result)
