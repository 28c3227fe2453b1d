"""A role's one look at its files: the state_info module reports what each
path is, and the files_to_write filter names those that are missing or
differ in kind, content, owner, group or mode, and no other. The roles
write only what it names, so a path it wrongly leaves out is never fixed."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import shutil
import subprocess

from conftest import ansible_playbook, plugin_module


def test_one_look_names_exactly_the_files_that_differ(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    for name, text, mode in [("same", "same\n", 0o644), ("mode", "mode\n", 0o600),
                             ("content", "old\n", 0o644), ("group", "group\n", 0o644),
                             ("file-not-folder", "", 0o755), ("empty", "", 0o640), ("none", "", 0o640),
                             ("mode-as-number", "same\n", 0o644)]:
        (folder / name).write_text(text)
        os.chmod(folder / name, mode)
    (folder / "folder").mkdir(mode=0o755)
    os.chmod(folder / "folder", 0o755)
    (folder / "link").symlink_to(folder / "same")
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name

    run = ansible_playbook("tests/unit/files_to_write.yml", "-e",
                           json.dumps({"folder": str(folder), "user": user, "group": group}))
    assert run.returncode == 0, run.stdout + run.stderr
    answer = json.loads((tmp_path / "answer.json").read_text())

    looked = answer["looked"]
    assert looked[f"{folder}/same"] == {"exists": True, "kind": "file", "owner": user, "group": group,
                                        "mode": "0644", "checksum": hashlib.sha1(b"same\n").hexdigest()}
    assert looked[f"{folder}/missing"] == {"exists": False}
    assert looked[f"{folder}/missing/below"] == {"exists": False}
    assert looked[f"{folder}/folder"]["kind"] == "directory"
    assert looked[f"{folder}/link"]["kind"] == "link"
    assert "checksum" not in looked[f"{folder}/link"]

    assert [entry["dest"] for entry in answer["to_write"]] == [
        f"{folder}/{name}" for name in
        ("mode", "content", "group", "missing", "missing/below", "file-not-folder", "link")]
    # Each as the role gave it, content included: the write tasks loop over these.
    assert answer["to_write"][1] == {"dest": f"{folder}/content", "content": "new\n", "owner": user,
                                     "group": group, "mode": "0644"}


def test_one_look_reports_accounts_processes_units_and_commands(tmp_path):
    """The same look tells a role whether its account is as wanted, what a
    running daemon's command line is, and what a command that reads
    answers; and (where systemd does not run, as on this machine) it
    reports no unit, so that a role starts its service rather than skip it."""
    me = pwd.getpwuid(os.getuid())
    group = grp.getgrgid(os.getgid()).gr_name
    sleeper = subprocess.Popen(["sleep", "301"])
    try:
        run = ansible_playbook("tests/unit/state_info.yml", "-e", json.dumps({
            "user": me.pw_name, "group": group, "home": me.pw_dir, "shell": me.pw_shell,
            "process": "sleep", "answer": str(tmp_path / "answer.json")}))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert run.returncode == 0, run.stdout + run.stderr
    answer = json.loads((tmp_path / "answer.json").read_text())

    looked = answer["looked"]
    assert looked["users"][me.pw_name] == {
        "exists": True, "uid": me.pw_uid, "group": grp.getgrgid(me.pw_gid).gr_name,
        "home": me.pw_dir, "shell": me.pw_shell, "comment": me.pw_gecos}
    assert looked["users"]["no-such-user-here"] == {"exists": False}
    assert looked["groups"][group] == {"exists": True, "gid": os.getgid()}
    assert looked["groups"]["no-such-group-here"] == {"exists": False}
    assert "sleep 301" in looked["processes"]["sleep"]
    assert looked["processes"]["no-such-process"] == []
    # A command is run and its answer kept; one whose program is not
    # there is left out (a look before the install that brings it).
    assert looked["commands"]["said"] == {"run": True, "rc": 3, "stdout": "said\n", "stderr": "warned\n"}
    assert looked["commands"]["absent"] == {"run": False}
    assert looked["commands"]["absent_path"] == {"run": False}
    assert looked["commands"]["not_a_program"] == {"run": False}
    assert looked["commands"]["number"]["stdout"] == "5\n"
    assert looked["commands"]["literal"]["stdout"] == "$HOME ~\n"
    # What dpkg itself calls installed, and no more (where there is dpkg).
    if shutil.which("dpkg-query"):
        dpkg = subprocess.run(["dpkg-query", "--show", "--showformat=${Package} ${db:Status-Status}\n"],
                              capture_output=True, text=True, check=True).stdout.splitlines()
        assert looked["installed_packages"] == sorted({line.split()[0] for line in dpkg
                                                       if line.endswith(" installed")})
    like = {"same": True, "other_shell": False, "missing": False, "group": True}
    if os.path.isdir("/run/systemd/system"):  # a developer's machine: ssh.service as it is
        assert set(looked["units"]) >= {"ssh.service"}
        assert answer["like"] | {"no_systemd": None} == like | {"no_systemd": None}
    else:  # the test machine: no unit reported, so a role would start its service
        assert looked["units"] == {}
        assert answer["like"] == like | {"no_systemd": False}


def test_installed_packages_are_those_dpkg_calls_installed(tmp_path):
    """Read from dpkg's status file, then the journal of updates an
    interrupted dpkg run left (applied in order, as dpkg-query does): a
    package removed with its configuration left, half set up or only
    unpacked is not installed; one of two architectures is."""
    (tmp_path / "status").write_text("""Package: plain
Status: install ok installed
Architecture: amd64
Description: one line
 and a continuation line: Status: deinstall ok config-files

Package: removed-config-left
Status: deinstall ok config-files
Architecture: amd64

Package: two-arches
Status: install ok installed
Architecture: i386

Package: two-arches
Status: deinstall ok not-installed
Architecture: amd64

Package: half-configured
Status: install ok half-configured
Architecture: all

Package: fixed-by-the-journal
Status: install ok unpacked
Architecture: all

Package: broken-by-the-journal
Status: install ok installed
Architecture: all
""")
    (tmp_path / "updates").mkdir()
    (tmp_path / "updates" / "0000").write_text("Package: fixed-by-the-journal\nStatus: install ok half-configured\n"
                                               "Architecture: all\n")
    (tmp_path / "updates" / "0001").write_text("Package: fixed-by-the-journal\nStatus: install ok installed\n"
                                               "Architecture: all\n\nPackage: broken-by-the-journal\n"
                                               "Status: install reinstreq half-installed\nArchitecture: all\n")
    (tmp_path / "updates" / "tmp.i").write_text("Package: not-a-journal-entry\nStatus: install ok installed\n")
    state_info = plugin_module("modules/state_info.py")
    assert state_info.installed_packages(str(tmp_path)) == ["fixed-by-the-journal", "plain", "two-arches"]
    assert state_info.installed_packages(str(tmp_path / "no-dpkg-here")) == []
