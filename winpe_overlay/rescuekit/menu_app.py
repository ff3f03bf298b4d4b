"""The menu's screens and flows over the runtime's own functions (imaging.restore/capture, repo.check,
disk.inventory, imaging.safety): nothing here re-implements a check; the pickers only show early what those
functions refuse anyway. Every step goes to the session log (``sessionlog``)."""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

from rescuekit import __version__, finders, target_rules, tools, volumes
from rescuekit.config import Settings
from rescuekit.errors import RescueError
from rescuekit.imaging.units import human
from rescuekit.sessionlog import SessionLog, hostname, machine_line
from rescuekit.tui.screen import UI, Item

NO_DISK_HINT = [  # lines under 80 columns (WinPE's console)
    "No internal disk can be seen. Most often: an NVMe SSD behind Intel RST / VMD",
    "(firmware SATA mode \"RAID\" or \"Intel RST\"). Choose Load a driver and load the",
    "Intel RST VMD driver (iaStorVD.inf) from a USB stick, or set SATA mode to AHCI.",
]
CONFIRM_WORD = "ERASE"

# Entries whose command lands in another module: shown as unavailable until that module is importable. A module
# that defines ``menu_entry(app)`` runs in the menu; otherwise the menu shows its verb's help.
PLUGINS = [
    ("Restore a Windows system image backup", "rescuekit.winbackup", "winbackup"),
    ("Browse files in an image", "rescuekit.files", "files"),
]


def _one_line(exc: BaseException) -> str:
    from rescuekit.cli import _one_line as one

    return one(exc)


