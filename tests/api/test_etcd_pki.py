"""The etcd CA and the certificates issued from it."""

from __future__ import annotations

import base64
import ipaddress
import stat
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

import config
from api._etcd_pki import EtcdCA, check_etcd_ca
from api._pki import ClusterSecrets, gen_config, gen_etcd_client
from cli import main as cli
from errors import InvalidRequest


@pytest.fixture(scope="module")
def ca() -> EtcdCA:
    return EtcdCA.generate()


def test_server_and_peer_certificates_name_the_node(ca: EtcdCA) -> None:
    for issued in (ca.server_cert("cp1", ["10.5.0.2"]), ca.peer_cert("cp1", ["10.5.0.2"])):
        cert = x509.load_pem_x509_certificate(issued.crt)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ipaddress.ip_address("10.5.0.2") in sans.get_values_for_type(x509.IPAddress)
        assert "cp1" in sans.get_values_for_type(x509.DNSName)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        cert.verify_directly_issued_by(ca.cert)
    client = x509.load_pem_x509_certificate(ca.client_cert().crt)
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]


def test_ca_round_trips_through_pem(ca: EtcdCA) -> None:
    again = EtcdCA.load(ca.crt_pem, ca.key_pem)
    assert again.crt_pem == ca.crt_pem
    x509.load_pem_x509_certificate(again.client_cert().crt).verify_directly_issued_by(ca.cert)


def test_bad_etcd_cas_are_refused_with_the_reason(ca: EtcdCA) -> None:
    other = EtcdCA.generate()
    with pytest.raises(InvalidRequest, match="does not match"):
        check_etcd_ca(ca.crt_pem, other.key_pem)
    machine = ClusterSecrets.generate("c1")
    with pytest.raises(InvalidRequest, match="must be ECDSA"):
        check_etcd_ca(machine.ca_crt_pem)
    with pytest.raises(InvalidRequest, match="not a CA"):
        check_etcd_ca(ca.server_cert("cp1", ["10.0.0.1"]).crt)
    with pytest.raises(InvalidRequest, match="not a PEM certificate"):
        check_etcd_ca(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(InvalidRequest, match="not an unencrypted PEM private key"):
        check_etcd_ca(ca.crt_pem, b"junk")


def test_gen_etcd_client_issues_from_the_secrets_etcd_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen_config("prod", "10.0.0.2", tmp_path / "s")
    assert cli.main(["gen", "etcd-client", "--secrets", str(tmp_path / "s"), "-o", str(tmp_path / "c")]) == 0
    assert "etcdctl --cacert" in capsys.readouterr().err
    ca = EtcdCA.load((tmp_path / "s/etcd-ca.crt").read_bytes(), (tmp_path / "s/etcd-ca.key").read_bytes())
    assert (tmp_path / "c/ca.crt").read_bytes() == ca.crt_pem
    x509.load_pem_x509_certificate((tmp_path / "c/client.crt").read_bytes()).verify_directly_issued_by(ca.cert)
    assert stat.S_IMODE((tmp_path / "c/client.key").stat().st_mode) == 0o600
    with pytest.raises(InvalidRequest, match="exists"):
        gen_etcd_client(tmp_path / "s", tmp_path / "c")
    with pytest.raises(InvalidRequest, match=r"etcd-ca\.crt: cannot read the etcd CA"):
        gen_etcd_client(tmp_path / "nowhere", tmp_path / "d")
    assert not (tmp_path / "d").exists()


def _etcd_tree(cfg: config.MachineConfig, **ca: str | None) -> dict[str, object]:
    tree = msgspec.json.decode(msgspec.json.encode(cfg))
    tree["cluster"]["etcd"] = {"ca": {k: v for k, v in ca.items() if v is not None}}
    return tree


def test_config_etcd_ca_is_validated(ca: EtcdCA) -> None:
    secrets = ClusterSecrets.generate("c1")
    args = ("c1", "https://10.0.0.2:50000", secrets.ca_crt_pem, secrets.ca_key_pem, [secrets.image_pub_pem])
    cp = config.default_config(*args, etcd_ca=(ca.crt_pem, ca.key_pem))
    assert config.validate(cp).ok
    assert cp.cluster.etcd is not None and cp.cluster.etcd.ca.key_pem() == ca.key_pem
    worker = config.default_config(*args, machine_type="worker", etcd_ca=(ca.crt_pem, ca.key_pem))
    assert worker.cluster.etcd is None  # workers get no etcd CA
    b64 = base64.b64encode
    crt, key = b64(ca.crt_pem).decode(), b64(ca.key_pem).decode()
    cases = [
        (_etcd_tree(worker, crt=crt, key=key), "cluster.etcd.ca.key", "worker must not hold"),
        (_etcd_tree(cp, crt=crt), "cluster.etcd.ca.key", "etcd CA key is needed"),
        (_etcd_tree(cp, crt=b64(secrets.ca_crt_pem).decode(), key=b64(secrets.ca_key_pem).decode()),
         "cluster.etcd.ca", "must be ECDSA"),
        (_etcd_tree(cp, crt="not pem", key=key), "cluster.etcd.ca.crt", "PEM"),
    ]
    for tree, path, fragment in cases:
        errors = config.validate_tree(tree).errors
        assert [p.path for p in errors] == [path], errors
        assert fragment in errors[0].message
    assert config.validate_tree(_etcd_tree(worker, crt=crt)).ok
