"""The etcd CA and the certificates issued from it."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from api._etcd_pki import EtcdCA, check_etcd_ca
from api._pki import ClusterSecrets
from events.errors import InvalidRequest


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
