"""When a cluster's machine stops while ``cluster create`` waits for it, the error says how it ended (the exit status,
or the signal that killed it) and that its log is empty when it stopped before its first line."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from provision import _cluster
from provision._record import NodeRecord


def _started(code: str) -> int:
    proc = subprocess.Popen([sys.executable, "-c", code])
    _cluster._STARTED[proc.pid] = proc
    proc.wait()
    return proc.pid


def test_an_exit_status_and_a_killing_signal_are_named() -> None:
    assert _cluster._how_it_ended(_started("raise SystemExit(3)")) == " (exit status 3)"
    assert _cluster._how_it_ended(_started("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")) == \
        f" (killed by {signal.SIGKILL.name})"


def test_a_machine_not_started_here_or_still_running_says_nothing() -> None:
    assert _cluster._how_it_ended(None) == ""
    assert _cluster._how_it_ended(1) == ""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    _cluster._STARTED[proc.pid] = proc
    try:
        assert _cluster._how_it_ended(proc.pid) == ""
    finally:
        proc.kill()
        proc.wait()


def test_an_empty_machine_log_is_said_to_be_empty(tmp_path: Path) -> None:
    log = tmp_path / "machine.log"
    log.write_text("")
    node = NodeRecord(name="n1", endpoint="127.0.0.1:1", root=str(tmp_path), config="", log=str(log))
    assert "empty: the machine stopped before its first line" in _cluster._machine_log_tail(node)
    log.write_text("graven machine: boot 1\n")
    assert _cluster._machine_log_tail(node) == "    graven machine: boot 1"
