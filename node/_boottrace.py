"""Wall-clock marks of a boot's start-up steps, for ``bench/bench_boot.py`` (and anyone profiling a boot).

With ``GRAVEN_BOOT_TRACE=1`` in the supervisor's environment (the container launcher passes ``GRAVEN_*`` variables
on to PID 1), each step appends ``STEP TIME_NS`` to ``boot-trace`` in the machine's run directory:
``launcher`` (the forked launcher starts), ``forked`` (PID 1 forked, in its cgroups and pid namespace), ``exec``
(its root made, about to exec the image's interpreter), ``python`` (the first line of ``node.__main__``),
``imported`` (``node.agent`` imported), ``set-up`` (the agent opened its disk, log and identity: ``Agent.run``).
The supervisor's hand-over is ``boot.selected``'s ``agent_started_ns``; the rest are events. Off, a mark costs one
environment look-up. Standard library only: the launcher runs on the host's interpreter.
"""

from __future__ import annotations

import os
import time

__all__ = ["ENV", "FILE", "mark"]

ENV = "GRAVEN_BOOT_TRACE"
FILE = "boot-trace"


def mark(step: str, run_dir: str | None = None) -> None:
    """Append ``step`` and the time now to the run directory's trace (``run_dir``, else the directory of the
    ``GRAVEN_BOOT`` file the supervisor handed over); nothing when tracing is off or there is nowhere to write."""
    if not os.environ.get(ENV):
        return
    where = run_dir or os.path.dirname(os.environ.get("GRAVEN_BOOT", ""))
    if not where:
        return
    try:
        with open(os.path.join(where, FILE), "a", encoding="ascii") as f:
            f.write(f"{step} {time.time_ns()}\n")
    except OSError:
        pass
