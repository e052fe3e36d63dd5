"""Remote end of ``tools/launch.py --launcher ssh``: the job's process dies with its ssh session.

Usage (written by the launcher into the ssh command line, not typed by users)::

    cd DIR && exec PYTHON tools/ssh_guard.py -- COMMAND ...

A command that ssh runs without a terminal is not signalled when the connection goes: sshd
only closes its pipes, so a worker or server would live on, holding its port, until it next
writes a line (or forever, as a silent ps-lite server does). This guard runs COMMAND in a
session of its own and holds the ssh channel's stdin, which the launcher keeps open and never
writes to. It ends COMMAND's whole process group (SIGTERM, then SIGKILL after
``TERM_GRACE_S``) as soon as

- stdin reaches end-of-file: the ssh client or the launcher died (even by SIGKILL), or the
  connection broke;
- the guard gets SIGTERM, SIGINT or SIGHUP;
- COMMAND ends: whatever it started is stopped with it.

The guard exits with COMMAND's status, 128 + N when COMMAND was killed by signal N (as a
shell reports it), so the launcher's watchdog reads ``exited with status 137 (128 + SIGKILL:
...)`` through ssh. It prints one line at start (host, folder, pid) so the launcher's terminal
shows where each process runs.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable

TERM_GRACE_S = 3.0  # seconds between SIGTERM and SIGKILL to the command's process group


def stop_group(pgid: int, grace: float = TERM_GRACE_S,
               reap: Callable[[], object] | None = None) -> None:
    """SIGTERM the process group ``pgid``, SIGKILL it when it outlives ``grace`` seconds.

    ``reap`` (e.g. ``child.poll``) collects our own child once it died: a zombie still
    counts as a member of its group.
    """
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def shell_status(returncode: int) -> int:
    """Exit status as a shell reports it: 128 + N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str]) -> int:
    """Run ``argv`` (after an optional ``--``) under the guard; returns its shell status."""
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[0] + "\n\nusage: python tools/ssh_guard.py -- COMMAND [ARG ...]")
        return 0
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("error: ssh_guard: no command given", file=sys.stderr)
        return 2
    node = os.environ.get("DMLC_NODE_HOST") or socket.gethostname()
    role = os.environ.get("DMLC_ROLE", "process")
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as err:
        print(f"error: ssh_guard on {node}: cannot start {argv[0]!r}: {err}", file=sys.stderr)
        return 127
    print(f"ssh_guard: {role} on {node} in {os.getcwd()}, pid {child.pid}", flush=True)
    stopping = threading.Event()

    def stop(reason: str) -> None:
        if not stopping.is_set():
            stopping.set()
            try:  # the session may be gone already: a broken pipe must not skip the stop
                print(f"ssh_guard: {reason}: stopping {role} pid {child.pid} on {node}",
                      file=sys.stderr, flush=True)
            except OSError:
                pass
            stop_group(child.pid, reap=child.poll)

    def watch_stdin() -> None:
        try:
            while os.read(0, 4096):
                pass                      # the launcher never writes; end-of-file is the signal
        except OSError:
            pass
        if child.poll() is None:
            stop("the ssh session closed")

    def on_signal(signum: int, _frame: object) -> None:
        # stop from another thread: this one must return to child.wait() to reap the child
        # (a zombie still counts as a member of its process group)
        threading.Thread(target=stop, args=(f"received {signal.Signals(signum).name}",),
                         daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    threading.Thread(target=watch_stdin, daemon=True, name="stdin-watch").start()
    returncode = child.wait()
    stop_group(child.pid, grace=1.0)   # anything the command left in its group
    return shell_status(returncode)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
