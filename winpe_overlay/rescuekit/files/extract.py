"""Copy files and folders out of a volume tree into a folder, never outside it, whatever the names say."""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rescuekit.errors import RescueError
from rescuekit.files.tree import Node, Tree

WIN_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", *(f"COM{i}" for i in range(10)),
               *(f"LPT{i}" for i in range(10)), "COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³"}
_WIN_BAD = re.compile(r'[<>:"|?*\x00-\x1f]')


def safe_name(name: str, windows: bool | None = None) -> str:
    """One path component that cannot leave its folder: separators, NUL, "." and ".." replaced; on Windows
    also the characters it forbids, trailing dots/spaces and device names (CON, NUL, COM1, ...)."""
    windows = sys.platform == "win32" if windows is None else windows
    out = name.replace("/", "_").replace("\\", "_").replace("\0", "_")
    if windows:
        out = _WIN_BAD.sub("_", out).rstrip(" .")
        if out.split(".", 1)[0].rstrip(" ").upper() in WIN_DEVICES:
            out = "_" + out
    if out in ("", ".", ".."):
        out = out.replace(".", "_") or "_"
    return out


@dataclass
class Report:
    files: int = 0
    folders: int = 0
    bytes: int = 0
    streams: int = 0
    links: int = 0  # files made as hard links to one extracted before (NTFS files with several names)
    notes: list[str] = field(default_factory=list)  # skipped/renamed, shown as warnings
    errors: list[str] = field(default_factory=list)  # files that could not be copied


