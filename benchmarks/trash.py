"""Folders a benchmark is done with, kept until it ends, so that no deletion skews a later measurement.

On ext4 without a journal (many virtual machines' root disks, this one's among them), the
kernel will not hand out an inode that was freed within the last minute (five while its
inode table block is dirty): ``ext4_new_inode`` checks every free inode it passes with
``recently_deleted()``. Creating a file right after many were deleted then scans past
all of them. Measured here: one ``git worktree add`` of 2,000 files took 0.09 s of kernel
time on a journaled ext4 and 0.13 s on the journal-less root disk at boot, but 0.94 s on
that disk right after six such worktrees were deleted. A benchmark that removed each configuration's clone and worktrees before the next one
measured its own clean-up. So the clones are renamed into the trash (a rename frees no
inode) and removed when the benchmark is over, or earlier when the disk runs short, which
the report then says.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional


class Trash:
    """``put(path)`` moves a folder out of the way; ``empty()`` removes everything put there."""

    def __init__(self, root: Path, min_free_bytes: int = 10 << 30):
        self.root = Path(root)
        self.min_free_bytes = min_free_bytes
        self.count = 0
        self.emptied_early = 0  # times the disk ran short and the trash was removed mid-run

    def put(self, path: Path) -> None:
        path = Path(path)
        if not path.exists() and not path.is_symlink():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.count += 1
        try:
            os.rename(path, self.root / f"{self.count:05d}-{path.name}")
        except OSError:  # another file system, or the name is taken: remove it now
            shutil.rmtree(path, ignore_errors=True)
        free = self.free_bytes()
        if free is not None and free < self.min_free_bytes:
            self.emptied_early += 1
            self.empty()

    def free_bytes(self) -> Optional[int]:
        try:
            st = os.statvfs(self.root)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def empty(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
