"""The answers test: whether one look of the state_info module, made for
several roles at once, has every entry one role asks for, so that the role
can read it instead of looking again."""

from __future__ import annotations

DOCUMENTATION = r"""
name: answers
version_added: 1.1.0
short_description: Whether a state_info answer has every entry a role asks for
description:
  - True when the result of M(jobqueue.gearman.state_info) was asked for
    every path, unit (or pattern, as written), user, group and process the
    wanted look names, and for each of its commands with the same
    arguments; false otherwise, and for anything that is not such a result
    (a skipped task, an undefined or empty value).
  - It says nothing of when the answer was made - the caller must know that
    nothing changed on the host since.
options:
  _input:
    description: A registered result of M(jobqueue.gearman.state_info).
    type: raw
    required: true
  wanted:
    description: A look, as a role would ask it - C(paths), C(units), C(users),
      C(groups), C(processes) as lists and C(commands) as a dict of argument
      lists, each optional.
    type: dict
    required: true
    positional: true
"""

EXAMPLES = r"""
- name: Look at my files, unless the host's look of the run has them
  jobqueue.gearman.state_info:
    paths: "{{ _my_look.paths }}"
  register: _my_looked
  when: not (_my_look_is_fresh and _host_look is jobqueue.gearman.answers(_my_look))
"""

RETURN = r"""
_value:
  description: Whether every entry of the wanted look was asked for.
  type: bool
"""

from collections.abc import Mapping

LISTS = ("paths", "units", "users", "groups", "processes")


def answers(found, wanted) -> bool:
    if not isinstance(found, Mapping) or not isinstance(found.get("asked"), Mapping):
        return False
    asked = found["asked"]
    for key in LISTS:
        if not {str(entry) for entry in wanted.get(key) or []} <= set(asked.get(key) or []):
            return False
    commands = asked.get("commands") or {}
    return all(commands.get(name) == [str(arg) for arg in argv]
               for name, argv in (wanted.get("commands") or {}).items())


class TestModule:
    def tests(self):
        return {"answers": answers}
