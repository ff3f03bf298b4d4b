"""Find WindowsImageBackup sets and parse their BackupSpecs.xml.

Folder: ``<drive>\\WindowsImageBackup\\<ComputerName>\\Backup YYYY-MM-DD HHMMSS\\`` holding ``BackupSpecs.xml``
and one ``<volume GUID>.vhd`` (Windows 7) or ``.vhdx`` (Windows 8 and later) per volume. BackupSpecs.xml is
UTF-16LE without BOM or declaration, one line, ending in a UTF-16 NUL (a BOM is accepted too). Two shapes
exist: ``<BackupSpecs>`` (Windows 7) and ``<BackupSpecs Version="N">`` with a ``<ComponentSpecs>`` element;
unknown elements and attributes are ignored. Facts and sources: docs/winbackup.md.
"""
from __future__ import annotations

import os
import re
import string
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from rescuekit.errors import RescueError, UsageError

SPECS_NAME = "BackupSpecs.xml"
ROOT_NAME = "WindowsImageBackup"
SET_RE = re.compile(r"Backup (\d{4})-(\d{2})-(\d{2}) (\d{2})(\d{2})(\d{2})$")
VOLUME_RE = re.compile(r"\\\\\?\\Volume\{([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
                       r"[0-9A-Fa-f]{12})\}\\?$")
MAX_SPECS = 4 << 20


@dataclass
class SpecVolume:
    guid: str  # lower case, no braces (as the virtual disk file is named)
    name: str  # \\?\Volume{GUID}\
    access_path: str  # "C:" or "" (unlettered: System Reserved, ESP)
    original_access_path: str
    label: str  # always "" as Windows writes it
    file_specs: list[dict] = field(default_factory=list)


@dataclass
class BackupSpecs:
    version: int | None
    volumes: list[SpecVolume]
    system_state: bool | None
    all_critical: bool | None
    components: int = 0  # <ComponentSpec> entries (newer shape), not used for a restore


