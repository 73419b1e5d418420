"""What the tests that make network namespaces ask first: can this host make one."""

from __future__ import annotations

import subprocess
import uuid


def netns_add_problem() -> str | None:
    """Why ``ip netns add`` fails here (None: a namespace was made and deleted again)."""
    name = f"gvprobe-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"cannot create a network namespace: {proc.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None
