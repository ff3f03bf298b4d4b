"""Disk access, partition tables, file-system used-block maps and the disk inventory.

Pure Python + ctypes + stdlib so it runs in WinPE (embedded Python) and on Linux hosts.
"""
