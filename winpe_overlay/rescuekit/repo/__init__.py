"""The image repository: config, packs of compressed chunks, index files, image manifests, locks.

On-disk format: docs/format.md. Every reader checks the format version and refuses newer ones.
"""
from rescuekit.repo.config import FORMAT_VERSION
from rescuekit.repo.repository import ChunkStore, Repository

__all__ = ["FORMAT_VERSION", "ChunkStore", "Repository"]
