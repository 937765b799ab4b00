"""twocol.provenance: a result's commit from git where the tree is a checkout, from
TWOCOL_COMMIT where it is a copy without .git, and null with the reason where neither says."""
import subprocess

from twocol import provenance


def git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def test_this_checkout_gives_gits_head(monkeypatch):
    monkeypatch.setenv(provenance.COMMIT_VARIABLE, "0000000")  # git wins where there is a checkout
    head = subprocess.run(["git", "-C", str(provenance.ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert provenance.commit() == (head, None)


def test_a_copy_without_git_takes_the_named_commit_or_says_why_not(tmp_path, monkeypatch):
    monkeypatch.delenv(provenance.COMMIT_VARIABLE, raising=False)
    sha, why = provenance.commit(tmp_path)
    assert sha is None and f"{tmp_path} is not a git checkout and TWOCOL_COMMIT is not set" in why
    monkeypatch.setenv(provenance.COMMIT_VARIABLE, " 5d3423c\n")
    assert provenance.commit(tmp_path) == ("5d3423c", None)
    monkeypatch.setenv(provenance.COMMIT_VARIABLE, "$(git rev-parse --short HEAD)")  # never substituted
    sha, why = provenance.commit(tmp_path)
    assert sha is None and why.startswith("TWOCOL_COMMIT='$(git rev-parse") and "is not a commit" in why


def test_a_copy_inside_another_repository_is_not_that_repositorys_commit(tmp_path, monkeypatch):
    monkeypatch.delenv(provenance.COMMIT_VARIABLE, raising=False)
    git(tmp_path, "init", "-q")
    (tmp_path / "f").write_text("x")
    git(tmp_path, "add", "f")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "other")
    copy = tmp_path / "copy"
    copy.mkdir()
    assert provenance.commit(copy)[0] is None
    assert provenance.commit(tmp_path)[0] is not None  # the repository's own top level does count
