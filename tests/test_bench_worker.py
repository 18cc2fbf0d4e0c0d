"""A benchmark's worker processes end with it, however it ends."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from recbole_attn.bench import worker

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def wait_for(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_worker_ends_when_its_pipe_closes():
    code = "import sys, time; from recbole_attn.bench import worker; worker.stop_when_closed(sys.stdin.fileno()); " \
           "print('ready', flush=True); time.sleep(300)"
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert process.stdout.readline() == b"ready\n"
        process.stdin.write(b"ignored")
        process.stdin.flush()
        time.sleep(0.5)
        assert process.poll() is None  # data on the pipe is not an end
        process.stdin.close()
        assert process.wait(timeout=60) == -signal.SIGTERM
    finally:
        process.kill()
        process.wait()


def test_a_worker_that_finishes_exits_cleanly_while_its_pipe_is_open():
    """The watcher must not hold a lock the interpreter needs at exit (it
    aborted every finished worker with SIGABRT and a fatal error)."""
    code = "import sys; from recbole_attn.bench import worker; worker.stop_when_closed(sys.stdin.fileno())"
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        err = process.stderr.read()
        assert process.wait(timeout=60) == 0 and err == b""
    finally:
        process.stdin.close()
        process.kill()
        process.wait()


def test_unknown_worker_flags_are_refused():
    with pytest.raises(SystemExit, match="unknown worker flags"):
        worker.main(["spec.json", "row.json", "--bogus"])


def test_a_killed_benchmark_leaves_no_worker_training(tmp_path):
    """The benchmark is SIGKILLed while its worker trains (here: sleeps): the
    worker must stop by itself, not train on with nobody to read its row."""
    started, stopped = tmp_path / "started", tmp_path / "stopped"
    fake_worker = textwrap.dedent(f"""
        import os, signal, sys, time
        from pathlib import Path
        from recbole_attn.bench import worker
        def on_term(*_):
            Path({str(stopped)!r}).write_text("SIGTERM")
            os._exit(0)
        signal.signal(signal.SIGTERM, on_term)
        worker.run_row = lambda spec: time.sleep(300)
        Path({str(started)!r}).write_text(str(os.getpid()))
        worker.main(sys.argv[1:])
    """)
    benchmark = textwrap.dedent(f"""
        import sys
        from recbole_attn.bench import suite
        real = suite.worker_command
        suite.worker_command = lambda spec, row: [sys.executable, "-c", {fake_worker!r}] + real(spec, row)[3:]
        suite.run_isolated({{"label": "AttnSeq", "model": "AttnSeq", "seed": 1}})
    """)
    parent = subprocess.Popen([sys.executable, "-c", benchmark])
    try:
        assert wait_for(started, 120), "the worker never started"
        parent.kill()
        parent.wait()
        assert wait_for(stopped, 60), "the worker trained on after the benchmark was killed"
    finally:
        parent.kill()
        parent.wait()
        if started.exists() and not stopped.exists():
            os.kill(int(started.read_text()), signal.SIGKILL)
