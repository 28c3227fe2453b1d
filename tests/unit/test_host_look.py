"""site.yml looks at a host once for several roles (state_info with
looks, in the packages play), and each role reads that answer instead of
looking again, for as long as nothing has changed the host since. Two
things make that safe: the answers test, which tells a role whether the
host's look has every entry the role would ask for; and the rule that
every task that can change a host comes after the look is marked stale
(_gearman_common_look_fresh false), so that the roles after it look again."""

from __future__ import annotations

import grp
import json
import os
import pwd
import re

import yaml

from conftest import ROOT, ansible_playbook, plugin_module

# Actions that change nothing on a host, whatever they are given.
READS = {
    "jobqueue.gearman.state_info", "ansible.builtin.stat", "ansible.builtin.assert", "ansible.builtin.fail",
    "ansible.builtin.debug", "ansible.builtin.set_fact", "ansible.builtin.include_vars", "ansible.builtin.meta",
    "ansible.builtin.validate_argument_spec", "ansible.builtin.import_tasks", "ansible.builtin.include_tasks",
    "ansible.builtin.import_role", "ansible.builtin.include_role", "ansible.builtin.wait_for",
    "ansible.builtin.uri", "ansible.builtin.slurp", "community.crypto.openssl_csr_pipe",
}
# Changes in the database only: no look of state_info sees them.
DATABASE = {"community.mysql.mysql_db", "community.mysql.mysql_user", "community.mysql.mysql_query"}
# Task files whose changes need no mark, and why.
UNMARKED = {
    # The one apt run marks the look stale once it has installed; the look
    # was made before it, and nothing reads the look in between.
    "roles/gearman_common/tasks/install_packages.yml",
    # Run by the preflight and the packages plays, before the look.
    "roles/gearman_common/tasks/compute.yml",
}
# A role's own installs of packages that are also in site.yml's one apt
# run: in site.yml they find them there and never run; played alone, the
# role has no host look to spoil.
INSTALLS_IN_THE_ONE_RUN = {
    "Install PHP CLI and php-gearman", "Install nftables", "Install stunnel",
    "Install the Python driver Ansible talks to the database with",
}
KEYWORDS = {
    "name", "when", "register", "notify", "loop", "loop_control", "vars", "tags", "no_log", "become",
    "become_user", "changed_when", "failed_when", "check_mode", "ignore_errors", "delegate_to", "run_once",
    "environment", "args", "until", "retries", "delay", "module_defaults", "listen", "block", "rescue",
    "always", "diff", "throttle", "any_errors_fatal", "with_first_found", "with_items", "delegate_facts",
    "ignore_unreachable", "timeout",
}
# The mark: gearman_common's entry point changed, or in gearman_common itself
# the fact it sets.
MARKS = [{"ansible.builtin.include_role": {"name": "gearman_common", "tasks_from": "changed"}},
         {"ansible.builtin.set_fact": {"_gearman_common_look_fresh": False}}]


def is_mark(task: dict) -> bool:
    return any(all(task.get(key) == value for key, value in mark.items()) for mark in MARKS)


def action(task: dict) -> str:
    names = [key for key in task if key not in KEYWORDS]
    assert len(names) == 1, f"cannot tell the action of {task.get('name')}: {names}"
    return names[0]


def changes_the_host(task: dict) -> bool:
    name = action(task)
    if name in READS or name in DATABASE or task.get("changed_when") is False:
        return False
    if name in {"ansible.builtin.apt"} and task.get("name") in INSTALLS_IN_THE_ONE_RUN:
        return False
    return True


def unmarked_changes(tasks: list, marked: bool, where: str, seen: dict) -> list[str]:
    """The tasks that change the host with no mark before them: in this
    list, in its blocks, and in the files it imports or includes."""
    found = []
    for task in tasks or []:
        if "block" in task:
            found += unmarked_changes(task["block"], marked, where, seen)
            found += unmarked_changes(task.get("rescue"), marked, where, seen)
            found += unmarked_changes(task.get("always"), marked, where, seen)
            continue
        if is_mark(task):
            marked = True
            continue
        name = action(task)
        if name in {"ansible.builtin.import_tasks", "ansible.builtin.include_tasks"}:
            target = os.path.join(os.path.dirname(where), task[name])
            found += check_file(target, marked, seen)
        elif name in {"ansible.builtin.import_role", "ansible.builtin.include_role"}:
            found += check_file(entry_point(task[name]["name"], task[name].get("tasks_from", "main")), marked, seen)
        elif not marked and changes_the_host(task):
            found.append(f"{os.path.relpath(where, ROOT)}: {task.get('name')}")
    return found


def check_file(path: str, marked: bool, seen: dict) -> list[str]:
    # A file reached both marked and unmarked is checked both ways.
    if seen.setdefault((path, marked), False):
        return []
    seen[(path, marked)] = True
    if os.path.relpath(path, ROOT) in UNMARKED:
        return []
    with open(path, encoding="utf-8") as handle:
        return unmarked_changes(yaml.safe_load(handle), marked, path, seen)


def entry_point(role: str, tasks_from: str) -> str:
    name = tasks_from if tasks_from.endswith(".yml") else tasks_from + ".yml"
    return str(ROOT / "roles" / role / "tasks" / name)