def module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class App:
    def __init__(self, settings: Settings, paths: list[str], *, scan: bool = True, log_dir: str | None = None,
                 repository: str | None = None, ui: UI | None = None) -> None:
        self.settings = settings
        self.folders = [p for p in paths if os.path.isdir(p)]
        self.files = [p for p in paths if not os.path.isdir(p)]
        self.repository = repository or settings.repository
        self.label_root: Path | None = None  # the drive of a LABEL:\folder repository (its rescuekit-logs)
        if self.repository and not volumes.parse(self.repository):
            self.folders.insert(0, self.repository)  # a label is found when it is used (unattended_restore)
        self.scan = scan
        self.ui = ui or UI(title=f"rescuekit {__version__}")
        self.log = SessionLog(log_dir)
        self.used_repos: list[str] = []

    # -- entry ---------------------------------------------------------------------------------------------
    def start(self, *, action: str, target: str | None, image: str | None, then: str, countdown: int) -> int:
        self.log.write(f"rescuekit {__version__} menu on {hostname()} ({sys.platform}); action {action}")
        try:
            if action == "restore" and target:
                rc = self.unattended_restore(target, image or "latest", countdown)
                if rc == 0 and then in ("reboot", "poweroff"):
                    self.log.write(f"then: {then}")
                    self._finish()
                    return tools.run(tools.power_command(then))[0]
                if rc:
                    return rc
            return self.main_screen()
        except KeyboardInterrupt:
            self.log.write("interrupted")
            return 130
        finally:
            self._finish()

    def _finish(self) -> None:
        for repo in dict.fromkeys(self.used_repos):
            self.log.copy_to(Path(repo) / "logs")
        if self.label_root is not None and self.log.path is not None:
            why = volumes.copy_log(self.log.path, self.label_root)
            if why:
                print(f"rescuekit: warning: {why}", file=sys.stderr)

    # -- main screen ------------------------------------------------------------------------------------
    def entries(self) -> list[tuple[Item, object]]:
        bcd = tools.available(["bcdboot"])
        drv = tools.available(["drvload"])
        net = tools.available(["net"]) and sys.platform == "win32"
        out: list[tuple[Item, object]] = [
            (Item("Restore an image", "write an image from a repository onto a disk"), self.restore_flow),
            (Item("Capture this PC", "store a disk as a new image in a repository"), self.capture_flow),
            (Item("Verify images", "re-read a repository and check every chunk"), self.verify_flow),
        ]
        for label, mod, verb in PLUGINS:
            ok = module_available(mod)
            out.append((Item(label, f"rescuekit {verb}", enabled=ok, why="not in this version"),
                        (lambda m=mod, v=verb: self.plugin(m, v))))
        out += [
            (Item("Repair Windows boot", "bcdboot for a restored Windows", enabled=bcd,
                  why="bcdboot is not on this system (it is part of WinPE / Windows)"), self.repair_boot),
            (Item("Load a driver", "drvload a .inf (storage, network), then see the disks again", enabled=drv,
                  why="drvload exists only on WinPE"), self.load_driver),
            (Item("Connect a network share", "net use \\\\server\\share with a user and password", enabled=net,
                  why="net use exists only on Windows / WinPE"), self.network_share),
            (Item("Command prompt" if sys.platform == "win32" else "Shell", "exit returns to this menu"),
             self.shell),
            (Item("Reboot"), lambda: self.power("reboot")),
            (Item("Shut down"), lambda: self.power("shutdown")),
        ]
        return out

    def main_screen(self) -> int:
        while True:
            entries = self.entries()
            i = self.ui.pick("Main menu", [e for e, _ in entries],
                             ["Choose what to do. Nothing is written without a typed confirmation."],
                             back="exit to the prompt")
            if i is None:
                self.log.write("exit to the prompt")
                return 0
            self.log.write(f"main: {entries[i][0].label}")
            entries[i][1]()

    def fail(self, heading: str, exc: BaseException) -> None:
        msg = _one_line(exc)
        self.log.write(f"error: {msg}")
        self.ui.message(heading, [f"rescuekit: error: {msg}"])

    # -- pickers --------------------------------------------------------------------------------------------
    def pick_repo(self, heading: str, *, allow_new: bool = False) -> str | None:
        while True:
            repos = finders.find_repositories(self.folders, scan=self.scan)
            items = [Item(*r.row(), enabled=r.error is None, why="unreadable", value=r.path) for r in repos]
            if allow_new:
                items.append(Item("A new repository in a folder ...", "type a folder on a disk you are not capturing",
                                  value=None))
            if not items:
                self.ui.message(heading, ["No rescuekit repository was found on any attached volume.",
                                          "Attach the disk or USB stick holding it, or connect a network share."])
                return None
            lines = [] if repos else ["No repository found on the attached volumes."]
            i = self.ui.pick(heading, items, lines)
            if i is None:
                return None
            path = items[i].value
            if path is None:
                path = self.ui.ask(heading, ["The folder is created; it must be empty or new."], "Folder")
                if not path:
                    continue
            self.log.write(f"repository: {path}")
            self.used_repos.append(str(path))
            return str(path)

    def pick_image(self, repo: str, heading: str) -> dict | None:
        from rescuekit.repo.repository import Repository

        try:
            docs, _bad = Repository.open(repo).scan_images()  # unreadable manifests: `images` names them
        except (RescueError, OSError) as exc:
            self.fail(heading, exc)
            return None
        if not docs:
            self.ui.message(heading, [f"{repo} has no images yet."])
            return None
        rows = finders.image_rows(docs)
        items = [Item(*finders.image_text(seq, d), value=d) for seq, d in rows]
        i = self.ui.pick(heading, items, [f"Repository {repo}"])
        if i is None:
            return None
        doc = items[i].value
        self.log.write(f"image: {doc['id']} ({doc.get('name')})")
        return doc

    def pick_disk(self, heading: str, repo: str, image: dict | None, *, for_capture: bool = False) -> str | None:
        while True:
            rows = finders.disk_rows(finders.describe_disks(self.files, machine=self.scan), repo=repo, image=image,
                                     for_capture=for_capture)
            items = [Item(*r.text(), enabled=not r.why, why=r.why, value=r.path) for r in rows]
            lines = [f"Repository {repo}" + (f"; image {image.get('name')} needs {human(image['source']['size'])}"
                                             if image else "")]
            if not any(it.enabled for it in items):
                lines += [""] + NO_DISK_HINT
            if not items:
                self.ui.message(heading, lines)
                return None
            i = self.ui.pick(heading, items, lines)
            if i is None:
                return None
            self.log.write(f"disk: {items[i].value} ({items[i].label})")
            return str(items[i].value)

    # -- flows ------------------------------------------------------------------------------------------
    def restore_flow(self) -> None:
        from rescuekit.imaging.restore import restore

        heading = "Restore an image"
        repo = self.pick_repo(f"{heading}: choose the repository")
        if repo is None:
            return
        doc = self.pick_image(repo, f"{heading}: choose the image")
        if doc is None:
            return
        target = self.pick_disk(f"{heading}: choose the disk to overwrite", repo, doc)
        if target is None:
            return

        def confirm(text: str) -> bool:
            ok = self.ui.confirm_word(f"{heading}: this will be overwritten", text.splitlines(), CONFIRM_WORD)
            self.log.write(f"confirmation: {'given' if ok else 'refused'}")
            if ok:
                self.ui.message(f"{heading}: writing {target}", ["Do not switch off or unplug anything.",
                                                                 "Progress (rate, time left) follows."], wait=False)
            return ok

        try:
            res = restore(repo, target, image=doc["id"], verify=True, confirm=confirm, progress=True)
        except (RescueError, OSError) as exc:
            self.fail(f"{heading}: not done", exc)
            return
        self.log.write(f"restored {res['image']} onto {target}: {res['bytes_written']} bytes, verified")
        self.ui.message(f"{heading}: done", [
            f"Image {res['name']} ({res['image'][:12]}) was written onto {target}:",
            f"{human(res['bytes_written'])} in {res['seconds']:.0f} s, and read back and verified.", "",
            "Next: remove the rescue USB stick or disc and choose Reboot.",
            "If Windows does not start, boot this disc again and choose Repair Windows boot."])

    def capture_flow(self) -> None:
        from rescuekit.imaging.capture import capture

        heading = "Capture this PC"
        repo = self.pick_repo(f"{heading}: choose where the image goes", allow_new=True)
        if repo is None:
            return
        source = self.pick_disk(f"{heading}: choose the disk to capture", repo, None, for_capture=True)
        if source is None:
            return
        default = f"{hostname()}-{time.strftime('%Y%m%d')}"
        name = self.ui.ask(heading, [f"Capturing {source} into {repo}."], "Image name", default)
        if name is None:
            return
        self.ui.message(f"{heading}: reading {source}", ["Only what the file systems use is read.",
                                                         "Progress (rate, time left) follows."], wait=False)
        try:
            doc = capture(source, repo, name=name, progress=True)
        except (RescueError, OSError) as exc:
            self.fail(f"{heading}: not done", exc)
            return
        t = doc["totals"]
        self.log.write(f"captured {source} as {doc['id']} ({name}): {t['new_stored_bytes']} new bytes stored")
        self.ui.message(f"{heading}: done", [
            f"Image {name} ({doc['id'][:12]}) of {source} is in {repo}:",
            f"disk {human(t['disk_bytes'])}, read {human(t['stored_bytes'])}, new data stored "
            f"{human(t['new_stored_bytes'])} in {t['seconds']:.0f} s.", "",
            "Next: Verify images checks it; the image can be restored onto this or a larger disk."])

    def verify_flow(self) -> None:
        from rescuekit.repo.check import check_repository
        from rescuekit.repo.repository import Repository

        heading = "Verify images"
        repo = self.pick_repo(f"{heading}: choose the repository")
        if repo is None:
            return
        self.ui.message(f"{heading}: reading {repo}", ["Every pack is read and every chunk re-hashed."], wait=False)
        try:
            r = Repository.open(repo)
            with r.lock(exclusive=False, command="verify"):
                rep = check_repository(r, read_data=True, progress=True)
        except (RescueError, OSError) as exc:
            self.fail(f"{heading}: not done", exc)
            return
        lines = [f"{'OK' if rep['ok'] else 'FAILED'}: {rep['images']} image(s), {rep['packs']} pack(s), "
                 f"{rep['chunks']} chunk(s), {human(rep['bytes_read'])} read"]
        lines += [f"problem: {p}" for p in rep["problems"][:8]]
        lines += [f"damaged: image {d['image'][:12]} ({d['name']})" for d in rep["damaged"][:8]]
        self.log.write(lines[0])
        self.ui.message(f"{heading}: {'OK' if rep['ok'] else 'FAILED'}", lines)

    def plugin(self, module: str, verb: str) -> None:
        mod = importlib.import_module(module)
        entry = getattr(mod, "menu_entry", None)
        if entry is not None:
            entry(self)
            return
        self.ui.message(f"rescuekit {verb}", [f"Run `rescuekit {verb} --help` from the command prompt."])

    def repair_boot(self) -> None:
        from rescuekit.disk import inventory

        heading = "Repair Windows boot"
        wins = tools.windows_dirs(finders.volume_roots())
        if not wins:
            self.ui.message(heading, ["No volume with \\Windows\\System32\\winload.* was found.",
                                      "Restore an image first, or load the storage driver (Load a driver)."])
            return
        i = self.ui.pick(f"{heading}: choose the Windows installation", [Item(w) for w in wins])
        if i is None:
            return
        win = wins[i]
        try:
            disk = inventory.disk_holding(win)
            desc = next(d for d in finders.describe_disks() if d["path"] == disk)
        except (StopIteration, RescueError, OSError, NotImplementedError):
            self.ui.message(heading, [f"Cannot tell which disk holds {win}."])
            return
        sp = tools.system_partition(desc)
        if sp is None:
            self.ui.message(heading, [f"{disk} has no EFI system partition (GPT) or active partition (MBR)."])
            return
        letter = next(c for c in "SRQPONMLKJ" if not os.path.exists(f"{c}:\\"))
        script = tools.diskpart_assign_script(int(disk.rsplit("PhysicalDrive", 1)[-1]), sp[0], letter)
        cmd = tools.bcdboot_command(win, letter, sp[1])
        if not self.ui.confirm_word(heading, [f"Boot files for {win} are written to partition {sp[0]} of {disk} "
                                              f"({sp[1]}):", "  diskpart: " + script.replace("\n", "; "),
                                              "  " + " ".join(cmd)], "REPAIR"):
            return
        rc, out = tools.run(["diskpart"], input=script)
        self.log.write(f"diskpart -> {rc}")
        if rc == 0:
            rc, out = tools.run(cmd)
            self.log.write(f"{' '.join(cmd)} -> {rc}")
        self.ui.message(f"{heading}: {'done' if rc == 0 else 'failed'}", [*out.splitlines()[-10:], "",
                        "Next: remove the rescue medium and reboot." if rc == 0 else "See the output above."])

    def load_driver(self) -> None:
        heading = "Load a driver"
        infs = tools.find_infs(finders.volume_roots())
        if not infs:
            self.ui.message(heading, ["No .inf file was found on the attached volumes.",
                                      "Copy the driver (unpacked: .inf, .sys, .cat) to a USB stick, attach it,",
                                      "and choose this again."])
            return
        i = self.ui.pick(f"{heading}: choose the .inf", [Item(p) for p in infs],
                         ["Storage: Intel RST/VMD is iaStorVD.inf (or iaStorAC.inf)."])
        if i is None:
            return
        rc, out = tools.run(tools.drvload_command(infs[i]))
        self.log.write(f"drvload {infs[i]} -> {rc}")
        self.ui.message(f"{heading}: {'loaded' if rc == 0 else 'failed'}", [*out.splitlines()[-8:], "",
                        "The disk lists are read again on the next screen that shows disks."])

    def network_share(self) -> None:
        heading = "Connect a network share"
        share = self.ui.ask(heading, ["The share must be reachable (the network starts at boot if the disc was "
                                      "built with --network)."], "Share (\\\\server\\share)")
        if not share:
            return
        user = self.ui.ask(heading, [share], "User (DOMAIN\\user, empty for none)")
        if user is None:
            return
        password = self.ui.ask(heading, [share], "Password", secret=True) if user else ""
        if password is None:
            return
        letter = next((c for c in "ZYXWVUTSRQPONM" if not os.path.exists(f"{c}:\\")), "Z")
        try:
            cmd = tools.net_use_command(letter, share, user or None, password or None)
        except ValueError as exc:
            self.ui.message(heading, [str(exc)])
            return
        rc, out = tools.run(cmd)
        self.log.write(f"net use {letter}: {share} user={user or '-'} -> {rc}")  # never the password
        if rc == 0:
            self.folders.append(f"{letter}:\\")
        self.ui.message(f"{heading}: {'connected as ' + letter + ':' if rc == 0 else 'failed'}",
                        out.splitlines()[-6:])

    def shell(self) -> None:
        self.ui.message("Command prompt", ["Type exit to come back to this menu."], wait=False)
        tools.run(tools.shell_command(), capture=False)

    def power(self, what: str) -> None:
        i = self.ui.pick(f"{'Reboot' if what == 'reboot' else 'Shut down'}?",
                         [Item("Yes, " + ("reboot" if what == "reboot" else "shut down") + " now")],
                         ["Remove the rescue medium first if the PC should start Windows."])
        if i is None:
            return
        self.log.write(what)
        self._finish()
        rc, out = tools.run(tools.power_command(what))
        if rc:
            self.ui.message(what, [out or f"exit code {rc}"])

    # -- unattended -----------------------------------------------------------------------------------------
    def unattended_restore(self, target: str, image: str, countdown: int) -> int:
        from rescuekit.imaging.restore import restore
        from rescuekit.repo.repository import Repository

        heading = "Unattended restore"
        repo = self.repository
        serial, result, doc = None, "refused", None
        try:
            if not repo:
                raise RescueError("no repository is set (build with --repository)")
            if volumes.parse(repo) and sys.platform == "win32":  # LABEL:\folder: the drive with that label
                repo, _vol, self.label_root = volumes.resolve(repo, writable=False)
                self.log.write(f"repository {self.repository} is {repo}")
                self.repository = repo
            self.used_repos.append(repo)
            doc = Repository.open(repo).find_image(image)
            if target_rules.is_auto(target):
                rows = finders.disk_rows(finders.describe_disks(self.files, machine=self.scan), repo=repo, image=doc)
                row = finders.auto_target(target, rows, doc)
                target, serial = row.path, row.desc.get("serial")
            self.log.write(f"unattended: image {doc['id']} onto {target}")
            if not self.countdown(heading, [f"Image {doc.get('name')} ({doc['id'][:12]}) from {repo}",
                                            f"will be written onto {target} (everything on it is lost)."], countdown):
                result = "cancelled"
                raise RescueError("cancelled at the countdown; nothing was written")
            res = restore(repo, target, image=doc["id"], verify=True, confirm=None, progress=True)
            result = "ok"
            self.ui.message(f"{heading}: done", [f"Image {res['name']} was written onto {target} and verified."],
                            wait=False)
            return 0
        except (RescueError, OSError) as exc:
            if result != "cancelled":
                result = "refused" if ("nothing was written" in str(exc) or "refusing" in str(exc)) else "failed"
            msg = _one_line(exc)
            self.log.write(f"error: {msg}")
            self.ui.message(f"{heading}: not done", [f"rescuekit: error: {msg}"], wait=False)
            print(f"rescuekit: error: {msg}", file=sys.stderr)
            return 1
        finally:
            if repo:
                line = machine_line(hostname(), target, serial, doc, result)
                self.log.write(f"machine log: {line}")
                self.log.append_machine(Path(repo) / "logs", line)

    def countdown(self, heading: str, lines: list[str], seconds: int) -> bool:
        """The countdown screen; False when Esc is pressed (terminal only: a pipe cannot be polled)."""
        for left in range(seconds, 0, -1):
            self.ui.message(heading, [*lines, "", f"Starting in {left} s. Press Esc to cancel."], wait=False)
            if self.ui.keys.tty:
                with self.ui.keys.active():
                    if self.ui.keys.poll(1.0) == "esc":
                        return False
            else:
                time.sleep(1)
        return True
