"""Writing an image into a slot area and reading back what is there; shared by both disk backends.

The write follows RAUC's protocol: the slot record is first set to ``pending`` (the slot holds no image
from that moment), the image is copied raw to offset 0 and fsynced, the page cache is dropped and the
payload and tail are read back and compared with the verified digests, and only then the record says
``ok``. A crash anywhere leaves the slot ``pending``, which no boot accepts.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from errors import BadImage, DiskFull, InvariantViolation, StorageError

from ._slot import (
    SLOT_RECORD_SIZE,
    InstallableImage,
    Label,
    SlotInfo,
    SlotState,
    decode_slot_record,
    encode_slot_record,
)
from ._sys import os_errors

__all__ = ["CHUNK", "Progress", "SlotArea", "area_size", "require_installable", "sha256_fd_range"]

Progress = Callable[[str, int, int], None]
"""``progress(phase, done_bytes, total_bytes)`` with phase ``"write"`` then ``"verify"``."""

CHUNK = 8 << 20


def require_installable(image: object) -> InstallableImage:
    """The guard at every slot write and mount: only a verified image passes."""
    sealed = InstallableImage._sealed_to
    if not isinstance(image, InstallableImage) or sealed is None or type(image) is not sealed:
        raise InvariantViolation(
            f"only an image.VerifiedImage may be written to or mounted from a slot, not {type(image).__name__}"
        )
    return image


def area_size(path: Path) -> int:
    """Size in bytes of a raw area: a regular file's length or a block device's capacity."""
    with os_errors(f"size of {path}"):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)


def sha256_fd_range(fd: int, offset: int, length: int, progress: Callable[[int], None] | None = None) -> bytes:
    """SHA-256 of ``length`` bytes at ``offset``; short reads are an error (the area is truncated)."""
    digest = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    done = 0
    while done < length:
        want = min(len(buf), length - done)
        got = os.preadv(fd, [view[:want]], offset + done)
        if got <= 0:
            raise StorageError(f"short read: {done} of {length} bytes at offset {offset}")
        digest.update(view[:got])
        done += got
        if progress is not None and (done % CHUNK < got or done == length):
            progress(done)
    return digest.digest()


class SlotArea:
    """One slot's raw bytes: the image at offset 0, the slot record in the last 4 KiB."""

    def __init__(self, path: Path, label: Label) -> None:
        self.path = path
        self.label = label

    @property
    def size(self) -> int:
        return area_size(self.path)

    @property
    def capacity(self) -> int:
        return max(0, self.size - SLOT_RECORD_SIZE)

    def read_info(self) -> SlotInfo | None:
        with os_errors(f"read slot record of {self.label} ({self.path})"):
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                end = os.lseek(fd, 0, os.SEEK_END)
                if end < SLOT_RECORD_SIZE:
                    return None
                return decode_slot_record(os.pread(fd, SLOT_RECORD_SIZE, end - SLOT_RECORD_SIZE))
            finally:
                os.close(fd)

    def write_info(self, info: SlotInfo | None) -> None:
        data = encode_slot_record(info) if info is not None else bytes(SLOT_RECORD_SIZE)
        with os_errors(f"write slot record of {self.label} ({self.path})"):
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                end = os.lseek(fd, 0, os.SEEK_END)
                os.pwrite(fd, data, end - SLOT_RECORD_SIZE)
                os.fsync(fd)
            finally:
                os.close(fd)

    def clear(self, head: int = 1 << 20) -> None:
        """Forget what the slot holds: zero the record and the first ``head`` bytes (the squashfs header)."""
        self.write_info(None)
        with os_errors(f"clear slot {self.label} ({self.path})"):
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.pwrite(fd, bytes(min(head, self.capacity)), 0)
                os.fsync(fd)
            finally:
                os.close(fd)

    def write_image(self, image: InstallableImage, progress: Progress | None = None) -> SlotInfo:
        image = require_installable(image)
        capacity = self.capacity
        if image.image_size > capacity:
            raise DiskFull(
                f"image {image.version} of {image.image_size} bytes does not fit slot {self.label} "
                f"({capacity} bytes usable)",
                slot=str(self.label), image_size=image.image_size, capacity=capacity,
            )
        self.write_info(image.slot_info(SlotState.PENDING))
        self._copy(image, progress)
        payload, tail = self._read_back(image, progress)
        if payload != image.payload_sha256 or tail != image.tail:
            self.write_info(image.slot_info(SlotState.FAILED))
            what = "payload digest" if payload != image.payload_sha256 else "manifest, signature or trailer"
            raise BadImage(
                f"slot {self.label} does not hold the verified image {image.version} after writing: its {what} "
                f"differs (read back {payload.hex()[:16]}, verified {image.payload_sha256.hex()[:16]}); "
                f"did {image.path} change after verification?",
                slot=str(self.label), path=str(image.path),
            )
        info = image.slot_info(SlotState.OK)
        self.write_info(info)
        return info

    def _copy(self, image: InstallableImage, progress: Progress | None) -> None:
        total = image.image_size
        with os_errors(f"write image {image.path} to slot {self.label} ({self.path})"):
            src = os.open(image.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                dst = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    _copy_range(src, dst, total, (lambda d: progress("write", d, total)) if progress else None)
                    os.fsync(dst)
                    if stat.S_ISREG(os.fstat(dst).st_mode) or stat.S_ISBLK(os.fstat(dst).st_mode):
                        os.posix_fadvise(dst, 0, total, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(dst)
            finally:
                os.close(src)

    def _read_back(self, image: InstallableImage, progress: Progress | None) -> tuple[bytes, bytes]:
        size = image.payload_size
        with os_errors(f"read back slot {self.label} ({self.path})"):
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.posix_fadvise(fd, 0, image.image_size, os.POSIX_FADV_DONTNEED)
                report = (lambda d: progress("verify", d, size)) if progress else None
                payload = sha256_fd_range(fd, 0, size, report)
                tail = os.pread(fd, image.image_size - size, size)
            finally:
                os.close(fd)
        return payload, tail


def _copy_range(src: int, dst: int, total: int, progress: Callable[[int], None] | None) -> None:
    """Copy ``total`` bytes from offset 0 of ``src`` to offset 0 of ``dst``, in the kernel where it can."""
    done = 0
    method = "copy_file_range"
    buf: bytearray | None = None
    os.lseek(dst, 0, os.SEEK_SET)
    while done < total:
        want = min(CHUNK, total - done)
        if method == "copy_file_range":
            try:
                n = os.copy_file_range(src, dst, want, done, done)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS, errno.EBADF):
                    raise
                method = "sendfile"
                continue
        elif method == "sendfile":
            try:
                os.lseek(dst, done, os.SEEK_SET)
                n = os.sendfile(dst, src, done, want)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                method = "readwrite"
                continue
        else:
            buf = buf if buf is not None else bytearray(CHUNK)
            view = memoryview(buf)[:want]
            n = os.preadv(src, [view], done)
            written = 0
            while written < n:
                written += os.pwrite(dst, view[written:n], done + written)
        if n <= 0:
            raise StorageError(f"source ended after {done} of {total} bytes")
        done += n
        if progress is not None:
            progress(done)
