r"""``--target auto`` and ``--target auto:RULES``: the one internal disk an unattended restore may pick.

An admin reimaging a lab of mixed PCs cannot name ``\\.\PhysicalDrive0`` or ``/dev/nvme0n1`` in advance (the
number depends on the controller and on what else is plugged in), so the target is described instead:

    auto                               the only internal disk that can hold the image
    auto:model=*Samsung*               ... whose model matches a glob (case-insensitive)
    auto:serial=S4EW*,size>=200GB      ... all rules must hold
    auto:bus=nvme,size~500GB           size~ is "about": within 5% (vendors' 500 GB is 500,107,862,016 bytes)

Fields: ``model``, ``serial``, ``bus`` take ``=GLOB``; ``size`` takes ``=``, ``~``, ``>=``, ``<=``, ``>``, ``<``
and a size with a unit (``K M G T`` and ``KiB``... are powers of 1024; ``KB MB GB TB`` powers of 1000, as disks
are sold). The rules only narrow the candidates ``finders.internal_candidates`` allows (never the boot medium,
the repository's disk, a removable or too-small disk); exactly one must remain or nothing is written.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from rescuekit.errors import UsageError

AUTO = "auto"
GLOB_FIELDS = ("model", "serial", "bus")
SIZE_OPS = (">=", "<=", "~", "=", ">", "<")
ABOUT = 0.05
_RULE = re.compile(r"^(model|serial|bus|size)\s*(>=|<=|~|=|>|<)\s*(.+)$", re.I)
_GLOB = re.compile(r"^[\w .*?!\[\]:/+-]{1,100}$")  # no quotes, % or ^: the value also lands in config.toml
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?b?)$", re.I)


@dataclass(frozen=True)
class Rule:
    field: str
    op: str
    value: str | int

    def matches(self, desc: dict) -> bool:
        if self.field == "size":
            size, v = int(desc.get("size") or 0), int(self.value)
            return {">=": size >= v, "<=": size <= v, ">": size > v, "<": size < v, "=": size == v,
                    "~": abs(size - v) <= ABOUT * v}[self.op]
        text = str(desc.get(self.field) or "").strip().lower()
        return fnmatch.fnmatchcase(text, str(self.value).lower())

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.value}"


def is_auto(target: str | None) -> bool:
    """True for ``auto`` and ``auto:RULES`` (validated by :func:`parse`)."""
    return target is not None and (target == AUTO or target.startswith(AUTO + ":"))


def parse_size(text: str, what: str) -> int:
    m = _SIZE.match(text.strip())
    if not m:
        raise UsageError(f"{what}: bad size {text!r} (e.g. 500GB, 465G, 1TB)")
    num, unit, tail = float(m.group(1)), m.group(2).lower(), m.group(3).lower()
    decimal = tail == "b" and unit != ""  # GB: as disks are sold; G, GiB: powers of 1024
    power = "kmgt".index(unit) + 1 if unit else 0
    return int(num * (1000 if decimal else 1024) ** power)


def parse(target: str) -> list[Rule]:
    """The rules of ``auto[:rule,rule...]``; a bad rule is a UsageError naming it."""
    if not is_auto(target):
        raise UsageError(f"--target {target!r} is not 'auto' or 'auto:RULES'")
    if target == AUTO:
        return []
    rules: list[Rule] = []
    for part in (p.strip() for p in target[len(AUTO) + 1:].split(",")):
        m = _RULE.match(part)
        if not m:
            raise UsageError(f"--target {target!r}: bad rule {part!r} (use model=GLOB, serial=GLOB, bus=GLOB or "
                             f"size>=SIZE, size<=SIZE, size~SIZE)")
        field, op, value = m.group(1).lower(), m.group(2), m.group(3).strip()
        if field in GLOB_FIELDS:
            if op != "=" or not _GLOB.match(value):
                raise UsageError(f"--target {target!r}: {field} takes '=GLOB' (letters, digits, spaces and "
                                 f"* ? [ ] . _ - : / +)")
            rules.append(Rule(field, op, value))
        else:
            rules.append(Rule(field, op, parse_size(value, f"--target {target!r}")))
    return rules


def select(rows: list, target: str) -> list:
    """The candidate rows (``finders.DiskRow``) whose descriptions satisfy every rule of ``target``."""
    rules = parse(target)
    return [r for r in rows if all(rule.matches(r.desc) for rule in rules)]
