"""A small QMP client (qemu's JSON machine protocol over a unix socket), and the classification of how a
qemu machine ended.

With ``-no-reboot``, qemu stops on every guest reboot too, and reports each ending as a ``SHUTDOWN`` event
whose ``reason`` says what happened: ``guest-reset`` (the guest rebooted), ``guest-shutdown`` (it powered
off), ``guest-panic`` (with pvpanic: the kernel panicked, e.g. because PID 1 died); ``GUEST_PANICKED`` comes
first in that last case. ``classify`` turns the events seen into the machine's exit, pure.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EXIT_FAILED", "EXIT_POWER_OFF", "EXIT_REBOOT", "Ending", "Qmp", "classify"]

EXIT_POWER_OFF, EXIT_REBOOT, EXIT_FAILED = 0, 10, 20


@dataclass(frozen=True)
class Ending:
    code: int  # EXIT_POWER_OFF, EXIT_REBOOT or EXIT_FAILED, as the agent's own exit codes
    reason: str  # for people and the log


def classify(events: Iterable[dict[str, object]], *, timed_out: bool = False, qemu_rc: int | None = None) -> Ending:
    """The machine's exit from the QMP events of one run of qemu (and whether the host gave up waiting)."""
    seen = list(events)
    names = [e.get("event") for e in seen]
    if "GUEST_PANICKED" in names:
        return Ending(EXIT_FAILED, "the guest kernel panicked (PID 1 died, or a kernel crash)")
    for e in seen:
        if e.get("event") == "SHUTDOWN":
            data = e.get("data")
            reason = str(data.get("reason", "")) if isinstance(data, dict) else ""
            if reason == "guest-reset":
                return Ending(EXIT_REBOOT, "the guest rebooted")
            if reason == "guest-shutdown":
                return Ending(EXIT_POWER_OFF, "the guest powered off")
            if reason == "guest-panic":
                return Ending(EXIT_FAILED, "the guest kernel panicked")
            return Ending(EXIT_FAILED, f"qemu stopped: {reason or 'no reason given'}")
    if timed_out:
        return Ending(EXIT_FAILED, "the guest did not come up in time")
    return Ending(EXIT_FAILED, f"qemu exited (code {qemu_rc}) without a shutdown event")


class Qmp:
    """One connection to a qemu's QMP socket: the greeting, ``qmp_capabilities``, then commands and events."""

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._sock = sock
        self._file = sock.makefile("rb")
        self.events: list[dict[str, object]] = []
        self.greeting = self._read()
        self.command("qmp_capabilities")

    def _read(self) -> dict[str, object]:
        line = self._file.readline()
        if not line:
            raise EOFError("qemu closed its QMP socket")
        msg: dict[str, object] = json.loads(line)
        return msg

    def command(self, name: str, **arguments: object) -> object:
        self._sock.sendall(json.dumps({"execute": name, **({"arguments": arguments} if arguments else {})})
                           .encode() + b"\n")
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
            elif "error" in msg:
                error = msg["error"]
                raise RuntimeError(f"QMP {name}: {error.get('desc', error) if isinstance(error, dict) else error}")
            elif "return" in msg:
                return msg["return"]

    def follow(self) -> Iterator[dict[str, object]]:
        """Events until qemu closes the socket (it exits)."""
        while True:
            try:
                msg = self._read()
            except (EOFError, OSError, ValueError):
                return
            if "event" in msg:
                self.events.append(msg)
                yield msg

    def close(self) -> None:
        self._file.close()
        self._sock.close()
