"""qemu boot benchmark: from ``graven machine --provisioner qemu`` starting to the node Running and ready with
its boot committed, the accelerator named.

An installed machine (v1 in slot A of its disk image, committed, a config on STATE) is powered on again and again.
Each boot is timed on the host, from just before the supervisor starts to the first status poll (every 0.2 s)
that sees Running and ready, and split from the guest's own clock (the boot trace's timeline, whose zero is the
kernel's start): kernel (to init), initramfs (modules, the slot mounted as /), agent start (the image's
interpreter and the agent's imports, to its first event), sequences (``boot.started`` to ``boot.committed``).
What is left is the host's part: the supervisor (META, slot verification, initramfs), qemu's start, the firmware
(SeaBIOS) and polling. The limit measured in the same run: the kernel and initramfs, plus the interpreter
importing the agent, with nothing done (the kernel, initramfs and agent-start spans); under TCG these are
software-emulated, about 45x slower than native.

Measured here (2 cores, KVM unusable: TCG): median 18.7 s (best 18.6 s) = kernel 2.6 s, initramfs 0.8 s, agent
start 11.1 s, sequences 1.0 s, host 3.1 s; limit 14.5 s, ratio 1.29x (before: 21.6 s, limit 17.0 s, 1.28x). The
machine driver (install through maintenance, start, poll, events of a boot) is bench/_machine.py, shared with
bench_boot.

Run: PYTHONPATH=. python bench/bench_qemu_boot.py [--rounds 2]   (root; one core busy per boot)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _machine import BenchMachine, ctl


class VM(BenchMachine):
    """An installed qemu machine (its disk image pre-installed with v1, as a vendor ships it), polled every 0.2 s:
    each poll costs the emulated guest CPU time."""

    poll_s = 0.2
    timeout_s = 300.0
    install_disk = "/dev/vda"

    def __init__(self, base: Path) -> None:
        from node._qemu import GUEST_DISK_SIZE, preinstalled_disk

        super().__init__(base)
        self.disk = base / "disk.raw"
        preinstalled_disk(self.disk, GUEST_DISK_SIZE, self.image, (base / "image.pub").read_bytes(),
                          run_dir=base / "prep")

    def machine_args(self) -> list[str]:
        return ["--disk", str(self.disk), "--provisioner", "qemu"]

    def stop(self) -> None:
        assert self.proc is not None
        r = ctl(self.cfg, self.endpoint, "shutdown")  # the agent seals its log and powers the VM off
        if r.returncode != 0:
            self.proc.terminate()
        self.proc.wait(120)

    def boot_once(self) -> dict[str, float]:
        t0 = self.start()
        st = self.running()
        total = (time.time_ns() - t0) / 1e9
        mine = self.boot_events(st["boot_id"])
        guest = next(e["payload"]["guest_ns"] for e in mine if e["kind"] == "boot.selected")
        first = mine[0]["mono_ns"]
        started = next(e["mono_ns"] for e in mine if e["kind"] == "boot.started")
        committed = next(e["mono_ns"] for e in mine if e["kind"] == "boot.committed")
        self.stop()
        return {"total": total, "kernel": guest["init"] / 1e9, "initramfs": (guest["exec"] - guest["init"]) / 1e9,
                "agent_start": (first - guest["exec"]) / 1e9, "sequences": (committed - started) / 1e9,
                "host": total - committed / 1e9}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from node._qemu import qemu_problem
    from storage import block_problem

    problem = qemu_problem() or block_problem()
    if problem:
        print(f"qemu skipped: {problem}")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-qemu-") as tmp:
        vm = VM(Path(tmp))
        try:
            vm.install()
            results = [vm.boot_once() for _ in range(args.rounds)]
            log = vm.log_text()
        finally:
            vm.kill()
    accel = "KVM" if "(KVM)" in log else "TCG"
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    floor = med["kernel"] + med["initramfs"] + med["agent_start"]
    print(f"qemu ({accel}) power-on to Running+ready, committed: median {med['total']:.1f} s, best "
          f"{min(r['total'] for r in results):.1f} s; {args.rounds} boots")
    print(f"   kernel {med['kernel']:.1f} s | initramfs {med['initramfs']:.2f} s | agent start (python, imports) "
          f"{med['agent_start']:.1f} s | sequences to commit {med['sequences']:.1f} s | host (supervisor, qemu, "
          f"firmware, polling) {med['host']:.1f} s")
    print(f"   limit: kernel + initramfs + the interpreter importing the agent {floor:.1f} s; the boot is "
          f"{med['total'] / floor:.2f}x that")
    return 0


if __name__ == "__main__":
    sys.exit(main())
