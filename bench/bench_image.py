"""Image benchmarks, each against the physical limit measured in the same run.

1. verify(): MB/s against raw hashlib.sha256 of the same file (target: at least 0.9x).
2. Writing a 64 MiB image into a slot (copy, fsync, read back, compare) against `cp` plus `sha256sum` of
   the same file (target: within 1.5x), on the sandbox disk and, as root with loop devices, the block disk.
   `cp` does not fsync; write_image does, then drops the page cache and reads the payload back.

Run: PYTHONPATH=. python bench/bench_image.py [--size-mib 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from boot import Slot
from image import build_image, verify
from pki import public_raw
from storage import BlockDisk, DiskLayout, SandboxDisk, block_problem

MIB = 1 << 20


def best(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) if rounds < 3 else statistics.median(sorted(times)[: max(3, rounds - 1)])


def raw_sha256(path: Path) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def cp_and_sha256sum(src: Path, dst: Path) -> None:
    subprocess.run(["cp", str(src), str(dst)], check=True)
    subprocess.run(["sha256sum", str(dst)], check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", help="work directory (default: a temporary one under /var/tmp)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="graven-bench-", dir=args.dir or "/var/tmp") as tmp:
        work = Path(tmp)
        key = Ed25519PrivateKey.generate()
        trusted = [public_raw(key.public_key())]
        overlay = work / "overlay/opt"
        overlay.mkdir(parents=True)
        (overlay / "blob").write_bytes(os.urandom(args.size_mib * MIB))  # incompressible
        img = work / "bench.img"
        t = time.perf_counter()
        build_image("bench", key, img, overlay=work / "overlay", created=1_700_000_000)
        size = img.stat().st_size
        print(f"built a {size / MIB:.1f} MiB image in {time.perf_counter() - t:.2f} s")

        # 1. verify vs raw sha256 (both from the page cache: the file was just written)
        raw_sha256(img)
        t_raw = best(lambda: raw_sha256(img), args.rounds)
        t_ver = best(lambda: verify(img, trusted), args.rounds)
        mbs_raw, mbs_ver = size / MIB / t_raw, size / MIB / t_ver
        ratio = mbs_ver / mbs_raw
        print(f"verify:        {mbs_ver:8.0f} MiB/s   raw hashlib.sha256: {mbs_raw:8.0f} MiB/s   "
              f"ratio {ratio:.2f}x (target >= 0.9x) {'OK' if ratio >= 0.9 else 'MISSED'}")

        # 2. write into a slot vs cp + sha256sum
        verified = verify(img, trusted)
        dst = work / "copy.img"
        t_cp = best(lambda: cp_and_sha256sum(img, dst), args.rounds)
        print(f"cp + sha256sum: {t_cp * 1000:7.1f} ms for {size / MIB:.1f} MiB")
        results = []
        sandbox = SandboxDisk(work / "machine", slot_size=(args.size_mib + 16) * MIB)
        sandbox.partition()
        sandbox.format()
        results.append(("sandbox", best(lambda: sandbox.write_image(Slot.B, verified), args.rounds)))
        sandbox.close()
        problem = block_problem()
        if problem is None:
            disk_file = work / "disk.img"
            with open(disk_file, "wb") as f:
                f.truncate((2 * args.size_mib + 128) * MIB)
            block = BlockDisk(disk_file, run_dir=work / "run",
                              layout=DiskLayout(efi_mib=4, slot_mib=args.size_mib + 16, state_mib=16))
            try:
                block.partition()
                block.format()
                results.append(("block", best(lambda: block.write_image(Slot.B, verified), args.rounds)))
            finally:
                block.close()
        else:
            print(f"block disk skipped: {problem}")
        for name, secs in results:
            ratio = secs / t_cp
            print(f"write_image ({name:7s}): {secs * 1000:7.1f} ms   {ratio:.2f}x cp + sha256sum "
                  f"(target <= 1.5x) {'OK' if ratio <= 1.5 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
