"""Building an image: stage a root, squash it reproducibly, sign a manifest, append a trailer."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from errors import DiskFull, InvalidRequest, StorageError
from pki import Ed25519Signer, Signer
from storage import fsync_dir, have, missing_tool, run_tool

from ._format import (
    FORMAT_VERSION,
    Manifest,
    Trailer,
    check_version_string,
    encode_manifest,
    signing_message,
)
from ._runtime import etcd_layer, link_tree, normalise, runtime_layer
from ._stamp import BUILD_FILE, CODE_DIR, FAULTS, stamp

__all__ = ["CODE_DIR", "COMPRESSION_ENV", "FULL_COMPRESSION", "PACKAGES", "build_image", "default_compression",
           "os_release", "squash_args", "stage_tree"]

PACKAGES = ("errors", "lazy", "pki", "events", "boot", "fsm", "sequencer", "config", "service", "storage", "image",
            "api", "node", "specs")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*")
_COMPRESSORS = ("gzip", "zstd", "xz", "lz4", "lzo", "lzma")

BuildProgress = Callable[[str], None]
# A full image is lz4 (high-compression mode: same format, same decompression speed): every power-on mounts the
# slot afresh and decompresses the ~45 MiB of code and shared libraries the agent's start touches (mmap
# read-around faults in whole 128 KiB blocks); the kernel's lz4 does that several times faster than zstd, for
# ~4 MiB more image (bench/NOTES-boot.md: the cold chrooted import and the boot, alternated A/B)
_LEVELS = {"zstd": ["-Xcompression-level", "3"], "lz4": ["-Xhc"]}
FULL_COMPRESSION = "lz4"
# lz4's high-compression mode squashes a full root in ~7 s where zstd takes ~0.6 s: a host that builds many images
# whose power-on it does not time (the test suite: dozens of builds) names a quicker one here
COMPRESSION_ENV = "GRAVEN_IMAGE_COMPRESSION"


def default_compression(code_only: bool) -> str:
    """gzip for a code-only image; for a full one ``$GRAVEN_IMAGE_COMPRESSION`` if set, else lz4."""
    if code_only:
        return "gzip"
    chosen = os.environ.get(COMPRESSION_ENV) or FULL_COMPRESSION
    if chosen not in _COMPRESSORS:
        raise InvalidRequest(f"${COMPRESSION_ENV}={chosen!r} is not a squashfs compression "
                             f"(choices: {', '.join(_COMPRESSORS)})")
    return chosen


def squash_args(tree: Path, out: Path, compression: str) -> list[str]:
    """The mksquashfs command that squashes ``tree`` into ``out`` reproducibly (no times, owners or xattrs)."""
    return ["mksquashfs", str(tree), str(out), "-reproducible", "-all-root", "-noappend", "-no-xattrs", "-mkfs-time",
            "0", "-all-time", "0", "-comp", compression, *_LEVELS.get(compression, []), "-quiet", "-no-progress"]


def os_release(version: str) -> bytes:
    return (
        'NAME="Graven"\n'
        "ID=graven\n"
        f"VERSION_ID={version}\n"
        f'VERSION="{version}"\n'
        f'PRETTY_NAME="Graven {version}"\n'
        f"IMAGE_VERSION={version}\n"
    ).encode()


@contextlib.contextmanager
def _io(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"{what}: no space left on device", path=exc.filename) from exc
        raise StorageError(f"{what}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else ""),
                           path=exc.filename) from exc


def _run(cmd: list[str]) -> None:
    # mksquashfs refuses SOURCE_DATE_EPOCH alongside explicit times; ours are always explicit (0)
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    run_tool(cmd, timeout=600, env=env)


def default_source_root() -> Path:
    return Path(__file__).resolve().parent.parent


def stage_tree(
    stage: Path,
    version: str,
    *,
    source_root: Path,
    overlay: Path | None = None,
    fault: str | None = None,
) -> None:
    """Fill ``stage`` with the image's root: os-release, the agent's code with its stamp, the overlay."""
    (stage / "etc").mkdir(parents=True, exist_ok=True)
    (stage / "etc" / "os-release").write_bytes(os_release(version))
    code = stage / CODE_DIR
    code.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        src = source_root / name
        if src.is_dir():
            shutil.copytree(src, code / name, ignore=_IGNORE, symlinks=True)
    (code / BUILD_FILE).write_bytes(stamp(version, fault))
    if overlay is not None:
        shutil.copytree(overlay, stage, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    _compile(stage, code)
    normalise(stage)


def _compile(stage: Path, code: Path) -> None:
    """Bytecode for the image's own sources, as an installed package has it: the agent, started from a
    read-only root, would otherwise compile every module at every boot (~100 ms). Hash-based pycs carry no
    timestamps, and paths are recorded as on the node (``/usr/lib/graven/...``), so the build stays
    reproducible; a fresh interpreter compiles them so that nothing of this process leaks into the bytes.
    Unchecked: the image is verified and read-only, so its sources cannot drift from their bytecode, and
    checking would read every imported module's source too at every boot (~120 files, ~1 MiB of the cold
    squashfs; the sources stay for tracebacks). A module that does not compile gets no bytecode: signing does
    not judge code, the node will."""
    script = ("import compileall, py_compile, sys; compileall.compile_dir(sys.argv[1], quiet=2, workers=1, "
              "stripdir=sys.argv[2], prependdir='/', "
              "invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)")
    _run([sys.executable, "-I", "-c", script, str(code), str(stage)])


def _as_signer(key: Ed25519PrivateKey | Signer) -> Signer:
    return Ed25519Signer(key) if isinstance(key, Ed25519PrivateKey) else key


def _sha256_file(path: Path) -> tuple[int, bytes]:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return f.tell(), digest.digest()


def build_image(
    version: str,
    signing_key: Ed25519PrivateKey | Signer,
    out_path: Path | str,
    *,
    overlay: Path | str | None = None,
    fault: str | None = None,
    source_root: Path | str | None = None,
    created: int | None = None,
    compression: str | None = None,
    progress: BuildProgress | None = None,
    code_only: bool = False,
    etcd: bool | None = None,
) -> Manifest:
    """Build a signed image file at ``out_path`` and return its manifest.

    The image is a self-contained OS root: the runtime layer (``image._runtime``: interpreter, trimmed standard
    library, dependencies, shared libraries, as bytecode; cached between builds) under the stamped code and
    ``etc/os-release``. ``code_only``: the old lightweight image, the code and os-release alone (it runs only on
    a host's interpreter, with the process provisioner). ``etcd``: a full image carries the host's etcd and
    etcdctl (``image._runtime.etcd_layer``) for controlplane nodes: None when the host has them, True required
    (an error when it has none), False never. The same inputs, version, fault, key and ``created``
    give the same bytes. ``created`` defaults to ``$SOURCE_DATE_EPOCH``, else the current time. Compression:
    lz4 in its high-compression mode for a full image (the fastest to read at power-on; ``$GRAVEN_IMAGE_COMPRESSION``
    names another), gzip for a code-only one.
    """
    say = progress or (lambda _msg: None)
    try:
        check_version_string(version)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    if fault is not None and fault not in FAULTS:
        raise InvalidRequest(f"unknown fault {fault!r} (faults: {', '.join(FAULTS)})")
    if compression is None:
        compression = default_compression(code_only)
    if etcd and code_only:
        raise InvalidRequest("a code-only image carries no etcd (a process machine runs the host's): drop --with-etcd "
                             "or --code-only")
    if compression not in _COMPRESSORS:
        raise InvalidRequest(f"unknown compression {compression!r} (choices: {', '.join(_COMPRESSORS)})")
    root = Path(source_root) if source_root is not None else default_source_root()
    overlay_dir = Path(overlay) if overlay is not None else None
    if overlay_dir is not None and not overlay_dir.is_dir():
        raise InvalidRequest(f"overlay {overlay_dir} is not a directory", path=str(overlay_dir))
    if created is None:
        created = int(os.environ.get("SOURCE_DATE_EPOCH") or time.time())
    signer = _as_signer(signing_key)
    out = Path(out_path).absolute()

    with _io(f"build image {out}"):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=".graven-build-", dir=out.parent))
    try:
        stage = tmp_dir / "root"
        say(f"staging {version}: code from {root}" + (f", overlay {overlay_dir}" if overlay_dir else "")
            + (f", fault {fault}" if fault else ""))
        if not have("mksquashfs"):  # before the runtime layer, which takes a while to build the first time
            raise missing_tool("mksquashfs", "mksquashfs")
        layer = None if code_only else runtime_layer(root, progress=say)
        etcd_part = None if code_only or etcd is False else etcd_layer(progress=say)
        if etcd and etcd_part is None:
            raise missing_tool("etcd", "gravenctl image build --with-etcd")
        if layer is not None and etcd_part is None and etcd is None:
            say("etcd: not on this host (Debian's etcd-server): this image runs no etcd on controlplane nodes")
        with _io(f"stage image tree in {stage}"):
            stage_tree(stage, version, source_root=root, overlay=overlay_dir, fault=fault)
            # last: what the code and overlay put there wins, and nothing writes the caches
            for part in (layer, etcd_part):
                if part is not None:
                    link_tree(part.root, stage)
        payload = tmp_dir / "payload.sqfs"
        say(f"squashing the root with mksquashfs ({compression})")
        _run(squash_args(stage, payload, compression))
        with _io(f"hash payload {payload}"):
            size, digest = _sha256_file(payload)
        manifest = Manifest(
            format=FORMAT_VERSION, version=version, payload_size=size, payload_sha256=digest,
            created=int(created), key_id=signer.key_id,
        )
        manifest_bytes = encode_manifest(manifest)
        say(f"signing manifest with key {signer.key_id}: payload {size} bytes, sha256 {digest.hex()[:16]}")
        signature = signer.sign(signing_message(manifest_bytes))
        trailer = Trailer.for_parts(size, len(manifest_bytes), len(signature))
        partial = tmp_dir / "image.partial"
        with _io(f"write image {out}"):
            shutil.copyfile(payload, partial)
            with open(partial, "ab") as f:
                f.write(manifest_bytes + signature + trailer.pack())
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, out)
            fsync_dir(out.parent)
        say(f"wrote {out} ({trailer.image_length} bytes)")
        return manifest
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
