"""A node that promotes its in-memory log onto a durable log kept from before (EPHEMERAL survived a crash) seals
the crashed boot's tail first, then moves this boot's events after that seal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from events import Kind, verify_items
from node._log import NodeLog
from storage import LmdbEventLog
from storage._lmdb_log import RECOVERED


def test_promote_onto_an_unsealed_log_seals_it_first(tmp_path: Path, pki: Any) -> None:
    path = tmp_path / "log"
    old = LmdbEventLog(path, pki.signer, boot_id="boot-1", cert_der=pki.cert_der, origin="graven/node1")
    for i in range(5):
        old.append(Kind.TASK_STARTED, {"i": i})
    last = old.next_seq() - 1
    old.close()  # the boot crashed: no seal
    log = NodeLog(boot_id="boot-2", node="node1")
    log.append(Kind.TASK_STARTED, {"held": True})
    log.promote(path, pki.signer, pki.cert_der, origin="graven/node1", checkpoint_every=1024)
    try:
        after = list(log.read(last + 1))
        assert after[0].kind == Kind.CHECKPOINT and after[0].payload["reason"] == RECOVERED
        assert after[0].payload["size"] == last + 1 and after[0].boot_id == "boot-2"
        assert [e.payload for e in after[1:]] == [{"held": True}]
        assert log.seal_tail() is None
        assert verify_items(log.read_raw(), pki.ca_cert).events == last + 3
    finally:
        log.close()
