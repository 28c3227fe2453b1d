#!/usr/bin/python
"""state_info: what a role needs to know of a host, in one module run."""

from __future__ import annotations

DOCUMENTATION = r"""
module: state_info
short_description: A role's paths, services and accounts, in one look
description:
  - For each path given, whether it exists and, if so, its kind (regular
    file, directory, symbolic link or other), owner, group, octal mode and,
    for a regular file, the SHA-1 checksum of its content. Symbolic links
    are not followed; a path in a missing folder is missing.
  - For each systemd unit given, its load, active, sub and unit file states,
    the drop-in files systemd has read for it and whether its files changed
    since systemd read them, from one C(systemctl show). A name with C(*), C(?) or C([) is a pattern, which
    stands for the units systemd has loaded under it and those enabled by a
    link in a C(.wants) folder of C(/etc/systemd/system).
  - For each user and group given, whether it exists and, for a user, its
    primary group, home, shell and comment.
  - For each process name given, the command line of every process of that
    name, read from C(/proc) (minimal hosts have no C(ps)).
  - On request, the names of the packages dpkg has fully installed, read
    from its status file and the journal of its updates (no C(dpkg-query)
    run, and no C(python3-apt) needed as M(ansible.builtin.package_facts)
    needs it).
  - For each command given, its exit status and output. Only commands that
    read are for here, for example C(php -m), since the module runs them in
    check mode too and reports no change.
  - Several callers' looks can be made in one run, with O(looks); each gets
    its own answer, with what it asked and no other entry, and C(asked)
    says what that was, so that a caller can tell whether an answer has
    every entry it needs (see the P(jobqueue.gearman.answers#test) test).
  - One module run instead of one for each path, service and account, so
    that a role runs the tasks that change a host only where something
    differs (see the P(jobqueue.gearman.files_to_write#filter) filter and
    the P(jobqueue.gearman.like#test) test). Each entry is keyed by the name
    it was given as.
version_added: 1.1.0
options:
  paths:
    description: Absolute paths.
    type: list
    elements: str
    default: []
  units:
    description:
      - systemd unit names (C(.service) may be left out) or patterns with
        C(*), C(?) or C([...]).
      - Where systemd does not run, no unit is reported.
    type: list
    elements: str
    default: []
  users:
    description: User names.
    type: list
    elements: str
    default: []
  groups:
    description: Group names.
    type: list
    elements: str
    default: []
  processes:
    description: Process names, as the kernel has them (C(/proc/PID/comm)).
    type: list
    elements: str
    default: []
  installed_packages:
    description: Whether to list the packages dpkg has fully installed.
    type: bool
    default: false
  commands:
    description:
      - Commands to run, each an argument list (no shell), keyed by a name
        of the caller's choice.
      - A command whose program is not there (not on the C(PATH), or a
        missing absolute path) is not run, so a look before an install does
        not fail.
    type: dict
    default: {}
  looks:
    description:
      - More looks, keyed by a name of the caller's choice, each a dict of
        C(paths), C(units), C(users), C(groups), C(processes) and
        C(commands) as above. Each is answered under its name in the
        C(looks) returned; an entry asked by several is looked at once.
      - Two looks may name the same command only with the same arguments.
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author: The jobqueue.gearman maintainers
"""

EXAMPLES = r"""
- name: Look at the job server's files, its service and its account
  jobqueue.gearman.state_info:
    paths: [/etc/gearmand.conf, /etc/default/gearman-job-server]
    units: [gearman-job-server.service]
    users: [gearman]
    groups: [gearman]
  register: _my_found

- name: Start it, unless it is enabled and running
  ansible.builtin.systemd_service:
    name: gearman-job-server.service
    enabled: true
    state: started
  when: >-
    _my_found.units['gearman-job-server.service'] is not
    jobqueue.gearman.like({'unit_file_state': 'enabled', 'active_state': 'active'})
"""

