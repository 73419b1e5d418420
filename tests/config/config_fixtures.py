"""Helpers for the config tests: a real CA and image key, and a valid document whose line numbers the tests
rely on. (Not a package: ``tests/config/__init__.py`` would shadow the ``config`` package.)"""

from __future__ import annotations

import base64
import functools
import textwrap

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pki import make_ca, private_key_pem


@functools.cache
def keys() -> dict[str, str]:
    key, cert = make_ca("test-cluster")
    image_key = Ed25519PrivateKey.generate().public_key()
    pub_pem = image_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = image_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    crt_pem = cert.public_bytes(serialization.Encoding.PEM)
    return {
        "crt_pem": crt_pem.decode(),
        "key_pem": private_key_pem(key).decode(),
        "crt_b64": base64.b64encode(crt_pem).decode(),
        "key_b64": base64.b64encode(private_key_pem(key)).decode(),
        "pub_pem": pub_pem.decode(),
        "pub_raw_b64": base64.b64encode(raw).decode(),
        "pub_raw": raw.hex(),
    }


def valid_yaml() -> str:
    """A valid config; tests address its lines by number (line 1 is ``version``)."""
    k = keys()
    return textwrap.dedent(
        f"""\
        version: v1alpha1
        machine:
          type: controlplane
          ca:
            crt: {k["crt_b64"]}
            key: {k["key_b64"]}
          certSANs: [10.0.0.2, node1.example.com]
          install:
            disk: /dev/sda
            image: graven-v1.img
            wipe: false
            trustedKeys:
              - {k["pub_raw_b64"]}
          network:
            hostname: node1
            nameservers: [1.1.1.1, "2606:4700:4700::1111"]
            interfaces:
              - interface: eth0
                addresses: [10.0.0.2/24, "fd00::2/64"]
                mtu: 1500
                routes:
                  - network: 0.0.0.0/0
                    gateway: 10.0.0.1
                    metric: 1024
              - interface: eth1
                dhcp: true
          audit:
            checkpointEvery: 500
            sinks: [/var/lib/graven/audit, https://audit.example.com/upload]
        cluster:
          name: test-cluster
          endpoint: https://10.0.0.2:50000
        """
    )


def replace_line(text: str, lineno: int, new: str) -> str:
    """``text`` with line ``lineno`` (1-based) replaced by ``new`` (indented like the old line)."""
    lines = text.splitlines()
    old = lines[lineno - 1]
    lines[lineno - 1] = old[: len(old) - len(old.lstrip())] + new
    return "\n".join(lines) + "\n"
