"""Partition tables: GPT (with CRC checks and backup) and MBR (with extended/logical partitions)."""
from __future__ import annotations

from dataclasses import dataclass, field

from rescuekit.disk.device import BlockDevice
from rescuekit.errors import RescueError


@dataclass
class Partition:
    number: int  # 1-based like Linux (logical MBR partitions start at 5)
    start: int  # bytes from the start of the disk
    size: int  # bytes
    type: str | int  # GPT type GUID (upper-case str) or MBR type byte
    type_name: str
    name: str = ""  # GPT partition name
    guid: str | None = None  # GPT unique partition GUID
    bootable: bool = False  # MBR active flag
    attributes: int = 0  # GPT attribute bits
    logical: bool = False  # MBR logical partition inside an extended one
    extended: bool = False  # MBR extended container (listed, holds no file system)

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass
class PartitionTable:
    kind: str  # "gpt" | "mbr" | "none"
    partitions: list[Partition] = field(default_factory=list)
    # Byte ranges (start, length) holding the table: MBR, GPT headers + entries, EBRs.
    header_regions: list[tuple[int, int]] = field(default_factory=list)
    sector_size: int = 512
    disk_guid: str | None = None  # GPT disk GUID
    disk_signature: int | None = None  # MBR disk signature
    first_usable: int | None = None  # bytes (GPT)
    last_usable: int | None = None  # bytes, inclusive end (GPT): last usable byte + 1
    warnings: list[str] = field(default_factory=list)


def read_table(dev: BlockDevice) -> PartitionTable:
    """Read the partition table of ``dev``; RescueError if it is present but garbage."""
    raise NotImplementedError


def fix_gpt_after_restore(dev: BlockDevice) -> None:
    """After restoring a GPT disk onto a larger target: write the backup GPT at the new end of the disk.

    Reads the primary header + entries at LBA 1, rewrites the primary header (alternate LBA, last usable
    LBA, CRCs), writes the backup entries + header at the end, and updates the protective MBR's size.
    """
    raise NotImplementedError
