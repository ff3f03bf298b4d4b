"""What a console session of the Linux-based rescue disc runs (``python3 -m rescuekit.boot --console ttyS0``).

busybox init starts one session on ttyS0 and one on tty1.  Each prints a ready line (the boot tests wait for it).
With an unattended action (config.toml's ``default_action``, or ``rescuekit.action=`` on the kernel command line),
the first session to claim it runs it: a countdown either console can cancel with Enter, the safety refusals,
the capture/restore itself (its output on the console and in /run/rescuekit/rescuekit.log, copied to the
repository's volume afterwards: ``<volume>/rescuekit-logs/``), then ``then``: poweroff, reboot or the menu.
The other session shows the log.
A failed or cancelled run always ends in the menu, so the person at the machine sees why.
"""
from __future__ import annotations

import dataclasses
import os
import select
import sys
import time
from pathlib import Path

from rescuekit.config import ACTIONS, COUNTDOWN_MAX, THEN, Settings, load_settings
from rescuekit.target_rules import is_auto

# Imports are kept to what the ready line and the menu need (argparse, platform, subprocess cost seconds at
# boot under QEMU's TCG): subprocess is imported where a child is started.

READY = "RESCUEKIT LINUX READY"
RUN_DIR = Path("/run/rescuekit")
LOG = RUN_DIR / "rescuekit.log"
CLAIM = RUN_DIR / "unattended.claim"
CANCEL = RUN_DIR / "unattended.cancel"
DONE = RUN_DIR / "unattended.done"
MEDIUM_LABEL_FILE = Path("/etc/rescuekit/medium-label")
MEDIUM_DEVICE_FILE = RUN_DIR / "medium"  # stage 1 of /init writes the device it found the root image on
CMDLINE_KEYS = {"action": "default_action", "repository": "repository", "target": "target", "image": "image",
                "then": "then", "countdown": "countdown"}


def uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def lockdown() -> str:
    try:
        return Path("/sys/kernel/security/lockdown").read_text().strip()
    except OSError:
        return "unknown"


def boot_image(cmdline: str) -> str:
    """The kernel file the boot loader started (GRUB and syslinux pass BOOT_IMAGE=), or "?"."""
    return next((w.partition("=")[2] for w in cmdline.split() if w.startswith("BOOT_IMAGE=")), "?")


def cmdline_settings(settings: Settings, cmdline: str) -> tuple[Settings, list[str]]:
    """``rescuekit.KEY=VALUE`` words of the kernel command line over the baked-in settings; bad ones are ignored
    with a message (a typo at the GRUB prompt must not start an unattended run it did not mean)."""
    changes: dict[str, object] = {}
    problems: list[str] = []
    for word in cmdline.split():
        if not word.startswith("rescuekit."):
            continue
        key, _, value = word[len("rescuekit."):].partition("=")
        field = CMDLINE_KEYS.get(key)
        if field is None:
            problems.append(f"unknown kernel parameter rescuekit.{key} ignored")
            continue
        if field == "countdown":
            if not value.isdigit() or int(value) > COUNTDOWN_MAX:
                problems.append(f"rescuekit.countdown={value} ignored (0-{COUNTDOWN_MAX})")
                continue
            changes[field] = int(value)
        elif field == "default_action" and value not in ACTIONS or field == "then" and value not in THEN:
            problems.append(f"rescuekit.{key}={value} ignored (not one of "
                            f"{', '.join(ACTIONS if field == 'default_action' else THEN)})")
        else:
            changes[field] = value
    return dataclasses.replace(settings, **changes), problems


class Log:
    """Lines to this console and to /run/rescuekit/rescuekit.log (what the other console follows)."""

    def __init__(self, path: Path = LOG) -> None:
        self.path = path

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def boot_medium_disks(label: str | None) -> set[str]:
    """Disks holding this boot medium: an ISO 9660 volume with our label at sector 16 (a CD, a USB stick
    written with dd, a virtual drive), and the disk of the device /init found the root file system image on
    (also a FAT stick written by ``rescuekit usb``).  They are never a repository's disk or a restore target."""
    out: set[str] = set()
    try:
        dev = MEDIUM_DEVICE_FILE.read_text().strip()
    except OSError:
        dev = ""
    if dev.startswith("/dev/"):
        from rescuekit.imaging.safety import _disk_of

        out.add(_disk_of(dev))
    if not label:
        return out
    for dev in Path("/sys/block").iterdir():
        try:
            with open(f"/dev/{dev.name}", "rb") as f:
                f.seek(16 * 2048)
                pvd = f.read(2048)
        except OSError:
            continue
        if pvd[1:6] == b"CD001" and pvd[40:72].decode("ascii", "replace").strip() == label:
            out.add(f"/dev/{dev.name}")
    return out


