"""rescuekit.consoles on the host, over pseudo-terminals: one process forks a session per console, each session
has its terminal as controlling tty and stdio, and a session that ends is started again."""
from __future__ import annotations

import os
import select
import time

from rescuekit import consoles


def _sessions(fd: int, count: int, seconds: float = 20) -> list[str]:
    """The first ``count`` complete SESSION lines written to the terminal behind master ``fd``."""
    out = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        lines = [x.strip().decode() for x in out.split(b"\n")[:-1] if x.strip().startswith(b"SESSION")]
        if len(lines) >= count:
            return lines[:count]
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                out += os.read(fd, 4096)
            except OSError:  # EIO while no process has the terminal open (between two sessions)
                time.sleep(0.05)
    raise AssertionError(out)


def _session(console: str) -> None:
    # what the child sees: its own terminal on 0/1/2, as controlling tty, in a session of its own
    same = os.path.samefile(os.ttyname(0), console) and os.path.samefile(os.ttyname(1), console)
    ctty = os.tcgetpgrp(0) == os.getpgrp()
    print(f"SESSION {os.path.basename(console)} same={same} ctty={ctty} leader={os.getsid(0) == os.getpid()} "
          f"term={os.environ.get('TERM')}")


def test_one_process_forks_a_session_per_console_and_starts_it_again(monkeypatch):
    monkeypatch.setenv("TERM", "linux")  # what rk-consoles exports (ttyS* consoles get vt100)
    masters, names = [], []
    for _ in range(2):
        m, s = os.openpty()
        masters.append(m)
        names.append(os.ttyname(s))
        os.close(s)
    pid = os.fork()
    if pid == 0:  # the supervisor, as init would run it (its own session, no controlling tty)
        try:
            os.setsid()
            consoles.supervise(names, _session, rounds=4, pause=0.1)
        finally:
            os._exit(0)
    try:
        for m, n in zip(masters, names):
            want = f"SESSION {os.path.basename(n)} same=True ctty=True leader=True term=linux"
            assert _sessions(m, 2) == [want, want]  # started, ended, started again on the same console
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        for m in masters:
            os.close(m)


def test_usage():
    assert consoles.main([]) == 2
    assert consoles.main(["--help"]) == 2