def decode_specs(raw: bytes, where: str) -> str:
    """The text of a BackupSpecs.xml: UTF-16LE with or without BOM (also UTF-8), trailing NULs dropped."""
    if raw.startswith(b"\xff\xfe"):
        text = raw[2:].decode("utf-16-le", "strict") if len(raw) % 2 == 0 else None
    elif raw.startswith(b"<\0"):
        text = raw[:len(raw) // 2 * 2].decode("utf-16-le", "strict")
    elif raw.startswith((b"\xef\xbb\xbf<", b"<")):
        text = raw.decode("utf-8-sig", "strict")
    else:
        text = None
    if text is None:
        raise RescueError(f"{where} is not a BackupSpecs.xml (neither UTF-16LE nor UTF-8 XML)")
    return text.rstrip("\0")


def _bool(el: ET.Element | None) -> bool | None:
    if el is None:
        return None
    return (el.get("IsPresent") or "").lower() == "true"


def parse_specs(raw: bytes, where: str) -> BackupSpecs:
    """Parse BackupSpecs.xml bytes; RescueError (one line, naming ``where``) when it is not one."""
    try:
        root = ET.fromstring(decode_specs(raw, where))
    except (ET.ParseError, UnicodeDecodeError) as exc:
        raise RescueError(f"{where} is not well-formed XML ({str(exc).splitlines()[0]})") from None
    if root.tag != "BackupSpecs":
        raise RescueError(f"{where}: the root element is <{root.tag}>, not <BackupSpecs>")
    ver = root.get("Version")
    version = int(ver) if ver and ver.isdigit() else None
    vols = []
    for fs in root.findall("FileSpecs"):
        for v in fs.findall("Volume"):
            name = v.get("Name") or ""
            m = VOLUME_RE.match(name)
            if not m:
                raise RescueError(f"{where}: volume name {name!r} is not a \\\\?\\Volume{{GUID}}\\ path")
            specs = [dict(s.attrib) for s in v.findall("FileSpec")]
            vols.append(SpecVolume(m.group(1).lower(), name, v.get("AccessPath") or "",
                                   v.get("OriginalAccessPath") or "", v.get("Label") or "", specs))
    if not vols:
        raise RescueError(f"{where} lists no volumes")
    comps = sum(len(c.findall("ComponentSpec")) for c in root.findall("ComponentSpecs"))
    return BackupSpecs(version, vols, _bool(root.find("SystemState")), _bool(root.find("AllCritical")), comps)


@dataclass
class BackupSet:
    path: Path  # the "Backup ..." folder
    machine: str
    when: str | None  # "YYYY-MM-DD HH:MM:SS" from the folder name (time zone not recorded: see docs)
    specs: BackupSpecs

    def disk_file(self, vol: SpecVolume) -> Path:
        """The virtual disk of ``vol``: <guid>.vhdx or <guid>.vhd (any case); RescueError when missing."""
        want = {f"{vol.guid}.vhdx", f"{vol.guid}.vhd"}
        try:
            names = os.listdir(self.path)
        except OSError as exc:
            raise RescueError(f"cannot list {self.path}: {exc.strerror}") from None
        for n in sorted(names):
            if n.lower() in want:
                return self.path / n
        raise RescueError(f"the virtual disk of volume {vol.guid} ({vol.access_path or 'no drive letter'}) "
                          f"named in {self.path / SPECS_NAME} is missing: no {vol.guid}.vhdx or .vhd in {self.path}")


def _ci_child(folder: Path, name: str) -> Path | None:
    try:
        for n in os.listdir(folder):
            if n.lower() == name.lower():
                return folder / n
    except OSError:
        return None
    return None


def load_set(folder: Path) -> BackupSet:
    specs_path = _ci_child(folder, SPECS_NAME)
    if specs_path is None or not specs_path.is_file():
        raise RescueError(f"{folder} is a backup folder without {SPECS_NAME}; it is incomplete or not a "
                          "Windows system image backup")
    try:
        with open(specs_path, "rb") as f:
            raw = f.read(MAX_SPECS + 1)
    except OSError as exc:
        raise RescueError(f"cannot read {specs_path}: {exc.strerror}") from None
    if len(raw) > MAX_SPECS:
        raise RescueError(f"{specs_path} is larger than {MAX_SPECS} bytes: not a BackupSpecs.xml")
    m = SET_RE.match(folder.name)
    when = f"{m[1]}-{m[2]}-{m[3]} {m[4]}:{m[5]}:{m[6]}" if m else None
    return BackupSet(folder, folder.parent.name, when, parse_specs(raw, str(specs_path)))


def _sets_in_pc(pc: Path) -> list[Path]:
    try:
        return sorted(pc / n for n in os.listdir(pc) if SET_RE.match(n) and (pc / n).is_dir())
    except OSError:
        return []


def _set_folders(path: Path) -> list[Path]:
    """Backup set folders at or below ``path`` (a set, a PC folder, WindowsImageBackup or a drive root)."""
    if _ci_child(path, SPECS_NAME) is not None or SET_RE.match(path.name):
        return [path]
    if path.name.lower() == ROOT_NAME.lower():
        roots = [path]
    elif (r := _ci_child(path, ROOT_NAME)) is not None:
        roots = [r]
    else:
        return _sets_in_pc(path)  # a PC folder (or nothing)
    out: list[Path] = []
    for r in roots:
        try:
            pcs = sorted(r / n for n in os.listdir(r) if (r / n).is_dir())
        except OSError:
            continue
        for pc in pcs:
            out += _sets_in_pc(pc)
    return out


def volume_roots() -> list[Path]:
    """Roots of the attached volumes: drive letters on Windows, mount points elsewhere."""
    if sys.platform == "win32":
        return [Path(f"{c}:\\") for c in string.ascii_uppercase if os.path.exists(f"{c}:\\")]
    out = []
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as f:
            for line in f:
                mp = line.split()[1].replace("\\040", " ")
                if not mp.startswith(("/proc", "/sys", "/dev", "/run")):
                    out.append(Path(mp))
    except OSError:
        out = [Path("/")]
    return out


def find_set_folders(path: str | Path | None) -> list[Path]:
    """The "Backup ..." folders under ``path`` (None: the attached volumes); a named path with none is an error."""
    if path is None:
        folders = []
        for root in volume_roots():
            r = _ci_child(root, ROOT_NAME)
            if r is not None:
                folders += _set_folders(r)
        return folders
    p = Path(path)
    if not p.exists():
        raise UsageError(f"no such folder: {p}")
    if not p.is_dir():
        raise UsageError(f"{p} is not a folder (give a drive, WindowsImageBackup, a computer's folder or a "
                         "\"Backup ...\" folder)")
    folders = _set_folders(p)
    if not folders:
        raise RescueError(f"no Windows system image backup under {p} (no WindowsImageBackup\\<PC>\\Backup ... "
                          f"folder, no {SPECS_NAME})")
    return folders


def find_sets(path: str | Path | None) -> list[BackupSet]:
    """Every backup set under ``path`` (None: the attached volumes); any unreadable one is an error."""
    return [load_set(f) for f in find_set_folders(path)]


def one_set(path: str | Path) -> BackupSet:
    """The single backup set at ``path``; several found means the user must name one."""
    sets = find_sets(path)
    if len(sets) > 1:
        names = ", ".join(f"{s.machine}\\{s.path.name}" for s in sets[:4])
        raise UsageError(f"{path} holds {len(sets)} backups ({names}); give the \"Backup ...\" folder of one")
    return sets[0]
