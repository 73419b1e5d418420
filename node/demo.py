"""``make run``: a one-node sandbox cluster named ``demo`` (a previous one is destroyed first), then what to try.

It runs ``gravenctl cluster destroy --name demo`` and ``gravenctl cluster create --name demo`` (the machine
keeps running in the background; as root, a container machine: the agent is PID 1 of its own namespaces with the
slot's squashfs as /; without root, or with GRAVEN_PROVISIONER=process, a process machine), and prints the
commands that show the node: status, version, events, the audit verdict, its processes and mounts, an upgrade
to a v2 image built with the cluster's key, and the boot trace.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

NAME = os.environ.get("GRAVEN_DEMO_NAME", "demo")  # another name keeps a test's demo apart from yours


def _gravenctl() -> list[str]:
    script = Path(sys.executable).with_name("gravenctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli"]


def main() -> int:
    ctl = _gravenctl()
    state = os.environ.get("GRAVEN_STATE")  # default ~/.graven/clusters
    extra = ["--state", state] if state else []
    subprocess.run([*ctl, "cluster", "destroy", "--name", NAME, *extra], check=False)
    created = subprocess.run([*ctl, "cluster", "create", "--name", NAME, *extra], check=False)
    if created.returncode != 0:
        print("make run: the demo cluster did not come up (see the messages above)", file=sys.stderr)
        return created.returncode
    base = Path(state).expanduser() if state else Path.home() / ".graven" / "clusters"
    cdir = base / NAME
    g = shlex.join(ctl)
    v2 = cdir / "images" / "v2.img"
    logs = ", ".join(str(p) for p in sorted((cdir / "nodes").glob("*/machine.log")))
    print(f"""
The demo node runs in the background (its log: {logs}).
Its client config is the current context of your gravenconfig. Try:

  {g} status                      # stage, readiness, slot, version, last fallback
  {g} version                     # the version and digest of the image the node runs
  {g} events --tail 30            # the signed event log (add -f to follow)
  {g} audit verify --ca {cdir / 'ca.crt'}   # fetch the log, verify it with the CA alone
  {g} trace boot                  # per-phase timings of the last boot
  {g} processes                   # the node's processes from inside (a container machine: PID 1 is the agent)
  {g} get mounts                  # its mounts: / is the booted slot's squashfs, read-only

Upgrade to a v2 image signed with the cluster's key (the node verifies, writes slot B, reboots into it):

  {g} image build --version v2 --key {cdir / 'image.key'} -o {v2}
  {g} upgrade --image {v2} --wait
  {g} version

And a v3 that crashes at boot, to watch the automatic fallback:

  {g} image build --version v3 --fault boot-crash --key {cdir / 'image.key'} -o {cdir / 'images' / 'v3.img'}
  {g} upgrade --image {cdir / 'images' / 'v3.img'} --wait; {g} status

When done:  {g} cluster destroy --name {NAME}{' --state ' + state if state else ''}
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