RETURN = r"""
asked:
  description:
    - What the options other than O(looks) asked for - C(paths), C(units)
      (patterns as given), C(users), C(groups) and C(processes) as lists,
      each entry once, and C(commands) as a dict of argument lists, each
      argument text.
  returned: always
  type: dict
  sample:
    paths: [/etc/gearmand.conf]
    units: [gearman-job-server.service]
    users: [gearman]
    groups: [gearman]
    processes: [gearmand]
    commands: {modules: [php, -m]}
looks:
  description:
    - For each look of O(looks), under its name, its own answer, as the
      module returns for its options - C(asked), C(paths), C(units) (a
      pattern's units included), C(users), C(groups), C(processes) and
      C(commands), with the entries it asked for and no other.
  returned: always
  type: dict
  sample:
    gearman_php:
      asked: {paths: [/usr/local/bin/gearman-client.php], units: [], users: [], groups: [], processes: [],
              commands: {modules: [php, -m]}}
      paths: {/usr/local/bin/gearman-client.php: {exists: false}}
      units: {}
      users: {}
      groups: {}
      processes: {}
      commands: {modules: {run: true, rc: 0, stdout: "[PHP Modules]\ngearman\n", stderr: ""}}
paths:
  description: One entry for each path given, keyed by the path.
  returned: always
  type: dict
  sample:
    /etc/gearmand.conf:
      exists: true
      kind: file
      owner: root
      group: gearman
      mode: "0640"
      checksum: 2aae6c35c94fcfb415dbe95f408b9ce91ee846ed
    /etc/missing: {exists: false}
units:
  description:
    - One entry for each unit given and each unit a pattern stands for,
      keyed by its name. C(exists) is false when systemd knows no such unit.
    - C(drop_in_paths) lists the drop-in files systemd read when it last
      loaded the unit, so a drop-in on disk that is missing from it has not
      been read yet (systemd 252 does not count a drop-in folder made after
      the unit was loaded in C(need_daemon_reload)).
    - Empty where systemd does not run.
  returned: always
  type: dict
  sample:
    gearman-job-server.service:
      exists: true
      load_state: loaded
      active_state: active
      sub_state: running
      unit_file_state: enabled
      drop_in_paths: [/etc/systemd/system/gearman-job-server.service.d/override.conf]
      need_daemon_reload: false
users:
  description: One entry for each user given.
  returned: always
  type: dict
  sample:
    gearman: {exists: true, uid: 999, group: gearman, home: /var/lib/gearman, shell: /usr/sbin/nologin, comment: Gearman Job Server}
groups:
  description: One entry for each group given.
  returned: always
  type: dict
  sample:
    gearman: {exists: true, gid: 999}
processes:
  description:
    - For each process name given, the command lines of the processes of
      that name (none when none runs), each its arguments joined by spaces.
  returned: always
  type: dict
  sample:
    gearmand: ["/usr/sbin/gearmand --listen=127.0.0.1 --port=4730"]
installed_packages:
  description:
    - The names of the packages whose dpkg status is C(installed), sorted,
      when asked for; empty where there is no dpkg.
  returned: always
  type: list
  elements: str
  sample: [gearman-job-server, gearman-tools, mariadb-server]
commands:
  description:
    - For each command given, under its name, C(run) (false when its program
      is not there, and then nothing else) and its C(rc), C(stdout) and
      C(stderr).
  returned: always
  type: dict
  sample:
    modules: {run: true, rc: 0, stdout: "[PHP Modules]\ngearman\n", stderr: ""}
"""

import fnmatch
import glob
import grp
import os
import pwd
import shutil
import stat

from ansible.module_utils.basic import AnsibleModule

_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "UnitFileState", "DropInPaths", "NeedDaemonReload")


def _name(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def describe_path(module: AnsibleModule, path: str) -> dict:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return {"exists": False}
    kinds = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "link"))
    info = {
        "exists": True,
        "kind": next((name for test, name in kinds if test(st.st_mode)), "other"),
        "owner": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
        "mode": "%04o" % stat.S_IMODE(st.st_mode),
    }
    if info["kind"] == "file":
        info["checksum"] = module.digest_from_file(path, "sha1")
    return info


def describe_user(name: str) -> dict:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return {"exists": False}
    return {"exists": True, "uid": entry.pw_uid, "group": _name(grp.getgrgid, entry.pw_gid),
            "home": entry.pw_dir, "shell": entry.pw_shell, "comment": entry.pw_gecos}


def describe_group(name: str) -> dict:
    try:
        return {"exists": True, "gid": grp.getgrnam(name).gr_gid}
    except KeyError:
        return {"exists": False}


def _systemd_runs() -> bool:
    return os.path.isdir("/run/systemd/system")


