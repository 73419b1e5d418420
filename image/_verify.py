"""Verifying an image: the only way to a ``VerifiedImage``.

``verify()`` reads the trailer, checks that the file's parts sit exactly where it says and nowhere else,
decodes the manifest and insists on its canonical bytes, checks that a trusted key signed it, and
hashes the payload against the signed digest. Anything else is refused with ``BadImage`` (or
``UntrustedKey``) naming what is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from boot import Slot
from errors import BadImage, GravenError, NotFound, StorageError, UntrustedKey
from pki import verify_signature
from storage import DiskBase, InstallableImage

from ._format import (
    FORMAT_VERSION,
    MAX_MANIFEST,
    SIGNATURE_SIZE,
    SQUASHFS_MAGIC,
    TRAILER_MAGIC,
    TRAILER_SIZE,
    Manifest,
    Trailer,
    decode_manifest,
    signing_message,
)
from ._keys import load_public_key, trusted_key_ids

__all__ = ["ImageInfo", "VerifiedImage", "inspect", "verify", "verify_slot"]

_TOKEN = object()
_BUFFER = 1 << 20
_SCAN = 1 << 20  # how far back from the end to look for a trailer followed by appended bytes

TrustedKeys = Iterable[bytes | Ed25519PublicKey]
# the keys, or how to load them: a boot loads them (the persisted config) while the payload hashes on a thread
KeySource = TrustedKeys | Callable[[], TrustedKeys]
HashProgress = Callable[[int, int], None]


class VerifiedImage(InstallableImage):
    """An image whose signature and payload digest were checked by ``verify()``; immutable.

    There is no public constructor: ``VerifiedImage(...)`` raises ``TypeError``.
    """

    __slots__ = ("image_size", "key_id", "manifest", "manifest_bytes", "path", "payload_sha256",
                 "payload_size", "signature", "tail", "trailer", "version")

    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes
    trailer: Trailer

    def __init__(self, token: object = None, *, path: Path | None = None, manifest: Manifest | None = None,
                 manifest_bytes: bytes = b"", signature: bytes = b"", trailer: Trailer | None = None) -> None:
        if token is not _TOKEN:
            raise TypeError("VerifiedImage has no public constructor; use image.verify()")
        if path is None or manifest is None or trailer is None:
            raise TypeError("a VerifiedImage needs its path, manifest and trailer")
        self._init(path=path, manifest=manifest, manifest_bytes=manifest_bytes, signature=signature, trailer=trailer)

    def _init(self, *, path: Path, manifest: Manifest, manifest_bytes: bytes, signature: bytes,
              trailer: Trailer) -> None:
        fields = {
            "path": path, "manifest": manifest, "manifest_bytes": manifest_bytes, "signature": signature,
            "trailer": trailer, "image_size": trailer.image_length, "payload_size": manifest.payload_size,
            "payload_sha256": manifest.payload_sha256, "version": manifest.version, "key_id": manifest.key_id,
            "tail": manifest_bytes + signature + trailer.pack(),
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"VerifiedImage is immutable; cannot set {name}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"VerifiedImage is immutable; cannot delete {name}")

    def __reduce__(self) -> NoReturn:
        raise TypeError("a VerifiedImage cannot be copied or pickled; verify the image where it is used")

    def __repr__(self) -> str:
        return f"VerifiedImage({self.version!r}, payload={self.payload_sha256.hex()[:16]}, key={self.key_id})"

    @property
    def digest(self) -> str:
        """The image's identity: its payload SHA-256, hex."""
        return self.payload_sha256.hex()

    def to_dict(self) -> dict[str, object]:
        return {"verified": True, "path": str(self.path), "image_size": self.image_size, **self.manifest.to_dict()}


@dataclass(frozen=True)
class ImageInfo:
    """What an image file *claims*, read without checking signature or digest. Not to be trusted."""

    path: Path
    size: int
    trailer: Trailer
    manifest: Manifest
    canonical: bool
    signature: bytes
    problems: tuple[str, ...] = field(default=())
    verified: Literal[False] = False

    def to_dict(self) -> dict[str, object]:
        return {
            "verified": False,
            "warning": "UNVERIFIED: read without checking the signature or the payload digest",
            "path": str(self.path),
            "size": self.size,
            "manifest": self.manifest.to_dict(),
            "manifest_canonical": self.canonical,
            "signature": self.signature.hex(),
            "trailer": self.trailer.to_dict(),
            "problems": list(self.problems),
        }


