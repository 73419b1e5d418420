"""Giving back the library pages only start-up touched: which mappings qualify, and a real process that drops
them, keeps working and faults back in only what it uses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from node._resources import startup_pages

ROOT = Path(__file__).resolve().parents[2]

SMAPS = """\
55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]
Rss:                 132 kB
Anonymous:           132 kB
7f0000000000-7f0000100000 r--p 00000000 08:01 11 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
Rss:                 788 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000100000-7f0000300000 r-xp 00100000 08:01 11 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
Rss:                1908 kB
Anonymous:             0 kB
7f0000300000-7f0000360000 r--p 00300000 08:01 11 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
Rss:                 392 kB
Anonymous:           392 kB
7f0000360000-7f0000363000 rw-p 00360000 08:01 11 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
Rss:                  12 kB
Anonymous:            12 kB
7f0000400000-7f0000500000 r-xp 00000000 08:01 12 /venv/site-packages/grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so
Rss:                   0 kB
Anonymous:             0 kB
7f0000500000-7f0000501000 r--p 00000000 08:01 13 /venv/site-packages/grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so
Rss:                   4 kB
Private_Dirty:         4 kB
Anonymous:             0 kB
7f0000600000-7f0000700000 r--s 00000000 08:01 14 /node/EPHEMERAL/log/data.mdb
Rss:                 600 kB
Anonymous:             0 kB
7f0000800000-7f0000900000 r--p 00000000 08:01 15 /usr/lib/locale/locale-archive
Rss:                  40 kB
Anonymous:             0 kB
7f0000a00000-7f0000a01000 r-xp 00000000 08:01 16 /usr/lib/x86_64-linux-gnu/libffi.so.8.1.2 (deleted)
Rss:                   4 kB
Anonymous:             0 kB
7f0000b00000-7f0000b10000 r-xp 00000000 08:01 17 /usr/lib/x86_64-linux-gnu/libm.so.6
Rss:                  64 kB
Anonymous:             0 kB
"""


def test_only_clean_private_read_only_library_mappings_qualify() -> None:
    assert startup_pages(SMAPS) == [
        (0x7F0000000000, 0x7F0000100000, 788 << 10),  # libcrypto's constants
        (0x7F0000100000, 0x7F0000300000, 1908 << 10),  # its code
        # not: its relocated constants (private copies), its data (writable), a mapping with nothing resident, one
        # with a dirty private page, the log's shared map, a file that is no shared object, a deleted library
        (0x7F0000B00000, 0x7F0000B10000, 64 << 10),  # the last mapping of the file counts too
    ]
    assert startup_pages("") == []


def test_a_process_drops_its_start_up_pages_and_keeps_working() -> None:
    script = textwrap.dedent("""
        import hashlib, json
        import grpc
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from node._resources import release_startup_pages

        def rss_file():
            for line in open("/proc/self/status"):
                if line.startswith("RssFile:"):
                    return int(line.split()[1]) << 10
        before = rss_file()
        released = release_startup_pages()
        after = rss_file()
        key = Ed25519PrivateKey.generate()  # the libraries' code faults back in as it runs
        key.public_key().verify(key.sign(b"graven"), b"graven")
        with grpc.insecure_channel("127.0.0.1:1"):
            pass
        used = rss_file()
        print(json.dumps({"before": before, "released": released, "after": after, "used": used,
                          "digest": hashlib.sha256(b"graven").hexdigest()}))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert got["digest"] == "93dbf0f7e1c58f57e32bc4ac456fb1d578fc3b9ffed49678b27dbfd46073bc03"
    assert got["released"] > 8 << 20, got  # grpc's, cryptography's and libpython's start-up code at least
    assert got["after"] < got["before"] - (8 << 20), got
    assert got["after"] <= got["used"] < got["before"], got
