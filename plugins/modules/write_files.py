#!/usr/bin/python
"""write_files: a role's folders and files, written in one module run."""

from __future__ import annotations

DOCUMENTATION = r"""
module: write_files
short_description: Several folders and files, with their content, owner, group and mode, in one module run
description:
  - Makes each folder given and writes each file given, in the order given,
    where it is missing or differs in content, owner, group or mode. A file
    is written to a temporary file beside it, checked by the command in
    O(files[].validate) if there is one, and then renamed over the old one,
    so that a reader never sees it half written.
  - One module run for all of a role's files instead of two or three for
    each (M(ansible.builtin.copy) looks at the file, sends it, then moves
    it in place). Roles pass it what the
    P(jobqueue.gearman.files_to_write#filter) filter returns, the entries
    a look with M(jobqueue.gearman.state_info) found missing or different.
  - In check mode it reports what it would change and changes nothing. With
    C(--diff) it shows each file's change, except for files marked
    O(files[].secret). The file contents are module arguments, so a task
    that writes a secret needs C(no_log) as well.
  - Where a file fails its check, that file is left as it was, the files
    before it in the list are written, those after it are not, and the task
    fails with the checker's output.
  - As M(ansible.builtin.copy) and M(ansible.builtin.file) do by default, a
    symbolic link where a file is wanted is replaced by the file, and one
    where a folder is wanted is followed (the folder it points to gets the
    owner, group and mode).
version_added: 1.1.0
options:
  files:
    description:
      - The folders and files, as the host should have them. Keys other
        than those below are ignored, so that a role's own entries (as
        P(jobqueue.gearman.files_to_write#filter) returns them) can be
        passed as they are.
    type: list
    elements: dict
    required: true
    suboptions:
      dest: {description: Absolute path., type: str, required: true}
      content:
        description:
          - The whole content of a regular file.
          - Without it, the path is a folder, made with its missing parents
            (those with the folder's owner, group and mode as well).
        type: str
      owner: {description: Owner's name., type: str, required: true}
      group: {description: Group's name., type: str, required: true}
      mode: {description: 'Octal mode as a string, like C("0644").', type: raw, required: true}
      validate:
        description:
          - A command that checks the new content before it is put in place,
            run without a shell; C(%s) in it stands for the temporary
            file's path.
        type: str
      secret:
        description: Leave the file's content out of the diff.
        type: bool
        default: false
author: jobqueue.gearman contributors
"""

EXAMPLES = r"""
- name: Write those that differ, in one module run
  jobqueue.gearman.write_files:
    files: "{{ _my_to_write }}"
  notify: Restart my service

- name: A configuration checked before it goes in
  jobqueue.gearman.write_files:
    files:
      - dest: /etc/prometheus/prometheus.yml
        content: "{{ lookup('ansible.builtin.template', 'prometheus.yml.j2') }}"
        owner: root
        group: root
        mode: "0644"
        validate: promtool check config %s
"""

RETURN = r"""
written:
  description: The paths made or changed (or, in check mode, that would be), in the order given.
  returned: always
  type: list
  elements: str
  sample: [/etc/gearman, /etc/default/gearman-job-server]
"""

import grp
import os
import pwd
import shlex
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.parsing.convert_bool import boolean


class Refused(Exception):
    """A file that failed its check, or a path that cannot be made."""


def wanted_mode(entry: dict) -> int:
    mode = entry["mode"]
    return int(mode, 8) if isinstance(mode, str) else int(mode)


def ids(entry: dict, check_mode: bool) -> tuple[int, int] | None:
    """The owner's and group's numbers; None in check mode where one does not
    exist yet (an account a task before this one would have made)."""
    try:
        return pwd.getpwnam(entry["owner"]).pw_uid, grp.getgrnam(entry["group"]).gr_gid
    except KeyError:
        if check_mode:
            return None
        raise Refused(f"{entry['dest']}: no user {entry['owner']!r} or no group {entry['group']!r} on this host")


def attributes_differ(found: os.stat_result, uid_gid: tuple[int, int] | None, mode: int) -> bool:
    return uid_gid is None or (found.st_uid, found.st_gid) != uid_gid or stat.S_IMODE(found.st_mode) != mode


