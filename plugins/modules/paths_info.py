#!/usr/bin/python
"""paths_info: what several paths are on a host, in one module run."""

from __future__ import annotations

DOCUMENTATION = r"""
module: paths_info
short_description: What several paths are, in one look
description:
  - For each path given, whether it exists and, if so, its kind (regular
    file, directory, symbolic link or other), owner, group, octal mode and,
    for a regular file, the SHA-1 checksum of its content.
  - Like M(ansible.builtin.stat) for many paths at once, so that a role can
    tell with one module run which of its files differ from what it would
    write (see the P(jobqueue.gearman.files_to_write#filter) filter). A
    missing path, or one in a missing folder, is reported as missing.
  - Symbolic links are not followed. Each path is reported under the key it
    was given as (no C(~) or variable expansion).
version_added: 1.1.0
options:
  paths:
    description: Absolute paths.
    type: list
    elements: str
    required: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author: The jobqueue.gearman maintainers
"""

EXAMPLES = r"""
- name: Look at the files this role writes
  jobqueue.gearman.paths_info:
    paths: [/etc/gearmand.conf, /etc/default/gearman-job-server]
  register: _my_files_found
"""

RETURN = r"""
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
"""

import grp
import os
import pwd
import stat

from ansible.module_utils.basic import AnsibleModule


def _name(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def describe(module: AnsibleModule, path: str) -> dict:
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


def main() -> None:
    module = AnsibleModule(argument_spec={"paths": {"type": "list", "elements": "str", "required": True}},
                           supports_check_mode=True)
    module.exit_json(changed=False, paths={path: describe(module, path) for path in module.params["paths"]})


if __name__ == "__main__":
    main()
