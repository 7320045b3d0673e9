"""A FUSE filesystem that loses what was not synced, as a disk does when the power goes.

    python powercut_fs.py BACKING MOUNTPOINT

Files live in BACKING (the "disk"). Every write is kept in memory, apart, until the file is
fsync'd or fdatasync'd; reads see it meanwhile, as the page cache would show it. Writing
anything to `MOUNTPOINT/.powercut` drops every write not yet synced (then unmount): whatever
a program was told was durable is on the disk, nothing else of its later writes is.

What it models: data in the page cache lost at a power cut, per file, whatever order it was
written in. What it does not: metadata (creating, renaming, truncating, deleting files) is
durable at once, as on a journalling filesystem that commits it before the data; sectors
torn in the middle of a write; a disk that lies about its flushes; reordering across files
of writes that were synced.
"""

from __future__ import annotations

import errno
import os
import sys
import threading

from fuse import FUSE, FuseOSError, Operations

CONTROL = "/.powercut"


class PowerCutFS(Operations):
    def __init__(self, root: str):
        self.root = root
        self._mutex = threading.Lock()
        self.pending: dict[str, list[tuple[int, bytes]]] = {}  # path -> writes since its last sync
        self.sizes: dict[str, int] = {}  # path -> size with the pending writes

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    # files ---------------------------------------------------------------------------------
    def getattr(self, path, fh=None):
        if path == CONTROL:
            return {"st_mode": 0o100600, "st_nlink": 1, "st_size": 0}
        try:
            st = os.lstat(self._full(path))
        except OSError as exc:
            raise FuseOSError(exc.errno) from None
        attrs = {k: getattr(st, k) for k in ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
                                              "st_nlink", "st_size", "st_uid")}
        with self._mutex:
            if path in self.sizes:
                attrs["st_size"] = self.sizes[path]
        return attrs

    def create(self, path, mode, fi=None):
        if path == CONTROL:
            return 0
        return os.open(self._full(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)  # mmap reads it too

    def open(self, path, flags):
        if path == CONTROL:
            return 0
        return os.open(self._full(path), os.O_RDWR if flags & (os.O_WRONLY | os.O_RDWR) else os.O_RDONLY)

    def read(self, path, size, offset, fh):
        with self._mutex:
            end = min(offset + size, self.sizes.get(path, offset + size))
            data = bytearray(os.pread(fh, max(0, end - offset), offset))
            data.extend(bytes(max(0, end - offset - len(data))))
            for at, written in self.pending.get(path, ()):
                lo, hi = max(at, offset), min(at + len(written), end)
                if lo < hi:
                    data[lo - offset : hi - offset] = written[lo - at : hi - at]
            return bytes(data)

    def write(self, path, data, offset, fh):
        if path == CONTROL:
            self.power_cut()
            return len(data)
        with self._mutex:
            if path not in self.sizes:
                self.sizes[path] = os.fstat(fh).st_size
            self.pending.setdefault(path, []).append((offset, bytes(data)))
            self.sizes[path] = max(self.sizes[path], offset + len(data))
        return len(data)

    def truncate(self, path, length, fh=None):
        if path == CONTROL:
            return
        with self._mutex:
            os.truncate(self._full(path), length)
            if path in self.pending:
                kept = [(at, d[: length - at]) for at, d in self.pending[path] if at < length]
                self.pending[path] = kept
                self.sizes[path] = length

    def fsync(self, path, datasync, fh):
        """The writes kept for this file go to the disk (whatever the descriptor synced was
        opened for: programs fdatasync read-only descriptors too)."""
        with self._mutex:
            disk = os.open(self._full(path), os.O_WRONLY)
            try:
                for at, data in self.pending.pop(path, ()):
                    os.pwrite(disk, data, at)
                self.sizes.pop(path, None)
                os.fsync(disk)
            finally:
                os.close(disk)
        return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        if path != CONTROL:
            os.close(fh)
        return 0

    def power_cut(self) -> None:
        with self._mutex:
            lost = sum(len(d) for writes in self.pending.values() for _, d in writes)
            self.pending.clear()
            self.sizes.clear()
        print(f"power cut: {lost} unsynced bytes lost", flush=True)

    # directories and names: passed through, durable at once ---------------------------------
    def readdir(self, path, fh):
        return [".", "..", *os.listdir(self._full(path))]

    def mkdir(self, path, mode):
        os.mkdir(self._full(path), mode)

    def rmdir(self, path):
        os.rmdir(self._full(path))

    def unlink(self, path):
        with self._mutex:
            os.unlink(self._full(path))
            self.pending.pop(path, None)
            self.sizes.pop(path, None)

    def rename(self, old, new):
        with self._mutex:
            os.replace(self._full(old), self._full(new))
            for table in (self.pending, self.sizes):
                if old in table:
                    table[new] = table.pop(old)
                else:
                    table.pop(new, None)

    def chmod(self, path, mode):
        os.chmod(self._full(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._full(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._full(path), times)

    def access(self, path, amode):
        if path != CONTROL and not os.access(self._full(path), amode):
            raise FuseOSError(errno.EACCES)

    def statfs(self, path):
        st = os.statvfs(self._full(path))
        return {k: getattr(st, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                            "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}


if __name__ == "__main__":
    backing, mountpoint = sys.argv[1:3]
    FUSE(PowerCutFS(backing), mountpoint, foreground=True, nothreads=False, allow_other=False)
