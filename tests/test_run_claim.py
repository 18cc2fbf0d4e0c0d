"""A last checkpoint's claim: held by one run, dropped when it ends or dies."""
from __future__ import annotations

import subprocess
import sys

import pytest

from recbole_attn.run_claim import claim, lock_path


def in_use(checkpoint) -> bool:
    """Whether another holder has ``checkpoint``'s claim (asked by claiming it)."""
    held = claim(checkpoint)
    if held is None:
        return True
    held.release()
    return False

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no fcntl: nothing is locked")


def test_one_claim_at_a_time_and_release_frees_it(tmp_path):
    checkpoint = tmp_path / "AttnSeq-x-last.pth"
    assert not in_use(checkpoint) and not (tmp_path / "AttnSeq-x-last.pth.lock").exists()  # released: no file
    first = claim(checkpoint)
    assert first is not None and in_use(checkpoint)
    assert claim(checkpoint) is None
    first.release()
    assert not in_use(checkpoint) and not (tmp_path / "AttnSeq-x-last.pth.lock").exists()
    with claim(checkpoint) as second:
        assert second is not None and in_use(checkpoint)
    assert not in_use(checkpoint)


def test_a_lock_file_nobody_holds_claims_nothing(tmp_path):
    checkpoint = tmp_path / "AttnSeq-x-last.pth"
    (tmp_path / "AttnSeq-x-last.pth.lock").write_text("")  # left by a killed run
    assert not in_use(checkpoint)
    held = claim(checkpoint)
    assert held is not None
    held.release()


def test_a_killed_holder_frees_the_claim(tmp_path):
    checkpoint = tmp_path / "AttnSeq-x-last.pth"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)",
         lock_path(checkpoint)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert in_use(checkpoint) and claim(checkpoint) is None
    finally:
        holder.kill()
        holder.wait()
    assert not in_use(checkpoint)
    held = claim(checkpoint)
    assert held is not None
    held.release()


def test_a_folder_that_cannot_lock_claims_without_a_lock(tmp_path, monkeypatch, caplog):
    """A file system without locks (or a read-only folder) must not stop a
    run that would have run before; it goes on unlocked, with a warning."""
    import errno

    from recbole_attn import run_claim

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_claim.fcntl, "flock", no_locks)
    held = claim(tmp_path / "AttnSeq-x-last.pth")
    assert held is not None and "cannot lock" in caplog.text and "No locks available" in caplog.text
    held.release()
    assert claim(tmp_path / "missing-folder" / "AttnSeq-x-last.pth") is not None  # cannot even make the file