def _wait_for(path: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
    return True


def refusal(action: str, target: str, repo_disk: str | None, medium: set[str]) -> str | None:
    """Why the unattended ``action`` must not touch ``target`` (None when it may)."""
    from rescuekit.imaging.safety import _disk_of

    if not _wait_for(target, 10):
        return f"target {target} does not exist"
    disk = _disk_of(target)
    if disk in medium:
        return f"target {target} is the boot medium"
    if repo_disk is not None and disk == repo_disk:
        return f"target {target} is the disk that holds the repository"
    return None


def countdown(seconds: int, text: str, log: Log) -> bool:
    """Count down; False when Enter was pressed here or on the other console (the cancel file)."""
    for left in range(seconds, 0, -1):
        log(f"{text} in {left} s (press Enter to cancel)")
        ready = _stdin_ready(1.0)
        if ready or CANCEL.exists():
            if ready:
                sys.stdin.readline()
                CANCEL.touch()
            log("rescuekit: unattended run cancelled")
            return False
    return True


def _stdin_ready(timeout: float) -> bool:
    try:
        r, _, _ = select.select([sys.stdin], [], [], timeout)
        return bool(r)
    except (OSError, ValueError):
        time.sleep(timeout)
        return False


def run_logged(args: list[str], log: Log) -> int:
    """Run ``rescuekit ARGS`` as a child; each output line goes to the console and the log."""
    import subprocess

    log(f"> rescuekit {' '.join(args)}")
    proc = subprocess.Popen([sys.executable, "-I", "-X", "utf8", "-B", "-m", "rescuekit", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        log(line.rstrip("\n"))
    return proc.wait()


def unattended(s: Settings, log: Log) -> bool:
    """Run the unattended capture/restore; True when it succeeded (then ``s.then`` happens)."""
    from rescuekit import volumes
    from rescuekit.errors import RescueError

    action = s.default_action
    if not s.repository or not s.target:
        log(f"rescuekit: unattended {action} refused: it needs a repository and a target")
        return False
    medium = boot_medium_disks(_medium_label())
    try:
        # a volume on the boot medium is never the repository (volumes.choose), for either action
        repo, vol, point = volumes.resolve(s.repository, writable=action == "capture", medium=medium)
    except RescueError as exc:
        log(f"rescuekit: unattended {action} refused: {exc}")
        return False
    try:
        if vol is not None:
            log(f"rescuekit: repository volume {vol.label} is {vol.device} ({vol.fs}), mounted "
                f"{'read-write' if action == 'capture' else 'read-only'} on {point}")
        image = s.image or ("latest" if action == "restore" else "image")
        target = s.target
        if action == "restore" and is_auto(target):
            try:
                # the disk was chosen for this image: restore exactly it (by id), not "latest" resolved again
                target, doc = auto_target(target, repo, image, medium)
            except RescueError as exc:
                log(f"rescuekit: unattended {action} refused: {exc}")
                return False
            image = doc["id"]
            log(f"rescuekit: --target {s.target} is {target} (for image {doc.get('name', '?')!r} {image[:12]})")
        why = refusal(action, target, vol.disk if vol else None, medium)
        if why:
            log(f"rescuekit: unattended {action} refused: {why}")
            return False
        if action == "capture":
            text, args = (f"rescuekit: unattended capture of {target} into {repo} as {image!r}",
                          ["capture", target, repo, "--name", image])
        else:
            text, args = (f"rescuekit: unattended restore of image {image!r} from {repo} onto {target} "
                          f"(ALL DATA ON {target} WILL BE LOST)", ["restore", repo, target, "--image", image, "--yes"])
        if s.countdown and not countdown(s.countdown, text, log):
            return False
        rc = run_logged(args, log)
        log(f"rescuekit: unattended {action} {'finished' if rc == 0 else f'failed (exit code {rc})'}")
        if vol is not None and point is not None:
            point = _copy_log(vol, point, mounted_rw=action == "capture", log=log)
        return rc == 0
    finally:
        if point is not None:
            volumes.unmount(point)


def auto_target(spec: str, repo: str, image: str, medium: set[str]) -> tuple[str, dict]:
    """(disk, image manifest) for ``--target auto[:RULES]``: the one internal disk that holds the image and matches the
    rules, never the boot medium or the repository's disk (the rules WinPE's menu applies: finders.auto_target)."""
    from rescuekit import finders
    from rescuekit.repo.repository import Repository

    doc = Repository.open(repo).find_image(image)
    rows = finders.disk_rows(finders.describe_disks(), repo=repo, image=doc)
    return finders.auto_target(spec, rows, doc, exclude=medium).path, doc


def _medium_label() -> str | None:
    try:
        return MEDIUM_LABEL_FILE.read_text().strip() or None
    except OSError:
        return None


def _copy_log(vol, point: Path, *, mounted_rw: bool, log: Log) -> Path:
    """Copy the log to ``<volume>/rescuekit-logs/``; a restore mounted the volume read-only, so it is mounted
    read-write just for this. Never fails the run: a problem is one warning line (the log stays in /run).
    Returns where the volume is mounted now (to unmount)."""
    from rescuekit import volumes
    from rescuekit.errors import RescueError

    name = time.strftime("boot-%Y%m%d-%H%M%S.log", time.gmtime())
    try:
        if not mounted_rw:
            point = volumes.remount_writable(vol, point)
            log(f"rescuekit: {point} mounted read-write for the log")
        why = volumes.copy_log(LOG, point, name)
    except (RescueError, OSError) as exc:
        why = f"cannot mount {vol.device} read-write for the log: {exc}"
    if why:
        log(f"rescuekit: warning: {why}; the log stays in {LOG}")
    else:
        log(f"rescuekit: log copied to {point / volumes.LOG_FOLDER / name}")
    return point


def follow(log: Log) -> None:
    """The other console: show the log until the unattended run is done; Enter cancels a countdown."""
    pos = 0

    def show() -> None:
        nonlocal pos
        try:
            with open(LOG, encoding="utf-8", errors="replace") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
        except FileNotFoundError:
            return
        if chunk:
            sys.stdout.write(chunk)
            sys.stdout.flush()

    while not DONE.exists():
        show()
        if _stdin_ready(0.5):
            sys.stdin.readline()
            CANCEL.touch()
    show()  # the lines written between the last look and DONE (the result line among them)


def finish(then: str, log: Log) -> None:
    import subprocess

    os.sync()
    if then in ("poweroff", "reboot"):
        log(f"rescuekit: {then}")
        time.sleep(1)  # the other console's follower shows the last lines first
        subprocess.run([then], check=False)
        time.sleep(60)  # init is taking the system down


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--console"] and len(argv) == 2:
        console = argv[1]
    elif not argv:
        console = "console"
    else:
        print("usage: python3 -m rescuekit.boot [--console NAME]", file=sys.stderr)
        return 2
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    log = Log()
    try:
        cmdline = Path("/proc/cmdline").read_text()
    except OSError:
        cmdline = ""
    print(f"{READY} on {console}: kernel {os.uname().release} from {boot_image(cmdline)}, "
          f"python {sys.version.split()[0]}, lockdown {lockdown()}, uptime {uptime():.1f} s", flush=True)
    from rescuekit.errors import RescueError

    try:
        settings = load_settings()
    except RescueError as exc:
        print(f"rescuekit: error: {exc}", flush=True)
        settings = Settings()
    settings, problems = cmdline_settings(settings, cmdline)
    for p in problems:
        print(f"rescuekit: {p}", flush=True)
    if settings.default_action in ("capture", "restore") and not DONE.exists():
        try:
            fd = os.open(CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            mine = True
        except FileExistsError:
            mine = False
        if mine:
            try:
                ok = unattended(settings, log)
            except Exception as exc:  # noqa: BLE001 - the menu must come up whatever happened
                log(f"rescuekit: unattended {settings.default_action} failed: {type(exc).__name__}: {exc}")
                ok = False
            DONE.touch()
            if ok:
                finish(settings.then, log)
            else:
                log("rescuekit: showing the menu")
        else:
            follow(log)
    return _menu(settings)


def _menu(settings) -> int:
    """The rescue menu (``rescuekit menu``'s app) on this console; unattended work was done above."""
    from rescuekit.menu_app import App
    from rescuekit.volumes import LABEL_PATH

    repo = settings.repository if settings.repository and not LABEL_PATH.match(settings.repository) else None
    return App(settings, [], scan=True, repository=repo).start(action="menu", target=None, image=None,
                                                                then="menu", countdown=0)


if __name__ == "__main__":
    sys.exit(main())