def _bad(path: Path, reason: str, **details: object) -> BadImage:
    return BadImage(f"image {path} refused: {reason}", path=str(path), **details)


class _Reader:
    """An open image (file or slot device) of ``size`` bytes; OSError becomes NotFound/StorageError."""

    def __init__(self, path: Path, length: int | None) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise NotFound(f"image {path} does not exist", path=str(path)) from exc
        except OSError as exc:
            raise StorageError(f"cannot open image {path}: {exc.strerror or exc}", path=str(path)) from exc
        try:
            mode = os.fstat(self.fd).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
                raise _bad(path, "not a regular file or block device")
            actual = os.lseek(self.fd, 0, os.SEEK_END)
        except BaseException:
            os.close(self.fd)
            raise
        if length is not None and length > actual:
            os.close(self.fd)
            raise _bad(path, f"truncated: {actual} bytes, {length} expected")
        self.size = actual if length is None else length

    def pread(self, n: int, offset: int) -> bytes:
        try:
            data = os.pread(self.fd, n, offset)
        except OSError as exc:
            raise StorageError(f"cannot read image {self.path}: {exc.strerror or exc}", path=str(self.path)) from exc
        if len(data) != n:
            raise _bad(self.path, f"truncated: short read of {len(data)} of {n} bytes at offset {offset}")
        return data

    def sha256(self, length: int, progress: HashProgress | None) -> bytes:
        digest = hashlib.sha256()
        buf = bytearray(_BUFFER)
        view = memoryview(buf)
        done = 0
        try:
            os.posix_fadvise(self.fd, 0, length, os.POSIX_FADV_SEQUENTIAL)
            os.lseek(self.fd, 0, os.SEEK_SET)
            with open(self.fd, "rb", buffering=0, closefd=False) as f:
                while done < length:
                    n = f.readinto(view[: min(_BUFFER, length - done)])
                    if not n:
                        raise _bad(self.path, f"truncated: payload ends after {done} of {length} bytes")
                    digest.update(view[:n])
                    done += n
                    if progress is not None:
                        progress(done, length)
        except OSError as exc:
            raise StorageError(f"cannot read image {self.path}: {exc.strerror or exc}", path=str(self.path)) from exc
        return digest.digest()

    def sha256_mapped(self, length: int) -> bytes:
        """``sha256`` in one hashlib call over a read-only mapping, which releases the GIL once for the whole
        payload: a thread reading buffer by buffer beside busy Python code would wait for the GIL after each
        read and each update (up to the 5 ms switch interval). A file that cannot be mapped is read."""
        if length == 0:
            return hashlib.sha256().digest()
        try:
            mapping = mmap.mmap(self.fd, length, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return self.sha256(length, None)
        with mapping:
            mapping.madvise(mmap.MADV_SEQUENTIAL)
            return hashlib.sha256(mapping).digest()

    def close(self) -> None:
        os.close(self.fd)


class _Hashing:
    """The payload's SHA-256 on a thread: file reads and hashlib release the GIL, so the caller's own work meanwhile
    (a boot loads its trusted keys: the persisted config and the code that reads it) runs on the other core."""

    def __init__(self, r: _Reader, length: int) -> None:
        self._digest: bytes | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(r, length), name="image-hash", daemon=True)
        self._thread.start()

    def _run(self, r: _Reader, length: int) -> None:
        try:
            self._digest = r.sha256_mapped(length)
        except BaseException as exc:  # handed to the caller, which raises it where verify() would have
            self._error = exc

    def join(self) -> None:
        self._thread.join()

    def digest(self) -> bytes:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._digest is not None
        return self._digest


