"""What a boot imports: the supervisor (firmware and bootloader) runs on every boot, so it must not load what it
never uses there (the LMDB event log, the image builder); the agent never builds images."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = "import sys, {module}; print(' '.join(sorted(m for m in {names} if m in sys.modules)))"


@pytest.mark.parametrize(("module", "absent"), [
    ("node._supervisor", ("lmdb", "storage._lmdb_log", "image._build", "image._runtime", "sequencer", "node._ports",
                          "config", "yaml",  # the config loads while the slot's payload hashes
                          "events._chain", "events._replay", "events._witnessed",  # lazy: Kind only
                          "cryptography.x509", "pki._certs")),  # it checks signatures, never certificates
    ("node.agent", ("image._build", "image._runtime")),
])
def test_a_boot_imports_only_what_it_uses(module: str, absent: tuple[str, ...]) -> None:
    code = PROBE.format(module=module, names=repr(absent))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"{module} imports {done.stdout.strip()} at start"


def test_the_lazy_names_still_resolve() -> None:
    import image
    import storage
    from image._build import build_image
    from storage._lmdb_log import LmdbEventLog, LogReader, seq_key

    assert (storage.LmdbEventLog, storage.LogReader, storage.seq_key) == (LmdbEventLog, LogReader, seq_key)
    assert image.build_image is build_image
    with pytest.raises(AttributeError):
        _ = storage.no_such_name
