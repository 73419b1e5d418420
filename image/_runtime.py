"""The runtime layer of a full OS image: the interpreter, a trimmed standard library, the dependencies and the
shared libraries they link against, as bytecode; built once from this host's interpreter and cached.

What the layer holds (paths inside the image):
- ``usr/bin/python3.X`` (the host interpreter's real binary, stripped when ``strip`` exists) and a ``python3``
  link; ``PYTHONHOME=/usr`` makes it find
- ``usr/lib/python3.X``: the standard library without what the node never imports (tests, idlelib, tkinter,
  turtledemo, ensurepip, lib2to3, pydoc_data, distutils, venv, the static ``config-*`` library), its
  ``lib-dynload`` extension modules (no test modules, no ``_tkinter``) and ``site-packages`` with the project's
  runtime dependencies, resolved from its installed metadata (no pip, no setuptools, no build-only grpcio-tools);
- every shared library the interpreter and each extension module need (the ``ldd`` closure), at the path
  ``ldd`` found it, except libraries of the interpreter's own prefix (``libpython``), which go to the
  dynamic loader's default directory beside ``libc``;
- the disk tools a node's install runs on a block disk (``DISK_TOOLS``: ``sfdisk``, ``mkfs.ext4``, ``partx`` at
  ``usr/bin``, the host's, with their ``ldd`` closure), as Talos's rootfs carries its mkfs: programs, not a shell;
- empty mount points (``proc``, ``sys``, ``dev``, ``run``, ``tmp``, ``machine``) and ``etc/hosts``.
The etcd part (``etcd_layer``, its own cached layer, staged into the same squashfs): Debian's ``etcd`` and
``etcdctl`` at ``usr/bin``, which controlplane nodes run from their own root; its size is reported apart from the
base image's (40 MiB limit), as Talos ships etcd apart from its OS (as a container image).
Python sources are replaced by their bytecode (legacy ``.pyc`` beside where the source was, unchecked hashes,
paths as on the node), so nothing in the layer depends on the time it was built.

The layer is cached under ``$GRAVEN_CACHE`` (default ``~/.cache/graven/runtime``) in a directory named by a
digest of its inputs (this module, the interpreter, its standard library's location, the dependencies and
their versions), so that image builds, and the tests' many builds, stage it by hard links in milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from errors import StorageError
from storage import have, missing_tool

__all__ = ["DISK_TOOLS", "ETCD_BINARIES", "FORBIDDEN", "MOUNT_POINTS", "PYTHON", "SITE", "STDLIB", "RuntimeLayer",
           "cache_dir", "etcd_layer", "forbidden_paths", "link_tree", "normalise", "runtime_layer"]

PY_VER = f"{sys.version_info.major}.{sys.version_info.minor}"
PYTHON = f"usr/bin/python{PY_VER}"  # the interpreter, inside the image
STDLIB = f"usr/lib/python{PY_VER}"
SITE = f"{STDLIB}/site-packages"
MOUNT_POINTS = ("proc", "sys", "dev", "run", "tmp", "machine")
# the standard library's top-level entries the node never imports
_STDLIB_DROP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "distutils", "venv",
                "site-packages", "__pycache__", "turtle.py", "__phello__", "__hello__.py", "antigravity.py", "this.py",
                "curses", "dbm", "pydoc.py", "doctest.py"}
# ... and extension modules that need a terminal, a database or NIS (and pull their libraries into the closure)
_DYNLOAD_DROP = re.compile(r"^(_test|_tkinter|_ctypes_test|xxlimited|xxsubtype|_xxtestfuzz|_xxsubinterpreters|_curses"
                           r"|readline|_dbm|_gdbm|nis|_crypt)")
# distributions never shipped: installers, build-time tools, and what only gravenctl uses (the dashboard's rich)
_DIST_DROP = {"pip", "setuptools", "wheel", "grpcio-tools", "distribute", "rich", "pygments", "markdown-it-py",
              "mdurl"}
_TREE_DROP = {"__pycache__", "tests", "test"}
# what the agent runs to partition and format a block disk (storage.BlockDisk), in the image's usr/bin
DISK_TOOLS = ("sfdisk", "mkfs.ext4", "partx")
# the etcd part (controlplane nodes): the server, and etcd's own client, which restores snapshots (--recover-from)
ETCD_BINARIES = ("etcd", "etcdctl")
# names in a squashfs listing that must never be in an image: shells, busybox, package managers, pip
FORBIDDEN = re.compile(r"(^|/)(sh|bash|dash|ash|zsh|busybox|toybox|apt|apt-get|dpkg|rpm|yum|dnf|apk|pip|pip3"
                       r"|pip3\.\d+|ensurepip|setuptools)(/|$)")


@dataclass(frozen=True)
class RuntimeLayer:
    root: Path  # the cached tree, read-only by convention: stage it by hard links, never write through them
    key: str  # digest of the inputs
    contents: dict[str, int]  # bytes per part (interpreter, stdlib, lib-dynload, site-packages/<dist>, libs)


def cache_dir() -> Path:
    env = os.environ.get("GRAVEN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "graven" / "runtime"


def forbidden_paths(listing: Iterable[str]) -> list[str]:
    """The paths of a squashfs listing (``unsquashfs -l``) that name a shell, busybox, package manager or pip."""
    return [p for p in listing if FORBIDDEN.search(p.strip().removeprefix("squashfs-root").lstrip("/"))]


# -- inputs ---------------------------------------------------------------------------------------------------
def _requirement_name(req: str) -> str | None:
    """The distribution a requirement names, or None when its marker excludes it here (extras, other platforms)."""
    spec, _, marker = req.partition(";")
    if "extra" in marker:
        return None
    if marker.strip():
        try:
            from packaging.markers import Marker

            if not Marker(marker).evaluate():
                return None
        except ImportError:
            pass
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    return m.group(1) if m else None


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(source_root: Path) -> list[str]:
    pyproject = source_root / "pyproject.toml"
    if pyproject.is_file():
        deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    else:
        deps = metadata.requires("graven") or []
    return [n for n in (_requirement_name(d) for d in deps) if n]


def resolve_dists(roots: Iterable[str]) -> list[metadata.Distribution]:
    """The installed distributions ``roots`` need at run time, and theirs, minus installers and build tools."""
    found: dict[str, metadata.Distribution] = {}
    todo = [_norm(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in found or name in _DIST_DROP:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as exc:
            raise StorageError(f"runtime layer: dependency {name} is not installed in {sys.prefix}") from exc
        found[name] = dist
        todo += [_norm(n) for n in (_requirement_name(r) for r in dist.requires or []) if n]
    return [found[k] for k in sorted(found)]


def _inputs(source_root: Path) -> tuple[str, list[metadata.Distribution]]:
    dists = resolve_dists(project_requirements(source_root))
    exe = Path(os.path.realpath(sys.executable))
    st = exe.stat()
    described = {
        "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "python": [str(exe), st.st_size, st.st_mtime_ns, sys.version, sys.base_prefix],
        "dists": [[d.metadata["Name"], d.version, str(d.locate_file(""))] for d in dists],
        "strip": shutil.which("strip") is not None,
        "tools": {n: [str(p), p.stat().st_size, p.stat().st_mtime_ns] for n, p in _disk_tools().items()},
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest(), dists


# -- building ------------------------------------------------------------------------------------------------
def runtime_layer(source_root: Path, *, progress: Callable[[str], None] | None = None) -> RuntimeLayer:
    """The cached layer for this interpreter and these dependencies, built first if the cache has none."""
    say = progress or (lambda _m: None)
    key, dists = _inputs(source_root)
    base = cache_dir()
    final = base / f"py{PY_VER}-{key[:20]}"
    if (final / "contents.json").is_file():
        say(f"runtime layer: cached {final}")
        return _cached(final, key)
    say(f"runtime layer: building {final} (first build for this interpreter and these dependencies)")
    if not have("ldd"):
        raise missing_tool("ldd", "ldd")
    return _publish("runtime layer", ".building-", final, key, lambda root: _build(root, dists, say))


def _cached(final: Path, key: str) -> RuntimeLayer:
    return RuntimeLayer(final / "root", key, json.loads((final / "contents.json").read_text()))


def _publish(what: str, prefix: str, final: Path, key: str, build: Callable[[Path], dict[str, int]]) -> RuntimeLayer:
    """``build(root)`` in a temporary folder beside ``final`` (it returns the contents' sizes), then renamed to
    ``final``: a cached layer is whole or absent."""
    base = final.parent
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    except OSError as exc:
        raise StorageError(f"{what} cache {base}: {exc.strerror or exc}", path=str(base)) from exc
    try:
        contents = build(tmp / "root")
        (tmp / "contents.json").write_text(json.dumps(contents, indent=1, sort_keys=True))
        try:
            os.rename(tmp, final)
        except OSError:  # another build finished first: use its layer, which is the same
            if not (final / "contents.json").is_file():
                raise
    except OSError as exc:
        raise StorageError(f"{what} {final}: {exc.strerror or exc}", path=exc.filename) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _cached(final, key)


def _build(root: Path, dists: list[metadata.Distribution], say: Callable[[str], None]) -> dict[str, int]:
    contents: dict[str, int] = {}
    exe = Path(os.path.realpath(sys.executable))
    prefix = Path(sys.base_prefix)
    stdlib = Path(sysconfig.get_paths(vars={"installed_base": sys.base_prefix, "base": sys.base_prefix})["stdlib"])
    (root / "usr/bin").mkdir(parents=True)
    _copy_file(exe, root / PYTHON)
    os.symlink(f"python{PY_VER}", root / "usr/bin/python3")
    contents["interpreter"] = _size(root / "usr/bin")
    tools = _disk_tools()
    for name, path in tools.items():
        _copy_file(path, root / "usr/bin" / name)
    contents["disk tools"] = sum((root / "usr/bin" / name).stat().st_size for name in tools)
    say(f"runtime layer: standard library from {stdlib}")
    shutil.copytree(stdlib, root / STDLIB, symlinks=False, ignore=_ignore_stdlib(stdlib))
    contents["stdlib"] = _size(root / STDLIB) - _size(root / STDLIB / "lib-dynload")
    contents["lib-dynload"] = _size(root / STDLIB / "lib-dynload")
    say(f"runtime layer: {len(dists)} dependencies: {', '.join(d.metadata['Name'] for d in dists)}")
    for dist in dists:
        contents[f"site-packages/{dist.metadata['Name']}"] = _copy_dist(dist, root / SITE)
    say("runtime layer: shared libraries (ldd closure)")
    elves = [root / PYTHON, *(root / "usr/bin" / n for n in tools), *sorted(root.glob(f"{STDLIB}/**/*.so"))]
    libs = _ldd_closure(elves, skip=(stdlib, *(Path(str(d.locate_file(""))) for d in dists)))
    libdir = next((p.parent for p in libs if p.name.startswith("libc.so")), Path("/lib/x86_64-linux-gnu"))
    for lib in libs:
        real = Path(os.path.realpath(lib))
        inside = libdir / lib.name if prefix in real.parents else lib
        _copy_file(real, root / str(inside).lstrip("/"))
    contents["shared libraries"] = sum((root / str(p).lstrip("/")).stat().st_size for p in
                                       {(libdir / lib.name if prefix in Path(os.path.realpath(lib)).parents else lib)
                                        for lib in libs})
    say("runtime layer: bytecode (sources removed)")
    _bytecode(root / STDLIB)
    for name in MOUNT_POINTS:
        (root / name).mkdir(exist_ok=True)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    normalise(root, mtime=0)
    contents["stdlib"] = _size(root / STDLIB) - _size(root / STDLIB / "lib-dynload") - _size(root / SITE)
    for dist in dists:
        contents[f"site-packages/{dist.metadata['Name']}"] = sum(
            f.stat().st_size for f in _dist_paths(dist, root / SITE) if f.is_file() and not f.is_symlink())
    return contents


def _disk_tools() -> dict[str, Path]:
    """The host's disk tools (``DISK_TOOLS``), by name; a missing one is missing from the image too (a block disk
    then fails to install inside a container machine, naming the tool)."""
    return {name: path for name in DISK_TOOLS if (path := _host_binary(name)) is not None}


def _host_binary(name: str) -> Path | None:
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin:/bin")
    return Path(os.path.realpath(found)) if found else None


def etcd_layer(*, progress: Callable[[str], None] | None = None) -> RuntimeLayer | None:
    """The etcd part of a full image: the host's etcd (Debian's etcd-server; Go, linked against libc alone) and
    etcdctl at ``usr/bin``, with their ``ldd`` closure (already in the runtime layer, which wins when staged);
    cached like the runtime layer. None when the host has no etcd."""
    say = progress or (lambda _m: None)
    found = {name: _host_binary(name) for name in ETCD_BINARIES}
    if found["etcd"] is None:
        return None
    bins = {name: path for name, path in found.items() if path is not None}
    described = {"builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
                 "binaries": {n: [str(p), p.stat().st_size, p.stat().st_mtime_ns] for n, p in bins.items()}}
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    base = cache_dir()
    final = base / f"etcd-{key[:20]}"
    if (final / "contents.json").is_file():
        say(f"etcd: cached {final} ({', '.join(str(p) for p in bins.values())})")
        return _cached(final, key)
    say(f"etcd: {', '.join(str(p) for p in bins.values())} from this host into usr/bin")

    def build(root: Path) -> dict[str, int]:
        contents: dict[str, int] = {}
        for name, path in bins.items():
            dst = root / "usr/bin" / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst)  # as Debian ships it (stripped); Go binaries are not re-stripped
            os.chmod(dst, 0o755)
            contents[name] = dst.stat().st_size
        for lib in _ldd_closure(list(bins.values()), skip=()):
            _copy_file(Path(os.path.realpath(lib)), root / str(lib).lstrip("/"))
        normalise(root, mtime=0)
        return contents

    return _publish("etcd layer", ".building-etcd-", final, key, build)


def _ignore_stdlib(stdlib: Path) -> Callable[[str, list[str]], set[str]]:
    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        drop = {n for n in names if n in _TREE_DROP or n.endswith((".pyc", ".pyo", ".exe"))}
        if here == stdlib:
            drop |= {n for n in names if n in _STDLIB_DROP or n.startswith("config-")}
        if here.name == "lib-dynload":
            drop |= {n for n in names if _DYNLOAD_DROP.match(n)}
        return drop
    return ignore


def _dist_paths(dist: metadata.Distribution, site: Path) -> Iterator[Path]:
    for f in dist.files or []:
        rel = Path(str(f))
        if rel.parts[0] == ".." or any(p in _TREE_DROP for p in rel.parts) or rel.suffix in (".pyc", ".pyo"):
            continue  # console scripts outside site-packages, caches, test suites
        if rel.suffix == ".py":
            rel = rel.with_suffix(".pyc")
        yield site / rel


def _copy_dist(dist: metadata.Distribution, site: Path) -> int:
    total = 0
    for f in dist.files or []:
        rel = Path(str(f))
        if rel.parts[0] == ".." or any(p in _TREE_DROP for p in rel.parts) or rel.suffix in (".pyc", ".pyo"):
            continue
        if rel.parts[0].endswith(".dist-info") and rel.name not in ("METADATA", "top_level.txt", "entry_points.txt"):
            continue
        src = Path(str(dist.locate_file(f)))
        if not src.is_file():
            continue
        _copy_file(src, site / rel)
        total += (site / rel).stat().st_size
    return total


def _copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    if _is_elf(dst) and shutil.which("strip"):
        subprocess.run(["strip", "--strip-unneeded", str(dst)], check=False, capture_output=True, timeout=120)
    mode = os.stat(src).st_mode
    os.chmod(dst, 0o755 if mode & 0o100 else 0o644)


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def _ldd_closure(elves: list[Path], skip: tuple[Path, ...]) -> list[Path]:
    """Every shared library ``elves`` load (ldd resolves the whole closure), minus those inside ``skip``."""
    found: set[Path] = set()
    for elf in elves:
        proc = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode != 0 and "not a dynamic executable" not in proc.stdout + proc.stderr:
            raise StorageError(f"runtime layer: ldd {elf}: {proc.stderr.strip() or proc.stdout.strip()}")
        for line in proc.stdout.splitlines():
            if "not found" in line:
                raise StorageError(f"runtime layer: {elf} needs a library this host lacks: {line.strip()}")
            m = _LDD_LINE.match(line)
            if m:
                found.add(Path(m.group(1)))
    real_skip = [Path(os.path.realpath(s)) for s in skip]
    return sorted(p for p in found if not any(s in Path(os.path.realpath(p)).parents for s in real_skip))


def _bytecode(tree: Path) -> None:
    """Every ``.py`` under ``tree`` becomes ``.pyc`` beside it (sourceless import), compiled by a fresh
    interpreter with unchecked hashes and the path it has on the node; the sources go."""
    script = ("import compileall, py_compile, sys; ok = compileall.compile_dir(sys.argv[1], quiet=2, workers=2, "
              "legacy=True, stripdir=sys.argv[2], prependdir='/', "
              "invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)")
    subprocess.run([sys.executable, "-I", "-c", script, str(tree), str(tree.parents[2])], check=True, timeout=900,
                   capture_output=True)
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            if name.endswith(".py"):
                src = Path(dirpath) / name
                if src.with_suffix(".pyc").is_file():
                    src.unlink()
                else:  # did not compile (a template or a Python 2 leftover): not importable anyway
                    src.unlink()


def normalise(root: Path, *, mtime: int | None = None) -> None:
    """Modes that do not depend on the umask or checkout: dirs 0755, files 0644 (0755 if executable); with
    ``mtime``, every file's modification time too."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o755)
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, 0o755 if st.st_mode & 0o100 else 0o644)
                if mtime is not None:
                    os.utime(p, (mtime, mtime), follow_symlinks=False)
    os.chmod(root, 0o755)


def _size(path: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for dirpath, _dirs, files in os.walk(path):
            for name in files:
                p = os.path.join(dirpath, name)
                if not os.path.islink(p):
                    total += os.lstat(p).st_size
    return total


def link_tree(src: Path, dst: Path) -> None:
    """Stage ``src`` into ``dst`` by hard links (copies across file systems); what ``dst`` holds already wins."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        target = dst / rel
        target.mkdir(parents=True, exist_ok=True)
        for name in dirnames:
            s = Path(dirpath) / name
            if s.is_symlink() and not (target / name).exists():
                os.symlink(os.readlink(s), target / name)
        for name in filenames:
            s, d = Path(dirpath) / name, target / name
            if d.exists() or d.is_symlink():
                continue
            if s.is_symlink():
                os.symlink(os.readlink(s), d)
                continue
            try:
                os.link(s, d)
            except OSError:
                shutil.copy2(s, d)
