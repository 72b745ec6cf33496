"""Disk space: what a folder takes, and a size as people read it (pool status, cleanup)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def disk_usage(path: Path) -> int:
    """Bytes a folder takes on disk (allocated blocks, each hard-linked file counted once,
    symbolic links not followed)."""
    total, seen = 0, set()
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def human_size(n: Optional[float]) -> str:
    """``1536`` -> ``1.5 KB``; ``?`` for an unknown size."""
    if n is None:
        return "?"
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