def set_attributes(path: str, uid_gid: tuple[int, int], mode: int) -> None:
    """On a folder just made, or one wanted where a link may point to it."""
    os.chown(path, *uid_gid)
    os.chmod(path, mode)


def set_file_attributes(handle: int, uid_gid: tuple[int, int], mode: int) -> None:
    """On an open file: what is changed is the file opened, even if its
    name is swapped meanwhile."""
    os.fchown(handle, *uid_gid)
    os.fchmod(handle, mode)


def make_folder(entry: dict, check_mode: bool) -> bool:
    path, mode = entry["dest"], wanted_mode(entry)
    uid_gid = ids(entry, check_mode)
    try:
        found = os.stat(path)  # a link to a folder is followed
    except FileNotFoundError:
        found = None
    if found is not None and not stat.S_ISDIR(found.st_mode):
        raise Refused(f"{path}: wanted a folder, found something else there")
    if found is not None and not attributes_differ(found, uid_gid, mode):
        return False
    if check_mode:
        return True
    missing = []
    parent = path
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for folder in reversed(missing):
        os.mkdir(folder, mode)
        set_attributes(folder, uid_gid, mode)
    set_attributes(path, uid_gid, mode)
    return True


def write_file(module: AnsibleModule, entry: dict, check_mode: bool, diffs: list) -> bool:
    path, mode = entry["dest"], wanted_mode(entry)
    content = entry["content"].encode("utf-8")
    uid_gid = ids(entry, check_mode)
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        found = None
    link = found is not None and stat.S_ISLNK(found.st_mode)
    if found is not None and not (link or stat.S_ISREG(found.st_mode)):
        raise Refused(f"{path}: wanted a regular file, found something else there (a folder?)")
    before = None
    if found is not None and not link:
        with open(path, "rb") as current:
            before = current.read()
    # A link is replaced by the file, whatever it points to.
    if not link and before == content and not attributes_differ(found, uid_gid, mode):
        return False
    if module._diff:
        shown = {"before_header": path, "after_header": path}
        if boolean(entry.get("secret", False)):
            shown.update(before="(secret, not shown)\n" if before is not None else "",
                         after="(secret, not shown)\n")
        else:
            shown.update(before=before.decode("utf-8", "replace") if before is not None else "",
                         after=entry["content"])
        diffs.append(shown)
    if check_mode:
        return True
    if not link and before == content:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            set_file_attributes(handle, uid_gid, mode)
        finally:
            os.close(handle)
        return True
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise Refused(f"{path}: its folder {folder} does not exist")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(handle, "wb") as new:
            new.write(content)
            new.flush()
            set_file_attributes(new.fileno(), uid_gid, mode)
            os.fsync(new.fileno())
        if entry.get("validate"):
            command = entry["validate"]
            if "%s" not in command:
                raise Refused(f"{path}: validate needs %s where the file's path goes: {command}")
            rc, out, err = module.run_command([word.replace("%s", temporary) for word in shlex.split(command)])
            if rc != 0:
                raise Refused(f"{path}: {command} refused the new content (rc {rc}): {(err or out).strip()}")
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise
    return True


def main() -> None:
    module = AnsibleModule(argument_spec={"files": {"type": "list", "elements": "dict", "required": True}},
                           supports_check_mode=True)
    written, diffs = [], []
    try:
        for entry in module.params["files"]:
            missing = [key for key in ("dest", "owner", "group", "mode") if entry.get(key) in (None, "")]
            if missing:
                raise Refused(f"an entry lacks {', '.join(missing)}: {entry.get('dest', '(no dest)')}")
            if not os.path.isabs(entry["dest"]):
                raise Refused(f"{entry['dest']}: not an absolute path")
            changed = (write_file(module, entry, module.check_mode, diffs) if entry.get("content") is not None
                       else make_folder(entry, module.check_mode))
            if changed:
                written.append(entry["dest"])
    except (Refused, OSError, ValueError, TypeError) as error:
        module.fail_json(msg=str(error), written=written, changed=bool(written))
    result = {"changed": bool(written), "written": written}
    if diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
