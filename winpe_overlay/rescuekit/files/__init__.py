"""Browse and extract single files from an image: a repository image, a Windows system image backup, a
virtual disk or a raw disk/partition image, read in place (nothing is restored to a disk)."""
