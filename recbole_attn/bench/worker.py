"""The fresh process each benchmark row runs in, so its peak memory is its
own: ``python -m recbole_attn.bench.worker SPEC.json ROW.json [--stop-with-parent]``.

``--stop-with-parent``: stdin is a pipe whose other end only the benchmark
holds; when it closes, the benchmark has ended (killed by any signal, even
SIGKILL), and the worker ends too rather than train on for nobody. Its last
finished epoch stays saved for ``--resume=auto``."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading

from recbole_attn.bench.measure import run_row
from recbole_attn.results import write_json_atomic

STOP_WITH_PARENT = "--stop-with-parent"


def stop_when_closed(fd: int) -> threading.Thread:
    """End this process with SIGTERM (as if killed) once the pipe ``fd``
    reaches end of file. It reads the raw descriptor: a thread blocked in
    ``sys.stdin.buffer.read`` holds the buffer's lock, and the interpreter
    aborts (SIGABRT) when it cannot take that lock at exit."""
    def watch() -> None:
        while os.read(fd, 4096):  # the benchmark never writes; anything sent is ignored
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=watch, name="stop-with-parent", daemon=True)
    watcher.start()
    return watcher


def main(argv: list[str]) -> int:
    spec_file, row_file, *flags = argv
    if flags == [STOP_WITH_PARENT]:
        stop_when_closed(sys.stdin.fileno())
    elif flags:
        raise SystemExit(f"unknown worker flags {flags}; the one flag is {STOP_WITH_PARENT}")
    with open(spec_file) as source:
        spec = json.load(source)
    write_json_atomic(row_file, run_row(spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
