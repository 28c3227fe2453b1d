"""The ran_before test: whether a service was running before the start task
whose result is tested, as systemd read it before that task acted. A role's
restart handler reads it: a service that task found stopped was started by
it with the new settings, and a restart would start it a second time."""

from __future__ import annotations

DOCUMENTATION = r"""
name: ran_before
version_added: 1.1.0
short_description: Whether a service ran before the start task that registered this result
description:
  - False only where the registered result of M(ansible.builtin.systemd_service)
    (or M(ansible.builtin.service) on systemd) says the unit was C(inactive)
    or C(failed) before the task acted.
  - True for anything else - the task skipped (the service was up), not run
    yet, or a result without systemd's reading (no systemd) - so that a
    change of settings restarts the service wherever it cannot be told
    that the start task just started it.
options:
  _input:
    description: The registered result of the start task, or C({}) before it ran.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Restart my service
  ansible.builtin.systemd_service:
    name: my.service
    state: restarted
  when: _my_started | default({}) is jobqueue.gearman.ran_before
"""

RETURN = r"""
_value:
  description: Whether the service was running, or may have been, before the start task.
  type: bool
"""

from collections.abc import Mapping


def ran_before(result) -> bool:
    status = result.get("status") if isinstance(result, Mapping) else None
    if not isinstance(status, Mapping):
        return True
    return status.get("ActiveState", "active") not in ("inactive", "failed")


class TestModule:
    def tests(self):
        return {"ran_before": ran_before}
