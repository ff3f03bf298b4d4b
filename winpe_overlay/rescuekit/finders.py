"""What the menu's pickers list: repositories found on attached volumes, a repository's images, the disks that
can be restored onto or captured, each with what makes it (un)choosable. No UI here (unit-tested directly).

Disks and their flags come from the disk layer (``disk.inventory``) and the refusals from ``imaging.safety``, the
same checks ``restore``/``capture`` make again before writing: the picker only shows them early.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rescuekit.errors import RescueError
from rescuekit.imaging.units import human

# Linux file system types that never hold a repository (kernel interfaces, not volumes).
PSEUDO_FS = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs", "tracefs",
             "mqueue", "hugetlbfs", "pstore", "bpf", "fusectl", "configfs", "autofs", "binfmt_misc", "efivarfs",
             "rpc_pipefs", "nsfs", "ramfs", "squashfs", "overlay", "tmpfs"}
SCAN_DEPTH = 2  # D:\, D:\Images, D:\Images\pc1 (a repository folder is never buried deeper by our tools)


@dataclass
class RepoInfo:
    path: str
    label: str | None
    free: int | None
    images: int
    newest: dict | None
    error: str | None = None

    def row(self) -> tuple[str, str]:
        newest = (f"newest {self.newest.get('name')} {str(self.newest.get('created', ''))[:16].replace('T', ' ')}"
                  if self.newest else "no images yet")
        label = f"[{self.label}] " if self.label else ""
        free = f", {human(self.free)} free" if self.free is not None else ""
        return (f"{label}{self.path}",
                self.error or f"{self.images} image(s), {newest}{free}")


def volume_roots() -> list[str]:
    """Where to look: every drive letter (Windows) or every mounted file system that can hold files (Linux)."""
    if sys.platform == "win32":
        return [f"{c}:\\" for c in "CDEFGHIJKLMNOPQRSTUVWYZX" if os.path.exists(f"{c}:\\")]
    roots = []
    try:
        text = Path("/proc/mounts").read_text()
    except OSError:
        return roots
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[2] in PSEUDO_FS:
            continue
        mp = parts[1].encode().decode("unicode_escape")  # \040 for a space
        if mp == "/" or mp.startswith(("/proc", "/sys", "/dev")):
            continue  # the running system's own tree is not an attached volume
        roots.append(mp)
    return sorted(set(roots))


def is_repository(folder: Path) -> bool:
    return (folder / "config").is_file() and (folder / "images").is_dir()


def _candidates(root: Path, depth: int) -> list[Path]:
    out = []
    try:
        if is_repository(root):
            return [root]
        if depth <= 0:
            return out
        for child in sorted(root.iterdir()):
            if child.is_dir() and not child.is_symlink() and child.name not in ("$RECYCLE.BIN", "System Volume Information"):
                out += _candidates(child, depth - 1)
    except OSError:  # unreadable folder, vanished medium: nothing found there
        pass
    return out


def volume_label(path: str) -> str | None:
    """The label of the volume holding ``path`` (Windows: GetVolumeInformationW; Linux: /dev/disk/by-label)."""
    if sys.platform == "win32":
        import ctypes

        buf = ctypes.create_unicode_buffer(261)
        root = os.path.splitdrive(os.path.abspath(path))[0] + "\\"
        ok = ctypes.windll.kernel32.GetVolumeInformationW(root, buf, 261, None, None, None, None, 0)
        return buf.value or None if ok else None
    try:
        dev = os.stat(path).st_dev
        for link in Path("/dev/disk/by-label").iterdir():
            if os.stat(link).st_rdev == dev:
                return link.name.encode().decode("unicode_escape")
    except OSError:
        pass
    return None


def repo_info(path: Path) -> RepoInfo:
    from rescuekit.repo.repository import Repository

    try:
        free = shutil.disk_usage(path).free
    except OSError:
        free = None
    try:
        docs, _bad = Repository.open(path).scan_images()  # oldest first, by sequence number
    except (RescueError, OSError) as exc:
        return RepoInfo(str(path), volume_label(str(path)), free, 0, None, error=f"cannot be read: {exc}")
    newest = docs[-1] if docs else None  # by sequence, never by the capturing machine's clock
    return RepoInfo(str(path), volume_label(str(path)), free, len(docs), newest)


def find_repositories(folders: list[str] = (), *, scan: bool = True) -> list[RepoInfo]:
    """Repositories in ``folders`` (given ones first: the build's --repository, the command line's) and, with
    ``scan``, on every attached volume; each once."""
    seen: set[str] = set()
    out = []
    roots = [(Path(f), SCAN_DEPTH) for f in folders] + ([(Path(r), SCAN_DEPTH) for r in volume_roots()] if scan else [])
    for root, depth in roots:
        for cand in _candidates(root, depth):
            key = os.path.normcase(os.path.realpath(cand))
            if key not in seen:
                seen.add(key)
                out.append(repo_info(cand))
    return out


def image_rows(docs: list[dict]) -> list[tuple[int, dict]]:
    """(sequence number in order of capture, image), newest first."""
    ordered = sorted(docs, key=lambda d: str(d.get("created")))
    return sorted(enumerate(ordered, 1), key=lambda t: -t[0])


def image_text(seq: int, d: dict) -> tuple[str, str]:
    src = d.get("source", {})
    parts = " ".join(f"{p['number']}:{p.get('fs')}" + (f"({p['label']})" if p.get("label") else "")
                     for p in d.get("partitions", []))
    model = src.get("model") or Path(str(src.get("path", "?")).replace("\\", "/")).name
    return (f"#{seq} {d.get('name')}  {str(d.get('created', ''))[:16].replace('T', ' ')}  {d['id'][:8]}",
            f"from {model} {human(src.get('size') or 0)}; {parts or 'no partitions'}; "
            f"stored {human(d.get('totals', {}).get('stored_bytes', 0))}")


@dataclass
class DiskRow:
    path: str
    desc: dict
    why: str = ""  # non-empty: shown but cannot be chosen
    shrinks: bool = False  # smaller than the image's source disk: the restore shrinks a volume to fit
    marks: list[str] = field(default_factory=list)

    def text(self) -> tuple[str, str]:
        d = self.desc
        # an image file given on the command line: its name (the full path was typed by the user)
        shown = Path(self.path).name if d.get("kind", "file") == "file" and "/" in self.path else self.path
        head = " ".join(x for x in (shown, human(d.get("size") or 0), d.get("model") or "",
                                    f"[{d['bus']}]" if d.get("bus") else "",
                                    "removable" if d.get("removable") else "", *self.marks) if x)
        parts = d.get("partitions") or []
        if d.get("error"):
            detail = f"unreadable: {d['error']}"
        elif parts:
            detail = f"{(d.get('table') or '?').upper()}: " + ", ".join(
                f"{p['number']} {p.get('fs') or p.get('type_name')}" + (f" '{p['label']}'" if p.get("label") else "")
                + f" {human(p['size'])}" for p in parts)
        elif d.get("volume", {}).get("fs"):
            detail = f"volume {d['volume']['fs']}" + (f" '{d['volume']['label']}'" if d["volume"].get("label") else "")
        else:
            detail = "empty (no partition table)"
        return head, detail


def describe_disks(extra: list[str] = (), *, machine: bool = True) -> list[dict]:
    """``rescuekit disks``'s data: this machine's disks (``machine``) plus the image files given."""
    from rescuekit.disks_cli import _collect

    out = []
    try:
        out = _collect(()) if machine else []
    except (RescueError, OSError, NotImplementedError):
        out = []
    for p in extra:
        try:
            out += _collect((p,))
        except (RescueError, OSError) as exc:
            out.append({"path": p, "size": 0, "error": str(exc), "partitions": []})
    return out


def captured_from(desc: dict, image: dict) -> bool:
    """Whether a disk is the one ``image`` was captured from: GPT disk GUID, MBR signature or serial."""
    table, src = image.get("table", {}), image.get("source", {})
    if table.get("disk_guid") and desc.get("disk_guid") and table["disk_guid"].lower() == desc["disk_guid"].lower():
        return True
    sig = table.get("disk_signature")
    if sig and desc.get("disk_signature") and f"{sig:08X}" == desc["disk_signature"]:
        return True
    return bool(src.get("serial") and desc.get("serial") and src["serial"].strip() == desc["serial"].strip())


def disk_rows(descs: list[dict], *, repo: str | None = None, image: dict | None = None,
              for_capture: bool = False) -> list[DiskRow]:
    """Disks with the reason each one cannot be chosen: holds the repository, is the running system or boot
    medium (imaging.safety), too small for the image, unreadable."""
    from rescuekit.imaging.safety import holds, system_holder

    rows = []
    for d in descs:
        row = DiskRow(d["path"], d)
        if repo is not None and holds(d["path"], repo) is not None:
            row.why = "holds the repository"
            row.marks.append("REPOSITORY")
        elif system_holder(d["path"]) is not None or d.get("is_system"):
            row.why = "running system / boot medium"
            row.marks.append("BOOT")
        elif d.get("error") and (for_capture or d.get("size", 0) == 0):
            row.why = "cannot be read"
        elif image is not None and not for_capture and (d.get("size") or 0) < image["source"]["size"]:
            floor = shrink_floor(image)
            if floor is not None and (d.get("size") or 0) >= floor:
                row.shrinks = True  # the restore computes the real minimum and refuses before writing if it is more
                row.marks.append(f"smaller: the restore shrinks the image to fit (used data ~{human(floor)})")
            else:
                row.why = f"too small (needs {human(floor if floor is not None else image['source']['size'])})"
        if image is not None and captured_from(d, image):
            row.marks.append("<- captured from this disk")
        rows.append(row)
    return rows


def internal_candidates(rows: list[DiskRow]) -> list[DiskRow]:
    """Disks ``--target auto`` may pick: choosable, not removable, and holding the image without a shrink (an
    unattended run does not guess whether a smaller disk is meant)."""
    return [r for r in rows if not r.why and not r.desc.get("removable") and not r.shrinks]


def auto_target(target: str, rows: list[DiskRow], image: dict, exclude: set[str] = frozenset()) -> DiskRow:
    """The one disk ``--target auto[:RULES]`` means for ``image`` (WinPE's menu and the Linux base's unattended
    run alike): an internal candidate matching the rules, not in ``exclude`` (the boot medium's disks); none or
    several is a RescueError, before anything is written."""
    from rescuekit import target_rules

    cands = [r for r in target_rules.select(internal_candidates(rows), target) if r.path not in exclude]
    if len(cands) != 1:
        shown = ", ".join(r.path for r in cands) or "none"
        rules = f" matching {target[len('auto:'):]}" if target != "auto" else ""
        raise RescueError(f"--target {target} needs exactly one internal disk{rules} that can hold image "
                          f"{image.get('name')} ({human(image['source']['size'])}); found {len(cands)}: "
                          f"{shown}; nothing was written")
    return cands[0]


SHRINKABLE_FS = ("ntfs", "fat12", "fat16", "fat32")


def shrink_floor(image: dict) -> int | None:
    """A cheap lower bound of the smallest target the restore can shrink ``image`` onto (None: it cannot shrink):
    the source size less the free space of its largest shrinkable volume, plus 1% (at least 1 MiB) of slack.
    The restore's own plan (imaging/layout.py) computes the real minimum from the image before it writes."""
    parts = [p for p in image.get("partitions") or [] if p.get("fs") in SHRINKABLE_FS and p.get("used_bytes")]
    if not parts:
        return None
    free = max(p["size"] - p["used_bytes"] for p in parts)
    used = image["source"]["size"] - max(0, free)
    return used + max(1 << 20, used // 100)