def entry_points() -> list[str]:
    """Each role's main.yml and the entry points its argument specification
    names, and every tasks_from a playbook names."""
    found = []
    for role in sorted((ROOT / "roles").iterdir()):
        specs = role / "meta" / "argument_specs.yml"
        names = yaml.safe_load(specs.read_text())["argument_specs"] if specs.exists() else {}
        found += [entry_point(role.name, name) for name in {"main", *names}]
    for playbook in sorted((ROOT / "playbooks").rglob("*.yml")):
        for role, tasks_from in re.findall(r"name: (\w+)\n\s+tasks_from: (\w+)", playbook.read_text()):
            found.append(entry_point(role, tasks_from))
    return sorted(set(found))


def test_every_task_that_changes_a_host_comes_after_the_look_is_marked_stale():
    """Each role's entry points (tasks/*.yml a play or another role can
    name), followed into the files they import and include: a task that can
    change the host (not one that only reads it or the database, not an
    install the one apt run makes) comes after a task that sets
    _gearman_common_look_fresh false. Without that, a role after it could
    read the host's look from before the change and miss what it did.
    (A mark's condition is not checked against the change's: a reviewer's
    part. Handlers are not walked: only a changing task notifies one.)"""
    seen: dict = {}
    found = []
    for path in entry_points():
        found += check_file(path, False, seen)
    assert len(seen) > 40  # the check did follow the roles' task files
    assert found == []


def test_the_mark_is_caught_by_the_check():
    """The check above can fail: a task that writes, with no mark before it."""
    tasks = [{"name": "Write", "jobqueue.gearman.write_files": {"files": []}}]
    assert unmarked_changes(tasks, False, str(ROOT / "roles/x/tasks/main.yml"), {}) == [
        "roles/x/tasks/main.yml: Write"]
    assert unmarked_changes([{"name": "Mark", **MARKS[0]}] + tasks, False, str(ROOT / "x.yml"), {}) == []


def test_one_look_answers_each_caller_apart_and_says_what_was_asked(tmp_path):
    """One state_info run with two callers' looks (and an entry of its own):
    each caller gets its own answer, with what it asked and no other entry
    (an entry both ask for is in both), and says what that was; a command
    asked with two argument lists is refused. The answers test holds for
    each caller's answer and its own look, and not for a look it was not
    asked (the other caller's, a path more, another pattern, other
    arguments), nor for what is not an answer."""
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "a").write_text("a\n")
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    run = ansible_playbook("tests/unit/host_look.yml", "-e", json.dumps({
        "folder": str(folder), "user": user, "group": group, "answer": str(tmp_path / "answer.json")}))
    assert run.returncode == 0, run.stdout + run.stderr
    answer = json.loads((tmp_path / "answer.json").read_text())

    nothing = {"paths": [], "units": [], "users": [], "groups": [], "processes": [], "commands": {}}
    assert answer["asked"] == nothing | {"paths": [f"{folder}/direct"]}
    assert answer["paths"] == [f"{folder}/direct"]
    first, second = answer["first"], answer["second"]
    assert first["asked"] == nothing | {"paths": [f"{folder}/a", f"{folder}/shared"], "users": [user],
                                        "commands": {"said": ["echo", "said"]}}
    assert second["asked"] == nothing | {"paths": [f"{folder}/shared", f"{folder}/b"],
                                         "units": ["gearman-worker-*@*.service"], "groups": [group],
                                         "processes": ["sleep"], "commands": {"number": ["echo", "5"]}}
    assert list(first["paths"]) == [f"{folder}/a", f"{folder}/shared"]
    assert first["paths"][f"{folder}/a"]["kind"] == "file"
    assert first["paths"][f"{folder}/shared"] == second["paths"][f"{folder}/shared"] == {"exists": False}
    assert list(second["paths"]) == [f"{folder}/shared", f"{folder}/b"]
    assert list(first["users"]) == [user] and second["users"] == {}
    assert list(second["groups"]) == [group] and first["groups"] == {}
    assert list(second["processes"]) == ["sleep"] and first["processes"] == {}
    assert first["commands"] == {"said": {"run": True, "rc": 0, "stdout": "said\n", "stderr": ""}}
    assert list(second["commands"]) == ["number"]
    assert "two different argument lists" in answer["conflict"]
    assert answer["answers"] == {
        "first": True, "second": True, "nothing": True, "the_number_as_text": True,
        "first_for_second": False, "a_path_more": False, "another_pattern": False, "other_arguments": False,
        "skipped": False, "none": False}


def test_a_callers_answer_has_the_units_of_its_own_names_and_patterns_only():
    """Where systemd runs (not on this machine): of the units found for
    all the callers, each answer has those it named and those its patterns
    stood for, so that a role that reads every unit of its answer (the
    workers' surplus instances) never sees another role's."""
    state_info = plugin_module("modules/state_info.py")
    found = {"paths": {}, "users": {}, "groups": {}, "processes": {}, "commands": {},
             "units": {name: {"exists": True} for name in (
                 "mariadb.service", "gearman-worker-php@1.service", "gearman-worker-php@2.service")}}
    expanded = {"gearman-worker-*@*.service": ["gearman-worker-php@1.service", "gearman-worker-php@2.service"]}
    nothing = {"paths": [], "units": [], "users": [], "groups": [], "processes": [], "commands": {}}
    workers = state_info.answer(nothing | {"units": ["gearman-worker-*@*.service", "gearman-worker-php@1.service"]},
                                found, expanded)
    database = state_info.answer(nothing | {"units": ["mariadb.service", "missing.service"]}, found, expanded)
    assert list(workers["units"]) == ["gearman-worker-php@1.service", "gearman-worker-php@2.service"]
    assert list(database["units"]) == ["mariadb.service"]
