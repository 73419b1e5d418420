"""Opening a log: hand its stored bytes to ``events.verify_tail``, which checks the tail since the last checkpoint
(the offline verifier's checks) and rebuilds the chain head and Merkle frontier."""

from __future__ import annotations

from collections.abc import Mapping

from events import LogTail, verify_tail

from ._lmdb_reader import LogReader

__all__ = ["Tail", "dummy_frontier", "read_tail"]

Tail = LogTail


def read_tail(reader: LogReader, known_keys: Mapping[str, bytes]) -> Tail:
    """Verify the events since the last checkpoint and rebuild the chain head and Merkle frontier.

    Raises ``TamperedLog`` naming the first bad seq.
    """
    return verify_tail(reader.read_raw_reversed, reader.read_raw, known_keys)


def dummy_frontier(size: int) -> list[bytes]:
    return [b"\x00" * 32] * bin(size).count("1")
