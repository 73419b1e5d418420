"""``cluster create --provisioner``: container where root and namespaces allow it, else process; a refusal that
names ``--provisioner process`` where container cannot work."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from errors import Unavailable
from provision._choose import choose_provisioner


def _said() -> tuple[list[str], Callable[[str], None]]:
    lines: list[str] = []
    return lines, lines.append


def test_default_is_container_where_it_can_work():
    lines, say = _said()
    assert choose_provisioner(None, "sandbox", say, problem=lambda: None, prefer="container") == "container"
    assert "PID 1" in lines[0] and "--provisioner process" in lines[0]


def test_default_falls_back_to_process_and_says_why():
    lines, say = _said()
    got = choose_provisioner(None, "sandbox", say, problem=lambda: "container machines need root",
                             prefer="container")
    assert got == "process" and "need root" in lines[0] and "--provisioner process" in lines[0]
    lines.clear()  # block disks too: a container machine installs to and boots from its loop device
    assert choose_provisioner(None, "block", say, problem=lambda: None, prefer="container") == "container"


def test_asking_for_container_where_it_cannot_work_names_the_way_out():
    with pytest.raises(Unavailable, match=r"need root; use --provisioner process"):
        choose_provisioner("container", "sandbox", print, problem=lambda: "container machines need root")
    assert choose_provisioner("container", "block", print, problem=lambda: None) == "container"


def test_process_is_always_possible():
    assert choose_provisioner("process", "block", print, problem=lambda: "no root") == "process"


def test_the_default_follows_graven_provisioner(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GRAVEN_PROVISIONER", "container")
    assert choose_provisioner(None, "sandbox", print, problem=lambda: None) == "container"
    monkeypatch.setenv("GRAVEN_PROVISIONER", "process")
    assert choose_provisioner(None, "sandbox", print, problem=lambda: None) == "process"


def test_without_a_preference_the_default_is_container(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GRAVEN_PROVISIONER", raising=False)
    assert choose_provisioner(None, "sandbox", print, problem=lambda: None) == "container"
    lines, say = _said()
    assert choose_provisioner(None, "sandbox", say, problem=lambda: "container machines need root") == "process"
    assert "need root" in lines[0] and "--provisioner process" in lines[0]


def test_a_vm_config_names_its_own_address():
    """A VM's agent listens on 0.0.0.0, so only its config puts its address among its certificate's names; a
    worker's cluster endpoint names the controlplane node, whose address alone would leave the worker unreachable."""
    import config
    from api._pki import ClusterSecrets
    from provision._cluster import _vm_network

    s = ClusterSecrets.generate("q")
    cfg = config.default_config("q", "https://198.19.1.2:50000", s.ca_crt_pem, s.ca_key_pem, [s.image_pub_pem],
                                machine_type="worker", install_disk="/dev/vda")
    cfg = _vm_network(cfg, "198.19.1.3/24")
    assert cfg.machine.cert_sans[:2] == ("198.19.1.3", "198.19.1.2")
    assert [(i.interface, i.addresses) for i in cfg.machine.network.interfaces] == [("eth0", ("198.19.1.3/24",))]
    assert config.validate(config.dump_yaml(cfg)).ok


@pytest.mark.parametrize("etcd", [False, True])
def test_a_new_clusters_secrets_are_written_with_their_modes_and_the_etcd_ca_only_for_etcd(tmp_path: Path,
                                                                                            etcd: bool) -> None:
    from provision._cluster import _new_record, _write_secrets

    said: list[str] = []
    directory = tmp_path / "c1"
    secrets, files = _write_secrets("c1", directory, said.append, etcd=etcd)
    assert said == [f"cluster c1: secrets and configs in {directory}"]
    assert directory.stat().st_mode & 0o777 == 0o700
    written = {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()}
    assert written == {"ca.crt": 0o644, "ca.key": 0o600, "image.key": 0o600, "image.pub": 0o644,
                       **({"etcd-ca.crt": 0o644, "etcd-ca.key": 0o600} if etcd else {})}
    assert (directory / "ca.crt").read_bytes() == secrets.ca_crt_pem
    assert (directory / "image.key").read_bytes() == secrets.image_key_pem
    record = _new_record("c1", directory, "sandbox", files, network="netns" if etcd else "loopback",
                         provisioner="process", memory=None)
    assert record.ca_key == str(directory / "ca.key")
    assert record.etcd_ca_key == (str(directory / "etcd-ca.key") if etcd else None)
