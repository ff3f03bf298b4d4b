"""Every console session of the Linux-based rescue disc from one Python (``python3 -m rescuekit.consoles ttyS0 tty1``).

busybox init starts this once.  It imports what a session needs (``rescuekit.boot`` and the menu) a single time,
then forks one session per console: the child becomes a session leader with that terminal as its controlling tty
and runs ``rescuekit.boot`` there, then a shell.  When a console's session ends (the shell exited), it is forked
again, as busybox init's ``respawn`` did when each console had its own Python.  Why: under emulation (and on slow
PCs) the interpreter start and the imports are most of the time from the kernel to the menu, and two Pythons paid
them twice on one CPU; the forked children share those pages copy-on-write.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

RESPAWN_PAUSE = 2.0  # a session that ends sooner than this is started again only after this pause (no tight loop)
SHELL = "/bin/sh"


def tty_path(console: str) -> str:
    return console if console.startswith("/") else f"/dev/{console}"


def is_serial(console: str) -> bool:
    return os.path.basename(console).startswith("ttyS")


def attach(console: str, *, reset: bool = False) -> None:
    """Make ``console`` this (forked) process's controlling terminal and its stdin/stdout/stderr; ``reset``: put
    the line back to sane settings first (a shell or a program before may have left it raw)."""
    import fcntl
    import termios

    if reset:
        import subprocess

        speed = ["115200"] if is_serial(console) else []
        subprocess.run(["stty", "-F", tty_path(console), *speed, "sane"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.setsid()
    fd = os.open(tty_path(console), os.O_RDWR)
    try:
        fcntl.ioctl(fd, termios.TIOCSCTTY, 1)  # 1: take it even if another session had it (we are root)
    except OSError:
        pass  # a terminal that cannot be a controlling tty still works for the menu (no job control)
    for n in (0, 1, 2):
        os.dup2(fd, n)
    if fd > 2:
        os.close(fd)
    # new text streams on the new fds: the ones Python made at start were set up for init's console
    sys.stdin = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)
    os.environ["TERM"] = "vt100" if is_serial(console) else os.environ.get("TERM", "linux")


def session(console: str) -> None:
    """What runs on a console: the boot session (unattended run or menu), then a shell. Never returns."""
    from rescuekit import boot

    try:
        boot.main(["--console", os.path.basename(console)])
    except Exception as exc:  # noqa: BLE001 - whatever happened, the person at the machine gets a shell
        print(f"rescuekit: the session failed: {type(exc).__name__}: {exc}", flush=True)
    print("rescuekit: the menu ended; a shell follows (exit to return to the menu)", flush=True)
    os.execv(SHELL, [SHELL])


def spawn(console: str, run: Callable[[str], None], *, reset: bool = False) -> int:
    """Fork a session on ``console``; the parent gets its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    rc = 1
    try:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        attach(console, reset=reset)
        run(console)
        rc = 0
    except BaseException as exc:  # noqa: BLE001 - a child must never return into the supervisor's loop
        try:
            print(f"rescuekit: session on {console}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001
            pass
    finally:
        os._exit(rc)


def supervise(consoles: list[str], run: Callable[[str], None] = session, *, rounds: int | None = None,
              pause: float = RESPAWN_PAUSE) -> None:
    """Start a session on every console and start it again when it ends; ``rounds`` (tests) stops after that many
    sessions have ended."""
    children: dict[int, tuple[str, float]] = {}
    for c in consoles:
        children[spawn(c, run)] = (c, time.monotonic())
    ended = 0
    while children:
        try:
            pid, _ = os.wait()
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        entry = children.pop(pid, None)
        if entry is None:
            continue  # a grandchild reparented to us (we are no subreaper; kept for safety)
        console, started = entry
        ended += 1
        if rounds is not None and ended >= rounds:
            continue
        if time.monotonic() - started < pause:
            time.sleep(pause)
        children[spawn(console, run, reset=True)] = (console, time.monotonic())


def main(argv: list[str] | None = None) -> int:
    consoles = sys.argv[1:] if argv is None else argv
    if not consoles or any(c.startswith("-") for c in consoles):
        print("usage: python3 -m rescuekit.consoles CONSOLE... (e.g. ttyS0 tty1)", file=sys.stderr)
        return 2
    # a hangup of init's console must not end the supervisor; the sessions restore the default
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # paid once here instead of in every session: the ready line's imports and the menu's
    import rescuekit.boot  # noqa: F401
    import rescuekit.menu_app  # noqa: F401

    supervise(consoles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
