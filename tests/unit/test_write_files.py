"""A role's files in one module run: write_files makes the folders and
writes the files that differ, and only those; checks a file before it goes
in; shows no secret in a diff; and changes nothing in check mode."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat

from conftest import ansible_playbook

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


def write(tmp_path, entries: list[dict], dry: bool = False) -> dict:
    answer = tmp_path / "answer.json"
    run = ansible_playbook("tests/unit/write_files.yml", "-e", json.dumps({
        "entries": entries, "dry": dry, "answer": str(answer)}))
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(answer.read_text())


def entry(path, content=None, mode="0644", **more) -> dict:
    wanted = {"dest": str(path), "owner": ME, "group": MY_GROUP, "mode": mode, **more}
    if content is not None:
        wanted["content"] = content
    return wanted


def mode_of(path) -> str:
    return f"{stat.S_IMODE(os.lstat(path).st_mode):04o}"


def test_folders_and_files_are_made_once_and_only_what_differs_is_written_again(tmp_path):
    site = tmp_path / "site"
    wanted = [entry(site / "etc" / "app", mode="0750"),
              entry(site / "etc" / "app" / "app.conf", "key = value\n", mode="0640"),
              entry(site / "etc" / "app" / "empty", "", role_key="ignored")]

    first = write(tmp_path, wanted)
    assert first["changed"] and first["written"] == [e["dest"] for e in wanted]
    assert (site / "etc" / "app" / "app.conf").read_text() == "key = value\n"
    assert mode_of(site / "etc" / "app") == "0750"
    # Missing parents are made like the folder.
    assert mode_of(site / "etc") == "0750"
    assert mode_of(site / "etc" / "app" / "app.conf") == "0640"
    assert (site / "etc" / "app" / "empty").read_text() == ""

    again = write(tmp_path, wanted)
    assert not again["changed"] and again["written"] == []

    (site / "etc" / "app" / "app.conf").write_text("key = changed by hand\n")
    os.chmod(site / "etc" / "app" / "empty", 0o600)
    fixed = write(tmp_path, wanted)
    assert fixed["written"] == [str(site / "etc" / "app" / "app.conf"), str(site / "etc" / "app" / "empty")]
    assert (site / "etc" / "app" / "app.conf").read_text() == "key = value\n"
    assert mode_of(site / "etc" / "app" / "empty") == "0644"
    # No temporary file left beside them.
    assert sorted(os.listdir(site / "etc" / "app")) == ["app.conf", "empty"]


def test_check_mode_changes_nothing_and_the_diff_hides_secrets(tmp_path):
    (tmp_path / "plain").write_text("old\n")
    (tmp_path / "secret").write_text("password = old\n")
    wanted = [entry(tmp_path / "plain", "new\n"), entry(tmp_path / "secret", "password = new\n", secret=True),
              entry(tmp_path / "new-folder"), entry(tmp_path / "new-folder" / "file", "x\n")]

    dry = write(tmp_path, wanted, dry=True)
    assert dry["changed"] and dry["written"] == [e["dest"] for e in wanted]
    assert (tmp_path / "plain").read_text() == "old\n"
    assert not (tmp_path / "new-folder").exists()
    shown = {d["after_header"]: d for d in dry["diff"]}
    assert shown[str(tmp_path / "plain")]["before"] == "old\n"
    assert shown[str(tmp_path / "plain")]["after"] == "new\n"
    secret = shown[str(tmp_path / "secret")]
    assert "new" not in secret["before"] + secret["after"]
    assert "old" not in secret["before"] + secret["after"]


def test_a_file_its_check_refuses_is_left_as_it_was_and_the_task_fails(tmp_path):
    (tmp_path / "checked").write_text("good\n")
    wanted = [entry(tmp_path / "before", "written\n"),
              entry(tmp_path / "checked", "bad\n", validate="grep -q good %s"),
              entry(tmp_path / "after", "not written\n")]

    refused = write(tmp_path, wanted)
    assert refused["failed"]
    assert "grep -q good %s refused the new content" in refused["msg"]
    assert refused["written"] == [str(tmp_path / "before")]
    assert (tmp_path / "checked").read_text() == "good\n"
    assert not (tmp_path / "after").exists()
    assert sorted(os.listdir(tmp_path)) == ["answer.json", "before", "checked"]

    accepted = write(tmp_path, [dict(wanted[1], content="good again\n")])
    assert accepted["written"] == [str(tmp_path / "checked")]
    assert (tmp_path / "checked").read_text() == "good again\n"


def test_a_link_is_replaced_where_a_file_is_wanted_and_followed_where_a_folder_is(tmp_path):
    """As copy and file do by default."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "target").write_text("target\n")
    (tmp_path / "file-link").symlink_to(tmp_path / "target")
    (tmp_path / "folder-link").symlink_to(tmp_path / "elsewhere")
    os.chmod(tmp_path / "elsewhere", 0o700)

    done = write(tmp_path, [entry(tmp_path / "file-link", "file\n"), entry(tmp_path / "folder-link", mode="0755")])
    assert done["written"] == [str(tmp_path / "file-link"), str(tmp_path / "folder-link")]
    assert not (tmp_path / "file-link").is_symlink()
    assert (tmp_path / "file-link").read_text() == "file\n"
    assert (tmp_path / "target").read_text() == "target\n"
    assert (tmp_path / "folder-link").is_symlink()
    assert mode_of(tmp_path / "elsewhere") == "0755"
    assert write(tmp_path, [entry(tmp_path / "folder-link", mode="0755")])["written"] == []


def test_a_path_of_another_kind_or_an_unknown_owner_fails_the_task(tmp_path):
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("")
    for wrong, said in [(entry(tmp_path / "a-folder", "text\n"), "wanted a regular file"),
                        (entry(tmp_path / "a-file"), "wanted a folder"),
                        (dict(entry(tmp_path / "new", "x\n"), owner="no-such-user-here"), "no user"),
                        (entry("relative/path", "x\n"), "not an absolute path"),
                        (entry(tmp_path / "no-folder" / "file", "x\n"), f"its folder {tmp_path / 'no-folder'} does not exist"),
                        ({"dest": str(tmp_path / "no-mode"), "owner": ME, "group": MY_GROUP}, "lacks mode")]:
        failed = write(tmp_path, [wrong])
        assert failed["failed"] and said in failed["msg"], failed
    assert not (tmp_path / "new").exists()
