"""Windows' own system image backups (WindowsImageBackup): find, list, restore, import (docs/winbackup.md)."""
