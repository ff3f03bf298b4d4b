"""The overlay's build choices (what goes into config.toml and the .cmd files) and their validation.

Every value a user types ends up in a generated ``.cmd`` file, so each one is checked against a whitelist:
characters that cmd.exe treats specially (``& | < > ^ % ! "``), control characters and newlines are refused
with a one-line error naming the option. Values that may contain spaces are always written quoted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields

from rescuekit import __version__
from rescuekit.config import ACTIONS, COUNTDOWN_MAX, THEN, Settings  # the runtime's reader: what config.toml may say
from rescuekit.target_rules import is_auto, parse as parse_target_rules
from rescuekit.volumes import LABEL_PATH
from rescuekit.errors import UsageError

SHELLS = ("startnet", "winpeshl")

# Characters that cmd.exe expands or splits on even inside double quotes (%, !) or that end a quoted
# argument ("), plus the usual metacharacters; also refused anywhere in a path.
_CMD_SPECIAL = set('&|<>^%!"')
# Characters Windows does not allow in file names (besides the separator and the drive colon).
_WIN_FORBIDDEN = set('<>:"/|?*')
_PATH_PART = re.compile(r"^[^\x00-\x1f\x7f]+$")
_DRIVE_PATH = re.compile(r"^[A-Za-z]:\\")
_UNC_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,253}$")
_UNC_SHARE = re.compile(r"^[A-Za-z0-9$._ -]{1,80}$")
_IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,63}$")
_LOCALE = re.compile(r"^[a-z]{2,3}(?:-[A-Z][a-z]{3})?-[A-Z]{2}$")
_TARGET = re.compile(r"^\\\\\.\\(?:PhysicalDrive[0-9]{1,3}|[A-Za-z]:)$", re.IGNORECASE)
_LINUX_TARGET = re.compile(r"^/dev/(?:[a-z][a-z0-9]{1,15}|disk/by-[a-z]+/[A-Za-z0-9:._-]{1,100})$")
_VERSION = re.compile(r"^[0-9A-Za-z.+-]{1,40}$")


def _refuse(option: str, value: str, why: str) -> UsageError:
    shown = value.encode("unicode_escape").decode("ascii")
    return UsageError(f"invalid {option} {shown!r}: {why}")


def _check_cmd_safe(option: str, value: str) -> None:
    if not value:
        raise _refuse(option, value, "empty")
    if not _PATH_PART.match(value):
        raise _refuse(option, value, "control characters or newlines are not allowed")
    if not value.isascii():
        # cmd.exe reads a .cmd file in the console's OEM code page, not UTF-8: "Büro" would reach the runtime garbled
        raise _refuse(option, value, "only ASCII characters are allowed (cmd.exe reads .cmd files in the OEM code page)")
    bad = sorted(set(value) & _CMD_SPECIAL)
    if bad:
        raise _refuse(option, value, f"character(s) {''.join(bad)} are not allowed (cmd.exe metacharacters)")


def validate_windows_path(value: str, option: str) -> str:
    """A drive-letter path (``D:\\Images``), a UNC path (``\\\\server\\share\\dir``) or a volume label and
    folder (``RKREPO:\\images``: the runtime finds the volume among the attached ones); spaces are fine."""
    _check_cmd_safe(option, value)
    if len(value) > 240:
        raise _refuse(option, value, "longer than 240 characters")
    label = LABEL_PATH.match(value)
    if label:
        rest = [p for p in label.group(2).replace("/", "\\").split("\\") if p]
    elif value.startswith("\\\\"):
        parts = value[2:].rstrip("\\").split("\\")
        if len(parts) < 2 or not _UNC_HOST.match(parts[0]) or not _UNC_SHARE.match(parts[1]):
            raise _refuse(option, value, "a UNC path must look like \\\\server\\share[\\dir...]")
        rest = parts[2:]
    elif _DRIVE_PATH.match(value):
        rest = [p for p in value[3:].rstrip("\\").split("\\")] if value[3:] else []
    else:
        raise _refuse(option, value, "must be a drive-letter path like D:\\Images, a UNC path like \\\\server\\share "
                                     "or a volume label and folder like RKREPO:\\images")
    for part in rest:
        if not part or part in (".", ".."):
            raise _refuse(option, value, "empty, '.' or '..' path components are not allowed")
        bad = sorted(set(part) & _WIN_FORBIDDEN)
        if bad:
            raise _refuse(option, value, f"character(s) {''.join(bad)} are not allowed in Windows file names")
        if part != part.rstrip(" ."):
            raise _refuse(option, value, "a path component may not end with a space or a dot")
    return value


def validate_image_name(value: str, option: str = "--image") -> str:
    if not _IMAGE_NAME.match(value):
        raise _refuse(option, value, "use 1-64 of A-Z a-z 0-9 . _ - and space, starting with a letter or digit")
    return value


def validate_locale(value: str, option: str = "--locale") -> str:
    if not _LOCALE.match(value):
        raise _refuse(option, value, "expected a locale name like en-US or sr-Latn-RS")
    return value


def validate_target(value: str, option: str = "--target") -> str:
    r"""A whole disk ``\\.\PhysicalDriveN`` or a volume ``\\.\X:`` (WinPE), or a Linux device path ``/dev/vda``."""
    if not (_TARGET.match(value) or _LINUX_TARGET.match(value)):
        raise _refuse(option, value, r"expected \\.\PhysicalDriveN, \\.\X: or a device path like /dev/sda")
    return value


def validate_choice(value: str, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise _refuse(option, value, f"choose one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class RuntimeConfig(Settings):
    """The build's choices for the runtime; written to ``X:\\rescuekit\\config.toml``.

    The keys are the runtime's own ``Settings`` (its reader), so writer and reader cannot drift apart.
    """

    tool_version: str = __version__
    build_time: str = ""

    def validated(self) -> "RuntimeConfig":
        """Check every field; return self (raises UsageError naming the option)."""
        validate_choice(self.default_action, ACTIONS, "--default-action")
        validate_choice(self.shell, SHELLS, "--shell")
        validate_choice(self.then, THEN, "--then")
        if isinstance(self.countdown, bool) or not isinstance(self.countdown, int) \
                or not 0 <= self.countdown <= COUNTDOWN_MAX:
            raise _refuse("--countdown", str(self.countdown), f"use 0-{COUNTDOWN_MAX} seconds")
        if self.repository is not None:
            validate_windows_path(self.repository, "--repository")
        if self.image is not None:
            validate_image_name(self.image)
        if self.target is not None and is_auto(self.target) and self.default_action == "restore":
            parse_target_rules(self.target)
        elif self.target is not None:
            validate_target(self.target)
        if self.locale is not None:
            validate_locale(self.locale)
        if not _VERSION.match(self.tool_version):
            raise _refuse("tool version", self.tool_version, "unexpected characters")
        if self.default_action in ("capture", "restore"):
            missing = [o for o, v in (("--repository", self.repository), ("--target", self.target)) if v is None]
            if missing:
                raise UsageError(
                    f"--default-action {self.default_action} needs {' and '.join(missing)}"
                )
        return self

    def launcher_args(self) -> list[str]:
        """Arguments after ``python -B -m`` for the default action (each one validated, cmd-safe).

        ``menu`` is the runtime's ``rescuekit menu`` (it reads config.toml itself, also for an unattended restore
        onto ``--target auto``); capture/restore onto a named disk call the runtime CLI directly (restore still
        asks for confirmation before overwriting the target).
        """
        if self.default_action == "capture":
            args = ["rescuekit", "capture", self.target or "", self.repository or ""]
            if self.image:
                args += ["--name", self.image]
            return args
        if self.default_action == "restore" and is_auto(self.target):
            return ["rescuekit", "menu"]
        if self.default_action == "restore":
            return ["rescuekit", "restore", self.repository or "", self.target or "", "--image", self.image or "latest"]
        return ["rescuekit", "menu"]

    def as_toml_table(self) -> dict[str, object]:
        """Key/value pairs for config.toml (None values left out)."""
        table = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in table.items() if v is not None}


def cmd_quote(arg: str) -> str:
    """Quote one already-validated argument for a .cmd line (quotes only when needed)."""
    if set(arg) & (_CMD_SPECIAL | {"\n", "\r"}):
        raise UsageError(f"refusing to put {arg!r} into a .cmd file")
    if arg == "" or any(c in arg for c in " \t,;=()"):
        # Programs split their command line with the MSVCRT rules (CommandLineToArgvW): backslashes before the
        # closing quote escape it ("D:\My Images\" would swallow the rest of the line), so double them.
        trailing = len(arg) - len(arg.rstrip("\\"))
        return '"' + arg + "\\" * trailing + '"'
    return arg


def toml_value(value: object) -> str:
    """One TOML value: basic string with escapes, bool, int or a list of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        out = []
        for ch in value:
            if ch == "\\":
                out.append("\\\\")
            elif ch == '"':
                out.append('\\"')
            elif ch in "\b\t\n\f\r":
                out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[ch])
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\u{ord(ch):04X}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else toml_value(key)

