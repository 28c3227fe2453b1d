"""The mysql_logins_to_set filter: which of a role's MariaDB logins a server
lacks as the role would set them, from one query (the role's look): so that
community.mysql.mysql_user, about 0.4 s a login even with nothing to change,
runs only for those."""

from __future__ import annotations

import hashlib

DOCUMENTATION = r"""
name: mysql_logins_to_set
version_added: 1.1.0
short_description: The logins a MariaDB server does not have as wanted
description:
  - Compares the logins a role would set with M(community.mysql.mysql_user)
    (user, host, password, privileges and TLS requirement) with what one
    query of the server's C(mysql.user) and C(information_schema) privilege
    tables found, and returns C(user@host) of each login that is missing or
    differs.
  - A login differs when its password is not the wanted one hashed as
    C(mysql_native_password) (any other authentication plugin counts as
    different, so the module decides), when its TLS requirement is not the
    wanted one, or when its privileges are not exactly the wanted ones (the
    module revokes those not asked for, global ones other than USAGE
    included, and the grant option, which the role never gives).
options:
  _input:
    description: The logins as the server should have them.
    type: list
    elements: dict
    required: true
    suboptions:
      user: {description: User name., type: str, required: true}
      host: {description: Host part., type: str, required: true}
      password: {description: The password in clear., type: str, required: true}
      priv:
        description:
          - Privileges as M(community.mysql.mysql_user) takes them in a string,
            C(db.table:PRIV,PRIV/db.table:PRIV (column, column)).
        type: str
        required: true
      ssl_type:
        description:
          - The wanted C(ssl_type) (C('') for none, C(ANY) for REQUIRE SSL);
            left out or null, any.
        type: str
  found:
    description:
      - The rows read, as C(logins) (user, host, ssl_type, plugin,
        authentication_string) and C(privileges) (grantee, db, name, priv,
        col, grantable; name C(*) for a database's, db C(*) for global
        ones, col null but for column privileges, grantable C(YES) where
        the privilege was given WITH GRANT OPTION).
    type: dict
    required: true
    positional: true
"""

EXAMPLES = r"""
- name: Create the logins that differ, and only those
  community.mysql.mysql_user:
    name: "{{ item.user }}"
    host: "{{ item.host }}"
    password: "{{ item.password }}"
    priv: "{{ item.priv }}"
  loop: "{{ _my_logins }}"
  when: (item.user ~ '@' ~ item.host) in _my_logins | jobqueue.gearman.mysql_logins_to_set(_my_found)
  no_log: true
"""

RETURN = r"""
_value:
  description: C(user@host) of each login to set, in the order given.
  type: list
  elements: str
"""


def native_hash(password: str) -> str:
    """MariaDB's and MySQL's mysql_native_password: SHA-1 of the SHA-1 digest."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode("utf-8")).digest()).hexdigest().upper()


def wanted_privileges(priv: str) -> set:
    wanted = set()
    for part in filter(None, (p.strip() for p in priv.split("/"))):
        target, _, privileges = part.rpartition(":")
        db, _, name = target.partition(".")
        db, name = db.strip("`"), name.strip("`")
        for privilege in _split_outside_parentheses(privileges):
            kind, _, columns = privilege.partition("(")
            kind = " ".join(kind.split()).upper()
            if columns:
                for column in columns.rstrip(")").split(","):
                    wanted.add((db, name, kind, column.strip().strip("`")))
            elif kind != "USAGE":
                wanted.add((db, name, kind, None))
    return wanted


def _split_outside_parentheses(text: str) -> list:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def grantee(user: str, host: str) -> str:
    return f"'{user}'@'{host}'"


def mysql_logins_to_set(logins, found) -> list:
    rows = {(row["user"], row["host"]): row for row in found.get("logins", [])}
    held: dict = {}
    for row in found.get("privileges", []):
        privileges = held.setdefault(row["grantee"], set())
        if row["priv"].upper() != "USAGE":
            privileges.add((row["db"], row["name"], row["priv"].upper(), row.get("col") or None))
        # WITH GRANT OPTION shows only here, on a global grant as USAGE's.
        if str(row.get("grantable", "NO")).upper() == "YES":
            privileges.add((row["db"], row["name"], "GRANT OPTION", None))
    to_set = []
    for login in logins:
        row = rows.get((login["user"], login["host"]))
        same = (
            row is not None
            and row.get("plugin") in ("mysql_native_password", "")
            and row.get("authentication_string") == native_hash(login["password"])
            and (login.get("ssl_type") is None or row.get("ssl_type", "") == login["ssl_type"])
            and held.get(grantee(login["user"], login["host"]), set()) == wanted_privileges(login["priv"])
        )
        if not same:
            to_set.append(f"{login['user']}@{login['host']}")
    return to_set


class FilterModule:
    def filters(self):
        return {"mysql_logins_to_set": mysql_logins_to_set}