def _locate(r: _Reader) -> Trailer:
    """The trailer, checked for shape and for the exact placement of every part."""
    path, size = r.path, r.size
    if size < TRAILER_SIZE:
        raise _bad(path, f"truncated: {size} bytes is less than the {TRAILER_SIZE}-byte trailer")
    trailer = Trailer.unpack(r.pread(TRAILER_SIZE, size - TRAILER_SIZE))
    if trailer.magic != TRAILER_MAGIC:
        raise _bad(path, _explain_missing_trailer(r))
    if trailer.format != FORMAT_VERSION:
        raise _bad(path, f"unknown image format version {trailer.format} (this verifier reads {FORMAT_VERSION})",
                   format=trailer.format)
    if trailer.trailer_length != TRAILER_SIZE or trailer.reserved or any(trailer.reserved_tail):
        raise _bad(path, "malformed trailer: wrong length or non-zero reserved bytes")
    if trailer.image_length != size:
        if trailer.image_length > size:
            raise _bad(path, f"truncated: trailer says {trailer.image_length} bytes, file has {size}")
        raise _bad(path, f"trailer says the image is {trailer.image_length} bytes, file has {size}")
    if trailer.signature_length == 0:
        raise _bad(path, "missing signature")
    if trailer.signature_length != SIGNATURE_SIZE:
        raise _bad(path, f"bad signature: {trailer.signature_length} bytes, an Ed25519 signature is {SIGNATURE_SIZE}")
    if not 0 < trailer.manifest_length <= MAX_MANIFEST:
        raise _bad(path, f"manifest length {trailer.manifest_length} is out of range (1..{MAX_MANIFEST})")
    if (trailer.manifest_offset == 0
            or trailer.manifest_offset + trailer.manifest_length != trailer.signature_offset
            or trailer.signature_offset + trailer.signature_length + TRAILER_SIZE != size):
        raise _bad(path, "trailer offsets do not tile the file (payload | manifest | signature | trailer)")
    return trailer


def _explain_missing_trailer(r: _Reader) -> str:
    """Why the last 64 bytes are not a trailer: appended bytes, a truncation, or not an image at all."""
    start = max(0, r.size - _SCAN - TRAILER_SIZE)
    tail = r.pread(r.size - start, start)
    pos = tail.rfind(TRAILER_MAGIC)
    while pos != -1:
        if pos + TRAILER_SIZE <= len(tail):
            t = Trailer.unpack(tail[pos : pos + TRAILER_SIZE])
            if t.image_length == start + pos + TRAILER_SIZE:
                return f"{r.size - t.image_length} bytes appended after the image trailer (bad magic at the end)"
        pos = tail.rfind(TRAILER_MAGIC, 0, pos)
    if r.pread(len(SQUASHFS_MAGIC), 0) == SQUASHFS_MAGIC:
        return "bad magic: no image trailer at the end (truncated file?)"
    return "bad magic: not a Graven image"


def _read_parts(r: _Reader) -> tuple[Trailer, bytes, bytes, Manifest, bool]:
    trailer = _locate(r)
    manifest_bytes = r.pread(trailer.manifest_length, trailer.manifest_offset)
    signature = r.pread(trailer.signature_length, trailer.signature_offset)
    try:
        manifest, canonical = decode_manifest(manifest_bytes)
    except ValueError as exc:
        raise _bad(r.path, str(exc)) from exc
    return trailer, manifest_bytes, signature, manifest, canonical


def _trusted(keys: TrustedKeys) -> dict[str, bytes]:
    return trusted_key_ids(load_public_key(k) for k in keys)


def verify(
    path: Path | str,
    trusted_keys: KeySource,
    *,
    length: int | None = None,
    progress: HashProgress | None = None,
) -> VerifiedImage:
    """Verify the image at ``path`` (its first ``length`` bytes, for an image inside a slot).

    ``trusted_keys`` may be a function that loads them: it is called while the payload hashes on a thread (the
    checks and their order are the same: no trusted key, then the trailer and manifest, the key, the signature,
    the digest)."""
    path = Path(path)
    if callable(trusted_keys):
        return _verify_hashing(path, trusted_keys, length)
    trusted = _trusted(trusted_keys)
    if not trusted:
        raise UntrustedKey("no trusted image keys were given; nothing can verify")
    r = _Reader(path, length)
    try:
        return _check(r, trusted, lambda size: r.sha256(size, progress))
    finally:
        r.close()


