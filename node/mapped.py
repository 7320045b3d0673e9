"""Pack files read where their bytes lie in the page cache (private to `node/`).

Why: a block read by pread is copied out of the page cache first, then hashed and sent; read
through a mapping of its pack it is hashed and sent where it lies (a 1 GiB CAR export or GET:
+3-7 %). The hazard: a mapped page the disk fails to read (EIO), or one past the end of a
file cut short, kills the process with SIGBUS when touched, where pread raises. So a range is
viewed only when mincore(2) says all its pages are in the page cache (a page past the end of
a file is in none); else the caller reads it by pread, and meets any error there. mincore
tells the truth only to a process that owns the file or may write to it (it says "cached"
to others, since Linux 5.0): other files are not mapped. A page evicted between the check and
its use is read again on touch, unguarded: mapped pages are the last the kernel evicts, and
the bytes are used within milliseconds (hashed, then copied to the socket by the kernel,
where a failed read is EFAULT on the write, not SIGBUS). madvise(MADV_POPULATE_READ) would
guard a read from the disk too, but costs 43 us per resident MiB where mincore costs 6 and
pread's copy 60.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from collections.abc import Callable

_LOW_BIT = bytes(byte & 1 for byte in range(256))  # of mincore's bytes, only the low bit is defined


class _Buffer(ctypes.Structure):
    """Py_buffer (stable ABI since 3.11): how a read-only mapping's address is had."""

    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


class Mapping:
    """A file mapped read-only, whole as long as it was when mapped (`size`)."""

    __slots__ = ("size", "_mmap", "_address")

    def __init__(self, fd: int):
        """PermissionError: mincore would not tell the truth about the file's pages."""
        if os.fstat(fd).st_uid != os.geteuid() and not os.access(f"/proc/self/fd/{fd}", os.W_OK):
            raise PermissionError("neither owned nor writable")
        self._mmap = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)  # ValueError: an empty file
        self.size = len(self._mmap)
        self._address = _address_of(self._mmap)

    def view(self, offset: int, length: int) -> memoryview | None:
        """A read-only view of [offset, offset + length); None unless all its pages are in
        the page cache (nor are pages past the end of the file, nor those of a mapping
        closed since)."""
        start = self._address + offset
        first = start - start % mmap.PAGESIZE
        pages = ctypes.create_string_buffer(-(-(start + length - first) // mmap.PAGESIZE))
        if _mincore(first, start + length - first, pages) != 0 or 0 in pages.raw.translate(_LOW_BIT):
            return None
        try:
            return memoryview(self._mmap)[offset : offset + length]
        except ValueError:  # closed since (`close_unless_viewed`)
            return None

    @property
    def mapping(self) -> mmap.mmap:
        """What outlives this object while a view of it lives (`close_unless_viewed`)."""
        return self._mmap


def close_unless_viewed(mapping: mmap.mmap) -> bool:
    """Unmap a mapping no view holds any more (again, if it was); False while one does (its
    file must not be cut short under it then)."""
    try:
        mapping.close()
    except BufferError:
        return False
    return True


def _address_of(buffer: mmap.mmap) -> int:
    view = _Buffer()
    ctypes.pythonapi.PyObject_GetBuffer(ctypes.py_object(buffer), ctypes.byref(view), 0)
    try:
        return view.buf
    finally:
        ctypes.pythonapi.PyBuffer_Release(ctypes.byref(view))


def _load_mincore() -> Callable[[int, int, ctypes.Array], int] | None:
    """mincore(2) on a 64-bit build (a 32-bit one has no address space to map gigabyte packs
    in); None elsewhere: packs are then read by pread."""
    if sys.maxsize < 2**32:
        return None
    try:
        mincore = ctypes.CDLL(None, use_errno=True).mincore
    except (OSError, AttributeError, TypeError):
        return None
    mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
    mincore.restype = ctypes.c_int
    return mincore


_mincore = _load_mincore()
AVAILABLE = _mincore is not None
