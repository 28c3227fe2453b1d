"""The database role sets a login (community.mysql.mysql_user, about 0.4 s
each even when nothing changes) only where its one query found it missing
or different: the mysql_logins_to_set filter names those logins, and a login
it wrongly leaves out would never be repaired. So every way a login can
differ is named here, and a login as wanted is not."""

from __future__ import annotations

import hashlib

import pytest

from conftest import plugin_module

plugin = plugin_module("filter/mysql_logins_to_set.py")


def native(password: str) -> str:
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


QUEUE = {"user": "gearman", "host": "10.0.0.5", "password": "s3cret",
         "priv": "gearman.gearman_queue_a:SELECT,INSERT,DELETE", "ssl_type": ""}
EXPORTER = {"user": "gearman_exporter", "host": "10.0.0.5", "password": "other",
            "priv": "gearman.gearman_queue_a:SELECT (function_name, queued_at)", "ssl_type": "ANY"}


def as_found(**changes):
    """What the look reads when the server has both logins as wanted."""
    found = {
        "logins": [
            {"user": "gearman", "host": "10.0.0.5", "ssl_type": "", "plugin": "mysql_native_password",
             "authentication_string": native("s3cret")},
            {"user": "gearman_exporter", "host": "10.0.0.5", "ssl_type": "ANY", "plugin": "mysql_native_password",
             "authentication_string": native("other")},
        ],
        "privileges": [
            {"grantee": "'gearman'@'10.0.0.5'", "db": "*", "name": "*", "priv": "USAGE", "col": None},
            *({"grantee": "'gearman'@'10.0.0.5'", "db": "gearman", "name": "gearman_queue_a", "priv": p, "col": None}
              for p in ("SELECT", "INSERT", "DELETE")),
            {"grantee": "'gearman_exporter'@'10.0.0.5'", "db": "*", "name": "*", "priv": "USAGE", "col": None},
            *({"grantee": "'gearman_exporter'@'10.0.0.5'", "db": "gearman", "name": "gearman_queue_a",
               "priv": "SELECT", "col": c} for c in ("function_name", "queued_at")),
        ],
    }
    for key, change in changes.items():
        found[key] = change(found[key])
    return found


def test_logins_as_wanted_are_left_alone():
    assert plugin.mysql_logins_to_set([QUEUE, EXPORTER], as_found()) == []


def test_native_hash_is_what_mariadb_stores():
    # SELECT PASSWORD('password') on MariaDB and MySQL 5.x.
    assert plugin.native_hash("password") == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"


@pytest.mark.parametrize("story, changes, to_set", [
    ("missing login", {"logins": lambda rows: rows[1:]}, ["gearman@10.0.0.5"]),
    ("other password", {"logins": lambda rows: [{**rows[0], "authentication_string": native("old")}, rows[1]]},
     ["gearman@10.0.0.5"]),
    ("other plugin, so the module decides",
     {"logins": lambda rows: [{**rows[0], "plugin": "ed25519"}, rows[1]]}, ["gearman@10.0.0.5"]),
    ("TLS required where it must not be", {"logins": lambda rows: [{**rows[0], "ssl_type": "ANY"}, rows[1]]},
     ["gearman@10.0.0.5"]),
    ("TLS not required where it must be", {"logins": lambda rows: [rows[0], {**rows[1], "ssl_type": ""}]},
     ["gearman_exporter@10.0.0.5"]),
    ("a privilege more", {"privileges": lambda rows: rows + [
        {"grantee": "'gearman'@'10.0.0.5'", "db": "gearman", "name": "gearman_queue_a", "priv": "UPDATE", "col": None}]},
     ["gearman@10.0.0.5"]),
    ("a privilege less", {"privileges": lambda rows: [r for r in rows if r["priv"] != "DELETE"]},
     ["gearman@10.0.0.5"]),
    ("a global privilege", {"privileges": lambda rows: rows + [
        {"grantee": "'gearman'@'10.0.0.5'", "db": "*", "name": "*", "priv": "PROCESS", "col": None}]},
     ["gearman@10.0.0.5"]),
    ("a database privilege", {"privileges": lambda rows: rows + [
        {"grantee": "'gearman_exporter'@'10.0.0.5'", "db": "gearman", "name": "*", "priv": "SELECT", "col": None}]},
     ["gearman_exporter@10.0.0.5"]),
    ("another table's", {"privileges": lambda rows: [
        {**r, "name": "gearman_queue_b"} if r["priv"] == "INSERT" else r for r in rows]},
     ["gearman@10.0.0.5"]),
    ("the grant option", {"privileges": lambda rows: [
        {**r, "grantable": "YES"} if r["priv"] == "USAGE" and r["grantee"].startswith("'gearman'") else r
        for r in rows]},
     ["gearman@10.0.0.5"]),
    ("a table privilege with the grant option", {"privileges": lambda rows: [
        {**r, "grantable": "YES"} if r["priv"] == "SELECT" and r["col"] else r for r in rows]},
     ["gearman_exporter@10.0.0.5"]),
    ("a column less", {"privileges": lambda rows: [r for r in rows if r["col"] != "queued_at"]},
     ["gearman_exporter@10.0.0.5"]),
    ("the whole table instead of two columns", {"privileges": lambda rows: [
        {**r, "col": None} if r["col"] == "function_name" else r for r in rows if r["col"] != "queued_at"]},
     ["gearman_exporter@10.0.0.5"]),
])
def test_each_difference_names_its_login(story, changes, to_set):
    assert plugin.mysql_logins_to_set([QUEUE, EXPORTER], as_found(**changes)) == to_set, story


def test_a_login_whose_tls_is_left_to_a_later_play_keeps_either():
    either = {**QUEUE, "ssl_type": None}
    for ssl_type in ("", "ANY"):
        found = as_found(logins=lambda rows, s=ssl_type: [{**rows[0], "ssl_type": s}, rows[1]])
        assert plugin.mysql_logins_to_set([either], found) == []


def test_several_tables_and_spaces_in_privileges():
    wanted = {**QUEUE, "priv": "gearman.a:SELECT,INSERT,DELETE/gearman.b:SELECT, INSERT ,DELETE"}
    privileges = [{"grantee": "'gearman'@'10.0.0.5'", "db": "gearman", "name": t, "priv": p, "col": None}
                  for t in ("a", "b") for p in ("SELECT", "INSERT", "DELETE")]
    found = as_found(privileges=lambda rows: privileges)
    assert plugin.mysql_logins_to_set([wanted], found) == []
