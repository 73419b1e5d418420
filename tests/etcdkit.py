"""Real etcd members for tests: Debian's ``etcd`` started on free loopback ports with certificates from a fresh
etcd CA, the command line the node uses (``node._etcd_args``), stopped and wiped afterwards."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from api._etcd_pki import EtcdCA
from node._etcd_args import EtcdFiles, client_url, etcd_argv, peer_url
from node._etcd_pki_files import issue_node_pki, node_client_tls
from storage._etcd import EtcdClient, EtcdTLS

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")
MISSING = "Debian's etcd-server is not installed (storage/_systools.py installs it: make system)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EtcdMember:
    name: str
    files: EtcdFiles
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return client_url("127.0.0.1", self.client_port)

    @property
    def peer_url(self) -> str:
        return peer_url("127.0.0.1", self.peer_port)

    @property
    def log(self) -> Path:
        return self.files.root / "etcd.log"

    def tls(self) -> EtcdTLS:
        return node_client_tls(self.files)

    def start(self, cluster: Mapping[str, Sequence[str]], state: str = "new") -> None:
        assert ETCD is not None, MISSING
        argv = etcd_argv(ETCD, name=self.name, files=self.files, address="127.0.0.1", cluster=cluster,
                         state=state, client_port=self.client_port, peer_port=self.peer_port)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 20.0) -> None:
        async def ready() -> bool:
            async with EtcdClient([self.client_url], self.tls(), timeout=1.0) as c:
                try:
                    await c.status(self.client_url)
                except Exception:
                    return False
                return True

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"etcd {self.name} exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            if asyncio.run(ready()):
                return
            time.sleep(0.1)
        raise AssertionError(f"etcd {self.name} not ready in {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class EtcdKit:
    """Members under one folder, all from one etcd CA."""

    def __init__(self, root: Path, ca: EtcdCA | None = None) -> None:
        self.root = root
        self.ca = ca or EtcdCA.generate()
        self.members: list[EtcdMember] = []

    def member(self, name: str) -> EtcdMember:
        files = EtcdFiles(self.root / name)
        issue_node_pki(self.ca, files, name=name, addresses=["127.0.0.1"])
        m = EtcdMember(name, files)
        self.members.append(m)
        return m

    def bootstrap(self, name: str = "cp1") -> EtcdMember:
        m = self.member(name)
        m.start({name: [m.peer_url]})
        m.wait_ready()
        return m

    def client_tls(self) -> EtcdTLS:
        c = self.ca.client_cert()
        return EtcdTLS(self.ca.crt_pem, c.crt, c.key)

    def stop_all(self) -> None:
        for m in self.members:
            m.stop()
