"""verify(): the only way to a VerifiedImage; every tampered image refused with its reason."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
from image_fixtures import TAMPERS, Images, Keys, Parts

from errors import BadImage, NotFound, UntrustedKey
from image import ImageInfo, VerifiedImage, inspect, load_public_key, public_key_pem, verify
from storage import InstallableImage


def test_verifies_with_the_trusted_key(images: Images, keys: Keys):
    v = verify(images.v1, keys.trusted)
    assert isinstance(v, VerifiedImage)
    assert v.version == "1.0.0" and v.manifest.version == "1.0.0"
    data = images.v1.read_bytes()
    p = Parts.of(data)
    assert v.payload_size == len(p.payload) and v.image_size == len(data)
    assert v.tail == data[len(p.payload) :]
    assert v.digest == v.payload_sha256.hex() and len(v.payload_sha256) == 32
    assert v.to_dict()["verified"] is True


def test_trusted_keys_in_every_form(images: Images, keys: Keys, tmp_path: Path):
    pem = tmp_path / "pub.pem"
    pem.write_bytes(public_key_pem(keys.signing))
    for form in (keys.signing.public_key(), keys.trusted[0], load_public_key(pem)):
        assert verify(images.v1, [form]).version == "1.0.0"
    # several trusted keys: the one that signed is picked by key id
    assert verify(images.v1, [keys.other.public_key(), keys.signing.public_key()]).version == "1.0.0"


def test_progress_reports_hashing(images: Images, keys: Keys):
    seen: list[tuple[int, int]] = []
    v = verify(images.v1, keys.trusted, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1] == (v.payload_size, v.payload_size)


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampered_image_refused(name: str, images: Images, keys: Keys, tmp_path: Path):
    make, error, pattern = TAMPERS[name]
    bad = tmp_path / f"{name}.img"
    bad.write_bytes(make(images.v1.read_bytes(), keys.signing, keys.other, images.v2.read_bytes()))
    with pytest.raises(error, match=pattern) as info:
        verify(bad, keys.trusted)
    assert str(bad) in info.value.message  # the reason names the file


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_keys_loaded_while_hashing_give_the_same_verdicts(name: str, images: Images, keys: Keys, tmp_path: Path):
    """A boot passes a function that loads the keys (called once, while the payload hashes on a thread): the
    same image verifies and each tampered one is refused with the same error as with the keys given."""
    calls: list[int] = []

    def load() -> list[bytes]:
        calls.append(1)
        return list(keys.trusted)

    v = verify(images.v1, load)
    assert (v.payload_sha256, v.version, calls) == (verify(images.v1, keys.trusted).payload_sha256, "1.0.0", [1])
    make, error, _ = TAMPERS[name]
    bad = tmp_path / f"{name}.img"
    bad.write_bytes(make(images.v1.read_bytes(), keys.signing, keys.other, images.v2.read_bytes()))
    with pytest.raises(error) as given:
        verify(bad, keys.trusted)
    with pytest.raises(error) as loaded:
        verify(bad, load)
    assert loaded.value.message == given.value.message
    with pytest.raises(UntrustedKey, match="no trusted image keys"):
        verify(bad, lambda: [])


def test_untrusted_and_no_keys(images: Images, keys: Keys):
    with pytest.raises(UntrustedKey, match="not trusted"):
        verify(images.v1, [keys.other.public_key()])
    with pytest.raises(UntrustedKey, match="no trusted image keys"):
        verify(images.v1, [])


def test_missing_file(tmp_path: Path, keys: Keys):
    with pytest.raises(NotFound, match="does not exist"):
        verify(tmp_path / "nope.img", keys.trusted)


def test_directory_is_not_an_image(tmp_path: Path, keys: Keys):
    with pytest.raises(BadImage, match="not a regular file"):
        verify(tmp_path, keys.trusted)


def test_length_verifies_an_image_at_the_head_of_a_larger_area(images: Images, keys: Keys, tmp_path: Path):
    data = images.v1.read_bytes()
    area = tmp_path / "slot"
    area.write_bytes(data + bytes(1 << 16))
    assert verify(area, keys.trusted, length=len(data)).version == "1.0.0"
    with pytest.raises(BadImage, match="truncated"):
        verify(area, keys.trusted, length=len(data) + (1 << 20))


# -- only verify() makes a VerifiedImage ------------------------------------------------------------------------


def test_no_public_constructor(images: Images, keys: Keys):
    v = verify(images.v1, keys.trusted)
    with pytest.raises(TypeError, match="no public constructor"):
        VerifiedImage()
    with pytest.raises(TypeError, match="no public constructor"):
        VerifiedImage(object(), path=v.path, manifest=v.manifest, manifest_bytes=v.manifest_bytes,
                      signature=v.signature, trailer=v.trailer)
    with pytest.raises(TypeError, match=r"use image\.verify"):
        InstallableImage()


def test_verified_image_is_immutable_and_not_copyable(images: Images, keys: Keys):
    v = verify(images.v1, keys.trusted)
    with pytest.raises(AttributeError, match="immutable"):
        v.payload_sha256 = bytes(32)  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del v.version
    with pytest.raises(TypeError):
        copy.copy(v)
    with pytest.raises(TypeError):
        pickle.dumps(v)


def test_installable_image_is_sealed():
    with pytest.raises(TypeError, match="sealed to VerifiedImage"):

        class Fake(InstallableImage):
            pass


# -- inspect ---------------------------------------------------------------------------------------------------


def test_inspect_reads_without_trusting(images: Images, keys: Keys, tmp_path: Path):
    info = inspect(images.v1)
    assert isinstance(info, ImageInfo) and info.verified is False
    assert info.manifest.version == "1.0.0" and info.canonical and not info.problems
    d = info.to_dict()
    assert d["verified"] is False and "UNVERIFIED" in d["warning"]
    # an image signed by a stranger still inspects: nothing is checked
    make, _, _ = TAMPERS["wrong-key"]
    other = tmp_path / "other.img"
    other.write_bytes(make(images.v1.read_bytes(), keys.signing, keys.other, b""))
    assert inspect(other).manifest.key_id != info.manifest.key_id


def test_inspect_flags_what_it_sees(images: Images, keys: Keys, tmp_path: Path):
    make, _, _ = TAMPERS["non-canonical-manifest"]
    p = tmp_path / "nc.img"
    p.write_bytes(make(images.v1.read_bytes(), keys.signing, keys.other, b""))
    assert "manifest is not in canonical encoding" in inspect(p).problems
    (tmp_path / "junk").write_bytes(b"junk" * 100)
    with pytest.raises(BadImage, match="not a Graven image"):
        inspect(tmp_path / "junk")