def _expand(module: AnsibleModule, systemctl: str, pattern: str) -> list[str]:
    """The units a pattern stands for: loaded ones, and those enabled by a link."""
    rc, out, err = module.run_command([systemctl, "list-units", "--all", "--plain", "--no-legend", "--", pattern])
    if rc != 0:
        module.fail_json(msg=f"systemctl list-units {pattern} failed: {err.strip()}")
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    for link in glob.glob("/etc/systemd/system/*.wants/*"):
        if fnmatch.fnmatchcase(os.path.basename(link), pattern):
            names.append(os.path.basename(link))
    return names


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def describe_units(module: AnsibleModule, wanted: list[str], expanded: dict | None = None) -> dict:
    """Each unit wanted, and each a pattern stands for; EXPANDED, if given,
    gets the names each pattern stood for."""
    if not wanted or not _systemd_runs():
        return {}
    systemctl = module.get_bin_path("systemctl", required=True)
    names: list[str] = []
    for name in wanted:
        units = _expand(module, systemctl, name) if _is_pattern(name) else [name]
        if expanded is not None and _is_pattern(name):
            expanded[name] = units
        for unit in units:
            if unit not in names:
                names.append(unit)
    if not names:
        return {}
    rc, out, err = module.run_command([systemctl, "show", "--property=" + ",".join(_PROPERTIES), "--"] + names)
    if rc != 0:
        module.fail_json(msg=f"systemctl show failed: {err.strip()}")
    # One block of properties for each unit, in the order asked, each
    # property on its own line (systemctl's own order, not ours).
    blocks = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
              for block in out.strip().split("\n\n")]
    if len(blocks) != len(names):
        module.fail_json(msg=f"systemctl show answered for {len(blocks)} of {len(names)} units", output=out)
    units = {}
    for name, props in zip(names, blocks):
        units[name] = {
            "exists": props.get("LoadState") not in ("not-found", None),
            "load_state": props.get("LoadState", ""),
            "active_state": props.get("ActiveState", ""),
            "sub_state": props.get("SubState", ""),
            "unit_file_state": props.get("UnitFileState", ""),
            "drop_in_paths": props.get("DropInPaths", "").split(),
            "need_daemon_reload": props.get("NeedDaemonReload") == "yes",
        }
    return units


def command_lines(wanted: list[str]) -> dict:
    found: dict = {name: [] for name in wanted}
    if not wanted:
        return found
    for entry in sorted(os.listdir("/proc")):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as comm:
                name = comm.read().decode("utf-8", "replace").rstrip("\n")
            if name not in found:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                raw = cmdline.read()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if not raw:  # a zombie or a kernel thread: no arguments to report
            continue
        args = raw.rstrip(b"\0").split(b"\0")
        found[name].append(" ".join(arg.decode("utf-8", "replace") for arg in args))
    return found


DPKG_DIR = "/var/lib/dpkg"


def _dpkg_records(text: str) -> dict:
    """Each package's status in dpkg's format, keyed by name and architecture
    (a package installed for two architectures has a record for each)."""
    records = {}
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line[:1] not in ("", " ", "\t") and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Package"):
            records[(fields["Package"], fields.get("Architecture", ""))] = fields.get("Status", "").split()
    return records


def installed_packages(dpkg_dir: str = DPKG_DIR) -> list[str]:
    """The packages whose status (its third word) is "installed": those
    removed with their configuration left, or half set up, are not. The
    journal of updates dpkg has not yet folded into its status file (after
    an interrupted run) is applied on top, in order, as dpkg-query does."""
    try:
        with open(os.path.join(dpkg_dir, "status"), encoding="utf-8", errors="replace") as status:
            records = _dpkg_records(status.read())
    except FileNotFoundError:
        return []
    journal = os.path.join(dpkg_dir, "updates")
    for name in sorted(os.listdir(journal) if os.path.isdir(journal) else [], key=lambda n: (len(n), n)):
        if name.isdigit():
            try:
                with open(os.path.join(journal, name), encoding="utf-8", errors="replace") as update:
                    records.update(_dpkg_records(update.read()))
            except FileNotFoundError:  # folded into the status file meanwhile by a running dpkg
                continue
    return sorted({name for (name, _), state in records.items() if len(state) == 3 and state[2] == "installed"})


