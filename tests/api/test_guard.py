"""The guard at the door, without a server: decoding never raises, short fields stay short, uploads stay in
their limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api._client import map_rpc_error
from api._guard import Undecodable, check_request, decoder, first_problem
from api._pb import machine_pb2 as pb
from api._upload import Upload, check_url
from config.limits import Limits
from errors import DiskFull, InvalidRequest, LimitExceeded, TooLarge

SERVICE = pb.DESCRIPTOR.services_by_name["MachineService"]
REQUEST_TYPES = sorted({getattr(pb, m.input_type.name) for m in SERVICE.methods}, key=lambda c: c.__name__)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REQUEST_TYPES), st.binary(max_size=200))
def test_decoding_any_bytes_never_raises(cls, data):
    out = decoder(cls)(data)
    assert isinstance(out, cls | Undecodable)
    if isinstance(out, Undecodable):
        err = out.error()
        assert isinstance(err, InvalidRequest) and cls.DESCRIPTOR.full_name in err.message


def test_another_message_with_unknown_fields_is_not_this_one():
    body = pb.ApplyConfigurationRequest(data=b"x", dry_run=True).SerializeToString()
    out = decoder(pb.Empty)(body)
    assert isinstance(out, Undecodable) and "unknown field number(s) [1, 3]" in out.reason
    assert isinstance(decoder(pb.ApplyConfigurationRequest)(body), pb.ApplyConfigurationRequest)


def test_short_fields_stay_short():
    check_request(pb.EventsRequest(kinds=["config.*"] * 64, actor="a" * 256))
    with pytest.raises(LimitExceeded) as info:
        check_request(pb.EventsRequest(kinds=["x"] * 65))
    assert info.value.details == {"limit": "list_items", "value": 65, "max": 64, "field": "EventsRequest.kinds"}
    with pytest.raises(LimitExceeded, match="name_bytes"):
        check_request(pb.ResetRequest(wipe=["E" * 257]))
    with pytest.raises(LimitExceeded, match="url_bytes"):
        check_request(pb.UpgradeRequest(url="https://x/" + "a" * 5000))
    check_request(pb.ApplyConfigurationRequest(data=b"x" * 100_000))  # the config has its own limits
    assert first_problem(pb.Empty()) is None


@pytest.mark.parametrize("url", ["gopher://x/y", "http://x/y", "ftp://x", "relative/path.img", "data:,x"])
def test_only_file_and_https_urls(url):
    with pytest.raises(LimitExceeded) as info:
        check_url(url)
    assert info.value.details["limit"] == "url_schemes"


@pytest.mark.parametrize("url", ["https://example.com/v2.img", "file:///var/v2.img", "/var/v2.img"])
def test_allowed_urls(url):
    check_url(url)


async def _messages(*msgs: pb.UpgradeRequest) -> AsyncIterator[pb.UpgradeRequest]:
    for m in msgs:
        yield m


def receive(upload: Upload, *msgs: pb.UpgradeRequest) -> None:
    try:
        asyncio.run(upload.receive(_messages(*msgs)))
    except BaseException:
        upload.discard()
        raise


def test_an_upload_is_spooled_and_its_size_checked(tmp_path: Path):
    up = Upload(tmp_path / "spool")
    receive(up, pb.UpgradeRequest(chunk=b"ab", total_size=4, stage=True), pb.UpgradeRequest(chunk=b"cd"))
    assert up.stage and Path(up.source).read_bytes() == b"abcd"
    short = Upload(tmp_path / "spool")
    with pytest.raises(InvalidRequest, match="truncated"):
        receive(short, pb.UpgradeRequest(chunk=b"ab", total_size=4))
    assert [p.name for p in (tmp_path / "spool").iterdir()] == [Path(up.source).name]


def test_an_upload_over_the_limits_is_refused_before_it_is_written(tmp_path: Path):
    with pytest.raises(TooLarge) as info:
        receive(Upload(tmp_path / "spool", Limits(upload_bytes=10)), pb.UpgradeRequest(chunk=b"x", total_size=11))
    assert info.value.details["limit"] == "upload_bytes"
    with pytest.raises(TooLarge):
        receive(Upload(tmp_path / "spool", Limits(upload_bytes=10)), *[pb.UpgradeRequest(chunk=b"xxxx")] * 3)
    with pytest.raises(DiskFull) as full:
        receive(Upload(tmp_path / "spool", Limits(upload_free_bytes=1 << 62)), pb.UpgradeRequest(chunk=b"x"))
    assert full.value.details["limit"] == "upload_free_bytes"
    assert not list((tmp_path / "spool").glob("*"))  # nothing written, nothing left


def test_an_upload_needs_one_source(tmp_path: Path):
    with pytest.raises(InvalidRequest, match="needs an image"):
        receive(Upload(tmp_path), pb.UpgradeRequest(stage=True))
    with pytest.raises(InvalidRequest, match="not both"):
        receive(Upload(tmp_path), pb.UpgradeRequest(url="https://x/y.img", chunk=b"x"))


class _Refused(grpc.RpcError, grpc.Call):  # what grpcio raises when the node refuses a message by its size
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> str:
        return "CLIENT: Received message larger than max (52428810 vs. 4194304)"

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


def test_grpcs_own_size_refusal_names_the_limit_on_the_client():
    err = map_rpc_error(_Refused(), "n1:50000", "ApplyConfiguration")
    assert isinstance(err, TooLarge)
    assert err.details == {"limit": "message_bytes", "value": 52428810, "max": 4194304, "node": "n1:50000"}
