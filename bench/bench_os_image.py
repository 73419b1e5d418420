"""OS image benchmark: the full image's size and what takes the space, and its build time, first (the runtime
layer built from this host's interpreter into an empty cache) and cached (the layer staged by hard links).

The limit measured in the same run: ``mksquashfs`` alone over the very tree the build squashed (the same options),
i.e. what compressing the root costs with no staging, compiling, signing or hashing; the build is reported as a
ratio of it. Targets (issue #12): the base payload at most 40 MiB (Talos's squashfs is under 80 MB), a cached
build quick enough for the tests (a couple of seconds). The etcd part (issue #14: Debian's etcd and etcdctl, which
controlplane nodes run from their own root) is reported apart: the base figure is an image built without it
(``--no-etcd``), the etcd figure what it adds to the payload, compressed.

Run: PYTHONPATH=. python bench/bench_os_image.py [--rounds 3] [--keep-cache]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from image import build_image
from image._build import default_source_root, squash_args, stage_tree
from image._runtime import etcd_layer, link_tree, runtime_layer

MIB = 1 << 20
SIZE_LIMIT = 40 * MIB
COMPRESSION = "lz4"  # a full image's, as image._build squashes it
ROOT = Path(__file__).resolve().parent.parent


def _mksquashfs(tree: Path, out: Path) -> float:
    out.unlink(missing_ok=True)
    t = time.perf_counter()
    subprocess.run(squash_args(tree, out, COMPRESSION), check=True, capture_output=True,
                   env={k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"})
    return time.perf_counter() - t


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep-cache", action="store_true",
                    help="time the first build with the existing cache instead of an empty one")
    args = ap.parse_args()
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="bench-os-image-") as tmp:
        work = Path(tmp)
        if not args.keep_cache:
            os.environ["GRAVEN_CACHE"] = str(work / "cache")
        t = time.perf_counter()
        manifest = build_image("bench", key, work / "first.img", created=1_700_000_000)
        first = time.perf_counter() - t
        cached = []
        for i in range(args.rounds):
            t = time.perf_counter()
            build_image("bench", key, work / f"cached-{i}.img", created=1_700_000_000)
            cached.append(time.perf_counter() - t)
        same = (work / "first.img").read_bytes() == (work / "cached-0.img").read_bytes()
        base = build_image("bench", key, work / "base.img", created=1_700_000_000, etcd=False)
        etcd = etcd_layer()

        layer = runtime_layer(default_source_root())
        stage = work / "stage"
        stage_tree(stage, "bench", source_root=default_source_root())
        code_bytes = _tree_size(stage)
        link_tree(layer.root, stage)
        if etcd is not None:
            link_tree(etcd.root, stage)
        raw = [_mksquashfs(stage, work / "raw.sqfs") for _ in range(args.rounds)]
        raw_size = (work / "raw.sqfs").stat().st_size
        tree_bytes = _tree_size(stage)

    size = base.payload_size
    verdict = "OK" if size <= SIZE_LIMIT else "ABOVE LIMIT"
    print(f"base OS image payload (no etcd): {size / MIB:.1f} MiB squashfs ({COMPRESSION}) (limit "
          f"{SIZE_LIMIT // MIB} MiB: {verdict})")
    if etcd is None:
        print("  etcd part: none (this host has no etcd: Debian's etcd-server)")
    else:
        raw_etcd = sum(etcd.contents.values())
        print(f"  etcd part (etcd + etcdctl, apart from the limit): +{(manifest.payload_size - size) / MIB:.1f} MiB "
              f"compressed ({raw_etcd / MIB:.1f} MiB raw: "
              + ", ".join(f"{k} {v / MIB:.1f}" for k, v in sorted(etcd.contents.items())) + ")")
    print(f"full image payload (base + etcd, what controlplane and worker nodes boot): "
          f"{manifest.payload_size / MIB:.1f} MiB of a {tree_bytes / MIB:.1f} MiB tree; two builds byte-identical: "
          f"{same}")
    print("  what takes the space (uncompressed):")
    parts = dict(layer.contents)
    parts["graven code + os-release (bytecode and sources)"] = code_bytes
    if etcd is not None:
        parts.update({f"etcd part: {k}": v for k, v in etcd.contents.items()})
    deps = {k: v for k, v in parts.items() if k.startswith("site-packages/")}
    others = {k: v for k, v in parts.items() if not k.startswith("site-packages/")}
    others["site-packages (all dependencies)"] = sum(deps.values())
    for name, n in sorted(others.items(), key=lambda kv: -kv[1]):
        print(f"    {name:48} {n / MIB:7.1f} MiB  {100 * n / tree_bytes:5.1f}%")
    print("  of which the dependencies:")
    for name, n in sorted(deps.items(), key=lambda kv: -kv[1])[:8]:
        print(f"    {name.removeprefix('site-packages/'):48} {n / MIB:7.1f} MiB")
    best = min(cached)
    floor = min(raw)
    print(f"build: first {first:.2f} s (runtime layer into an empty cache), cached median "
          f"{statistics.median(cached):.2f} s, best {best:.2f} s ({args.rounds} rounds)")
    print(f"  limit: mksquashfs alone over the same tree {floor:.2f} s ({raw_size / MIB:.1f} MiB); a cached build "
          f"is {best / floor:.1f}x that")
    return 0


if __name__ == "__main__":
    sys.exit(main())
