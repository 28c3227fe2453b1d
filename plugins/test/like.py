"""The like test: whether what the state_info module found of a service or an
account is as a role wants it, so that the module that would set it runs only
where it is not."""

from __future__ import annotations

DOCUMENTATION = r"""
name: like
version_added: 1.1.0
short_description: Whether a unit or account found on a host is as wanted
description:
  - True when an entry M(jobqueue.gearman.state_info) reported exists and
    has each of the wanted values; false when it is missing, empty (as for a
    unit where systemd does not run) or differs in one of them.
options:
  _input:
    description: One entry of the module's C(paths), C(units), C(users) or C(groups).
    type: dict
    required: true
  wanted:
    description: The values it should have, by the module's names for them.
    type: dict
    required: true
    positional: true
"""

EXAMPLES = r"""
- name: Start the service, unless it is enabled and running
  ansible.builtin.systemd_service:
    name: my.service
    enabled: true
    state: started
  when: >-
    _my_found.units['my.service'] | default({}) is not
    jobqueue.gearman.like({'unit_file_state': 'enabled', 'active_state': 'active'})
"""

RETURN = r"""
_value:
  description: Whether the entry exists with every wanted value.
  type: bool
"""

from collections.abc import Mapping


def like(found, wanted) -> bool:
    if not isinstance(found, Mapping) or not found.get("exists"):
        return False
    return all(key in found and found[key] == value for key, value in wanted.items())


class TestModule:
    def tests(self):
        return {"like": like}