class Extractor:
    def __init__(self, tree: Tree, dest: str | Path, *, streams: bool = True) -> None:
        self.tree = tree
        self.dest = Path(dest).resolve()
        self.streams = streams
        self.report = Report()
        self._linked: dict[object, Path] = {}  # file (tree key) with several names -> where it was written

    def _inside(self, path: Path) -> Path:
        # A belt to the braces of safe_name: the final path must be under DEST with no symlink on the way.
        p = Path(os.path.abspath(path))
        if os.path.commonpath([str(p), str(self.dest)]) != str(self.dest):
            raise RescueError(f"refusing to write {p}: outside {self.dest}")
        q = p
        while q != self.dest:
            if q.is_symlink():
                raise RescueError(f"refusing to write through the symbolic link {q}")
            q = q.parent
        return p

    def _target(self, folder: Path, node: Node) -> Path:
        name = safe_name(node.name)
        if name != node.name:
            self.report.notes.append(f"{node.path}: saved as {name!r} (the name is not allowed here)")
        return self._inside(folder / name)

    def extract(self, node: Node) -> None:
        """Copy ``node`` (a file, or a folder with everything under it) into DEST."""
        if not self.dest.is_dir():
            raise RescueError(f"destination {self.dest} is not a folder")
        self._one(node, self.dest, frozenset(), 0)

    def _one(self, node: Node, folder: Path, seen: frozenset, depth: int) -> None:
        target = self._target(folder, node if node.name else Node("volume", "/", True, 0, None, None, 0x10))
        if node.error:
            self.report.errors.append(f"{node.path}: {node.error}")
            return
        if node.reparse:
            self.report.notes.append(f"{node.path}: a reparse point (link or junction): reported, not followed")
            return
        if node.is_dir:
            key = self.tree._key(node)
            if key in seen or depth > 256:
                raise RescueError(f"folder {node.path} loops back to its own parent: the directory structure "
                                  "is damaged")
            if target.exists() and not target.is_dir():
                self.report.errors.append(f"{node.path}: {target} exists and is not a folder")
                return
            target.mkdir(exist_ok=True)
            self.report.folders += 1
            try:
                kids = self.tree.listdir(node)
            except RescueError as exc:
                self.report.errors.append(f"{node.path}: cannot list the folder: {exc}")
                kids = []
            for k in kids:
                self._one(k, target, seen | {key}, depth + 1)
            self._times(target, node)
            return
        if node.encrypted:
            self.report.notes.append(f"{node.path}: EFS-encrypted: reported, not copied (its key is not here)")
            return
        key = self.tree._key(node) if node.links > 1 else None
        if key is not None and key in self._linked and self._link(node, self._linked[key], target):
            return
        if self._copy(node, "", target):
            self.report.files += 1
            if self.streams:
                for sname, _size in node.streams:
                    self._stream(node, sname, target)
            self._times(target, node)
            if key is not None:
                self._linked.setdefault(key, target)

    def _link(self, node: Node, first: Path, target: Path) -> bool:
        """Make ``target`` another name of ``first`` (the same NTFS file, extracted under another of its
        names); False when the destination cannot (then it is copied, with a note)."""
        if self._taken(node.path, target):
            return True
        try:
            os.link(first, target)
        except OSError as exc:
            self.report.notes.append(f"{node.path}: copied, not hard-linked to {first.name} (the destination "
                                     f"does not allow hard links: {exc.strerror or exc})")
            return False
        if self.streams and sys.platform != "win32":  # beside the file, the streams are files of their own
            for sname, _size in node.streams:
                sfirst = _stream_path(first, sname)
                try:
                    os.link(sfirst, self._inside(_stream_path(target, sname)))
                    self.report.streams += 1
                except OSError:  # the first name's stream was skipped: try it for this name
                    self._stream(node, sname, target)
        self.report.files += 1
        self.report.links += 1
        return True

    def _stream(self, node: Node, sname: str, target: Path) -> None:
        spath = _stream_path(target, sname)
        if sys.platform == "win32" and not _win_allows_streams(target):
            self.report.notes.append(f"{node.path}:{sname}: alternate data stream skipped (the destination "
                                     "file system has no streams)")
            return
        try:
            if self._copy(node, sname, self._inside(spath), direct=True):
                self.report.streams += 1
                self._times(spath, node)
        except OSError as exc:
            self.report.notes.append(f"{node.path}:{sname}: alternate data stream skipped ({exc.strerror})")

    def _copy(self, node: Node, stream: str, target: Path, direct: bool = False) -> bool:
        """Stream the data into ``target`` (through a ``.rkpart`` file renamed at the end, so that a failed
        copy leaves nothing; ``direct``: written in place, for Windows streams that cannot be renamed)."""
        what = f"{node.path}:{stream}" if stream else node.path
        if self._taken(what, target):
            return False
        tmp = target if direct else target.with_name(target.name + ".rkpart")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) |
                     getattr(os, "O_NOFOLLOW", 0), 0o644)
        done = 0
        try:
            with os.fdopen(fd, "wb") as f:
                for piece in self.tree.read(node, stream):
                    f.write(piece)
                    done += len(piece)
            if tmp != target:
                os.replace(tmp, target)
        except RescueError as exc:
            tmp.unlink(missing_ok=True)
            self.report.errors.append(f"{what}: {exc}")
            return False
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.report.bytes += done
        return True

    def _taken(self, what: str, target: Path) -> bool:
        if target.exists() or target.is_symlink():
            self.report.errors.append(f"{what}: {target} already exists (not overwritten)")
            return True
        return False

    def _times(self, target: Path, node: Node) -> None:
        if node.mtime is not None:
            try:
                os.utime(target, (node.mtime, node.mtime), follow_symlinks=False)
            except (OSError, ValueError, OverflowError) as exc:
                self.report.notes.append(f"{node.path}: modification time not kept ({exc})")


def _stream_path(target: Path, sname: str) -> Path:
    # a stream name is one more component (":" would start a stream type on Windows)
    return Path(f"{target}:{safe_name(sname).replace(':', '_')}")


def _win_allows_streams(path: Path) -> bool:
    """Does the Windows volume holding ``path`` support named streams (NTFS, ReFS: yes; FAT, exFAT: no)?"""
    import ctypes

    FILE_NAMED_STREAMS = 0x00040000
    root = os.path.splitdrive(str(path))[0] + "\\"
    flags = ctypes.c_uint32()
    ok = ctypes.windll.kernel32.GetVolumeInformationW(ctypes.c_wchar_p(root), None, 0, None, None,
                                                      ctypes.byref(flags), None, 0)
    return bool(ok) and bool(flags.value & FILE_NAMED_STREAMS)