def run_commands(module: AnsibleModule, wanted: dict) -> dict:
    ran = {}
    for name, argv in wanted.items():
        program = argv[0]
        if not (os.path.isfile(program) and os.access(program, os.X_OK) if "/" in program
                else shutil.which(program)):
            ran[name] = {"run": False}
            continue
        rc, out, err = module.run_command(argv, expand_user_and_vars=False)
        ran[name] = {"run": True, "rc": rc, "stdout": out, "stderr": err}
    return ran


LISTS = ("paths", "units", "users", "groups", "processes")


def normalise(module: AnsibleModule, look: dict, where: str) -> dict:
    """A look as it is asked: each list's entries as text, each once, and a
    command's arguments as text (a number is its text, as the command
    module takes it)."""
    unknown = set(look) - set(LISTS) - {"commands"}
    if unknown:
        module.fail_json(msg=f"{where}: unknown entries {sorted(unknown)}; a look takes {', '.join(LISTS)} and commands")
    asked: dict = {}
    for key in LISTS:
        entries = look.get(key) or []
        if not isinstance(entries, list):
            module.fail_json(msg=f"{where}: {key} must be a list, not {entries!r}")
        asked[key] = list(dict.fromkeys(str(entry) for entry in entries))
    asked["commands"] = {}
    for name, argv in (look.get("commands") or {}).items():
        if not isinstance(argv, list) or not argv or any(isinstance(arg, (dict, list)) for arg in argv):
            module.fail_json(msg=f"{where}: commands: {name} must be a non-empty list of arguments, not {argv!r}")
        asked["commands"][name] = [str(arg) for arg in argv]
    return asked


def merge(module: AnsibleModule, looks: list[dict]) -> dict:
    """Every entry of the looks, in order, each once."""
    merged: dict = {key: [] for key in LISTS}
    merged["commands"] = {}
    for look in looks:
        for key in LISTS:
            merged[key].extend(entry for entry in look[key] if entry not in merged[key])
        for name, argv in look["commands"].items():
            if merged["commands"].setdefault(name, argv) != argv:
                module.fail_json(msg=f"commands: {name} is asked for with two different argument lists")
    return merged


def answer(asked: dict, found: dict, expanded: dict) -> dict:
    """What was found of the entries one look asked for, and no other."""
    units = {}
    for name in asked["units"]:
        for unit in expanded.get(name, []) if _is_pattern(name) else [name]:
            if unit in found["units"]:
                units[unit] = found["units"][unit]
    return {
        "asked": asked,
        "paths": {path: found["paths"][path] for path in asked["paths"]},
        "units": units,
        "users": {name: found["users"][name] for name in asked["users"]},
        "groups": {name: found["groups"][name] for name in asked["groups"]},
        "processes": {name: found["processes"][name] for name in asked["processes"]},
        "commands": {name: found["commands"][name] for name in asked["commands"]},
    }


def main() -> None:
    names = {"type": "list", "elements": "str", "default": []}
    module = AnsibleModule(argument_spec={"paths": names, "units": names, "users": names, "groups": names,
                                          "processes": names, "commands": {"type": "dict", "default": {}},
                                          "looks": {"type": "dict", "default": {}},
                                          "installed_packages": {"type": "bool", "default": False}},
                           supports_check_mode=True)
    params = module.params
    direct = normalise(module, {key: params[key] for key in (*LISTS, "commands")}, "options")
    callers = {}
    for name, look in params["looks"].items():
        if not isinstance(look, dict):
            module.fail_json(msg=f"looks: {name} must be a dict, not {look!r}")
        callers[name] = normalise(module, look, f"looks: {name}")
    asked = merge(module, [direct, *callers.values()])
    expanded: dict = {}
    found = {
        "paths": {path: describe_path(module, path) for path in asked["paths"]},
        "units": describe_units(module, asked["units"], expanded),
        "users": {name: describe_user(name) for name in asked["users"]},
        "groups": {name: describe_group(name) for name in asked["groups"]},
        "processes": command_lines(asked["processes"]),
        "commands": run_commands(module, asked["commands"]),
    }
    module.exit_json(
        changed=False,
        **answer(direct, found, expanded),
        looks={name: answer(look, found, expanded) for name, look in callers.items()},
        installed_packages=installed_packages() if params["installed_packages"] else [],
    )


if __name__ == "__main__":
    main()
