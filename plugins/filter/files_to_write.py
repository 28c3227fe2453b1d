"""The files_to_write filter: those of a role's files and folders a host lacks
as the role would write them, from one look at them all (the state_info
module). A role's file tasks then run only for those paths, so a host that
has them all costs one module run instead of one or two per path."""

from __future__ import annotations

import hashlib

DOCUMENTATION = r"""
name: files_to_write
version_added: 1.1.0
short_description: The wanted files and folders a host does not have as wanted
description:
  - Compares what a role would write (each file's path, content, owner, group
    and mode; or a folder's) with what M(jobqueue.gearman.state_info)
    found there, and returns the entries of those that are missing or differ
    in kind (file or folder), content (SHA-1), owner, group or mode.
  - Where several tasks read that list, a role keeps it once, right after
    its look (C(set_fact)), so the contents are not rendered again for each
    task, and a host that has everything skips the writing cheaply.
  - The content is rendered on the controller, for example with the
    C(ansible.builtin.template) lookup, and written as it is (with
    M(jobqueue.gearman.write_files), which takes these entries as they are,
    all in one module run), so that what is compared is what is written.
options:
  _input:
    description:
      - The files and folders as the host should have them, each entry as
        M(jobqueue.gearman.write_files) takes it in its O(jobqueue.gearman.write_files#module:files)
        option (C(dest), C(content), C(owner), C(group), C(mode); a folder
        has no C(content)). Other keys are kept as they are.
    type: list
    elements: dict
    required: true
  found:
    description: What M(jobqueue.gearman.state_info) registered for them.
    type: dict
    required: true
    positional: true
"""

EXAMPLES = r"""
- name: Look at the files this role writes
  jobqueue.gearman.state_info:
    paths: "{{ _my_files | map(attribute='dest') }}"
  register: _my_files_found

# _my_files: [{dest: /etc/my.conf, content: "{{ lookup('ansible.builtin.template', 'my.conf.j2') }}",
#              owner: root, group: root, mode: "0644"}]
- name: Keep those that differ
  ansible.builtin.set_fact:
    _my_to_write: "{{ _my_files | jobqueue.gearman.files_to_write(_my_files_found) }}"

- name: Write those, and only those
  jobqueue.gearman.write_files:
    files: "{{ _my_to_write }}"
  when: _my_to_write | length > 0
"""

RETURN = r"""
_value:
  description: The entries of the input to write (or folders to make), as given and in the order given.
  type: list
  elements: dict
"""


def _same(want: dict, got: dict) -> bool:
    """Whether what was found is what is wanted: a regular file with the
    content, or a directory where no content is given; with the owner, group
    and mode (compared as numbers: "644" is "0644"). A path that is a link
    is never what is wanted: links are not followed."""
    if not got.get("exists"):
        return False
    if "content" in want:
        kind = got.get("kind") == "file" and got.get("checksum") == _sha1(want["content"])
    else:
        kind = got.get("kind") == "directory"
    return (
        kind
        and got.get("owner") == want["owner"]
        and got.get("group") == want["group"]
        and _mode(got.get("mode")) == _mode(want["mode"])
    )


def _sha1(content) -> str:
    text = "" if content is None else str(content)
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()


def _mode(value) -> int:
    """A mode as Ansible's file modules read it: a string in octal, a number as is."""
    return value if isinstance(value, int) else int(str(value), 8)


def files_to_write(wanted: list[dict], found: dict) -> list[dict]:
    have = (found or {}).get("paths", {})
    return [want for want in wanted if not _same(want, have.get(want["dest"], {}))]


class FilterModule:
    def filters(self):
        return {"files_to_write": files_to_write}
