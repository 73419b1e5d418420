"""A refusal's whole gRPC status fits in 8 KiB (limit status_bytes), whatever the error carries."""

from __future__ import annotations

import json

from google.rpc import status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from api._pb import machine_pb2 as pb
from api._status import error_status
from config.limits import LIMITS
from errors import GravenError, InvalidConfig, TooLarge


def trailer_bytes(exc: GravenError) -> tuple[int, pb.ErrorDetail]:
    st_ = error_status(exc)
    size = sum(len(k) + len(v) for k, v in st_.trailing_metadata) + len(st_.details.encode()) * 3
    status = status_pb2.Status.FromString(dict(st_.trailing_metadata)["grpc-status-details-bin"])
    detail = pb.ErrorDetail()
    status.details[0].Unpack(detail)
    return size, detail


text = st.text(alphabet=st.characters(codec="utf-8"), max_size=3000)


@settings(max_examples=60, deadline=None)
@given(text, st.lists(st.fixed_dictionaries({"path": text, "line": st.integers(0, 10**6), "message": text}),
                      max_size=60), text)
def test_any_config_error_fits_the_status_budget(message, errors, extra):
    size, detail = trailer_bytes(InvalidConfig(message, errors=errors, source=extra))
    assert size < LIMITS.status_bytes
    details = json.loads(detail.details_json)
    assert len(details.get("errors", [])) + details.get("errors_omitted", 0) in (len(errors), 0)


def test_a_limit_refusal_names_its_limit_and_value():
    size, detail = trailer_bytes(TooLarge("too big", limit="config_bytes", value=5, max=4))
    assert detail.code == pb.TOO_LARGE and json.loads(detail.details_json) == {"limit": "config_bytes", "value": 5,
                                                                               "max": 4}
    assert size < 1024