def _verify_hashing(path: Path, load_keys: Callable[[], TrustedKeys], length: int | None) -> VerifiedImage:
    r = _Reader(path, length)
    hashing = None
    try:
        with contextlib.suppress(GravenError):  # _check raises it again, after the keys' check as without a thread
            # the payload ends where the manifest starts (_check refuses a manifest that says otherwise)
            hashing = _Hashing(r, _locate(r).manifest_offset)
        trusted = _trusted(load_keys())
        if not trusted:
            raise UntrustedKey("no trusted image keys were given; nothing can verify")
        return _check(r, trusted, lambda size: hashing.digest() if hashing is not None else r.sha256(size, None))
    finally:
        if hashing is not None:
            hashing.join()  # it reads through r's descriptor
        r.close()


def _check(r: _Reader, trusted: dict[str, bytes], payload_digest: Callable[[int], bytes]) -> VerifiedImage:
    path = r.path
    trailer, manifest_bytes, signature, manifest, canonical = _read_parts(r)
    if not canonical:
        raise _bad(path, "manifest is not in canonical encoding (msgpack with sorted keys)")
    if manifest.format != FORMAT_VERSION:
        raise _bad(path, f"unknown manifest format version {manifest.format} (this verifier reads "
                         f"{FORMAT_VERSION})", format=manifest.format)
    public = trusted.get(manifest.key_id)
    if public is None:
        raise UntrustedKey(
            f"image {path} refused: {manifest.version} is signed by key {manifest.key_id}, which is not trusted "
            f"(trusted: {', '.join(sorted(trusted))})",
            path=str(path), key_id=manifest.key_id,
        )
    if not verify_signature(public, signature, signing_message(manifest_bytes)):
        raise _bad(path, f"bad signature: the manifest does not verify with key {manifest.key_id}")
    if manifest.payload_size != trailer.manifest_offset:
        raise _bad(path, f"payload size mismatch: manifest says {manifest.payload_size} bytes, file holds "
                         f"{trailer.manifest_offset}")
    if len(manifest.payload_sha256) != 32:
        raise _bad(path, "manifest payload digest is not 32 bytes")
    got = payload_digest(manifest.payload_size)
    if got != manifest.payload_sha256:
        raise _bad(path, f"payload digest mismatch: manifest says {manifest.payload_sha256.hex()[:16]}, "
                         f"payload hashes to {got.hex()[:16]}")
    return VerifiedImage(_TOKEN, path=path, manifest=manifest, manifest_bytes=manifest_bytes,
                         signature=signature, trailer=trailer)


def verify_slot(disk: DiskBase, slot: Slot | str, trusted_keys: KeySource,
                progress: HashProgress | None = None) -> VerifiedImage:
    """Verify the image a disk's slot holds, in place (``trusted_keys``: as ``verify``'s)."""
    slot = Slot.parse(slot)
    info = disk.slot_info(slot)
    if info is None:
        raise BadImage(f"slot {slot.value} holds no image", slot=slot.value)
    if not info.ok:
        raise BadImage(f"slot {slot.value}: the last write of {info.version} did not complete ({info.state.value})",
                       slot=slot.value)
    image = verify(disk.slot_path(slot), trusted_keys, length=info.image_size, progress=progress)
    if image.payload_sha256 != info.payload_sha256:
        raise BadImage(f"slot {slot.value}: the image differs from the slot record", slot=slot.value)
    return image


def inspect(path: Path | str, *, length: int | None = None) -> ImageInfo:
    """What the image claims (manifest, trailer, signature bytes) WITHOUT verifying anything."""
    path = Path(path)
    r = _Reader(path, length)
    try:
        trailer, _manifest_bytes, signature, manifest, canonical = _read_parts(r)
    finally:
        r.close()
    problems = []
    if not canonical:
        problems.append("manifest is not in canonical encoding")
    if manifest.format != FORMAT_VERSION:
        problems.append(f"unknown manifest format version {manifest.format}")
    if manifest.payload_size != trailer.manifest_offset:
        problems.append(f"manifest payload size {manifest.payload_size} != {trailer.manifest_offset} bytes in file")
    return ImageInfo(path=path, size=r.size, trailer=trailer, manifest=manifest, canonical=canonical,
                     signature=signature, problems=tuple(problems))
