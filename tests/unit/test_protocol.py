"""The wire protocol: framing, validation, limits, defaults shared with the pipeline."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin.protocol import Params


def job_frames(**over):
    fields = {"width": 4, "height": 3, "depth": "u8", "pairs": [[0, 0, 3, 2]], "model": "tiny"}
    blobs = {"pixels": bytes(4 * 3 * 4)}
    for key, value in over.items():
        if key in ("pixels", "mask"):
            if value is None:
                blobs.pop(key, None)
            else:
                blobs[key] = value
        elif value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return P.encode("drag", "j1", fields, blobs)


def check(frames):
    return P.check_job(P.decode(frames))


def test_roundtrip_keeps_header_and_named_blobs():
    frames = P.encode("drag", "abc-1", {"x": 1}, {"pixels": b"\x01\x02", "mask": b"\x03"})
    assert len(frames) == 3
    msg = P.decode(frames)
    assert msg.op == "drag" and msg.id == "abc-1" and msg.header["x"] == 1
    assert msg.header["v"] == P.PROTOCOL_VERSION
    assert msg.blobs == {"pixels": b"\x01\x02", "mask": b"\x03"}


@pytest.mark.parametrize(
    "frames, code",
    [
        ([], "bad_message"),
        ([b"\xff\xfe"], "bad_message"),
        ([b"[1, 2]"], "bad_message"),
        ([b'{"v": 1, "op": "hello"}'], "bad_message"),
        ([b'{"v": 1, "op": "hello", "id": "a b"}'], "bad_message"),
        ([b'{"v": 2, "op": "hello", "id": "a"}'], "bad_version"),
        ([b'{"v": 1, "op": 7, "id": "a"}'], "bad_message"),
        ([b'{"v": 1, "op": "drag", "id": "a", "frames": ["pixels"]}'], "bad_message"),
        ([b'{"v": 1, "op": "drag", "id": "a"}', b"extra"], "bad_message"),
        ([b'{"v": 1, "op": "drag", "id": "a", "frames": ["p", "p"]}', b"", b""], "bad_message"),
        ([b'{"v": 1, "op": "hello", "id": "a", "x": NaN}'], "bad_message"),
        ([b"[" * 50000 + b"]" * 50000], "too_large"),
        ([b"[" * 30000 + b"]" * 30000], "bad_message"),
    ],
)
def test_decode_rejects_broken_framing(frames, code):
    with pytest.raises(P.ProtocolError) as err:
        P.decode(frames)
    assert err.value.code == code


def test_peek_id_recovers_the_id_of_a_message_that_failed_later_checks():
    assert P.peek_id([b'{"v": 9, "op": "hello", "id": "r-7"}']) == "r-7"
    assert P.peek_id([b"junk"]) == ""
    assert P.peek_id([b'{"id": "bad id"}']) == ""


def test_job_validation_accepts_a_good_photo_job_and_fills_defaults():
    req = check(job_frames(params={"steps": 5}))
    assert req.image == P.ImageSpec(4, 3, "u8")
    assert req.pairs == [((0.0, 0.0), (3.0, 2.0))]
    assert req.params.steps == 5 and req.params.lr is None  # the model's own step
    assert req.seed is None and req.mask is None


@pytest.mark.parametrize(
    "over, code",
    [
        ({"pixels": bytes(47)}, "bad_request"),
        ({"pixels": None}, "bad_request"),
        ({"mask": bytes(11)}, "bad_request"),
        ({"width": 0}, "bad_request"),
        ({"width": 2.5}, "bad_request"),
        ({"width": True}, "bad_request"),
        ({"width": 100000, "height": 100000}, "too_large"),
        ({"width": 16000, "height": 16000}, "too_large"),
        ({"width": 8192, "height": 8192, "depth": "f32"}, "too_large"),
        ({"depth": "u12"}, "bad_request"),
        ({"pairs": []}, "bad_request"),
        ({"pairs": [[0, 0, 3]]}, "bad_request"),
        ({"pairs": [[0, 0, 3, 9]]}, "bad_request"),
        ({"pairs": [[0, 0, -1, 1]]}, "bad_request"),
        ({"pairs": [[0, 0, "1", 1]]}, "bad_request"),
        ({"pairs": [[0, 0, 1, 1]] * (P.MAX_POINTS + 1)}, "bad_request"),
        ({"pairs": "0,0:1,1"}, "bad_request"),
        ({"params": {"steps": -1}}, "bad_request"),
        ({"params": {"steps": 1.5}}, "bad_request"),
        ({"params": {"lr": 5.0}}, "bad_request"),
        ({"params": {"preset": "best"}}, "bad_request"),
        ({"params": {"turbo": 1}}, "bad_request"),
        ({"params": [1]}, "bad_request"),
        ({"model": "../../etc/passwd"}, "bad_request"),
        ({"model": "/abs/model.pkl"}, "bad_request"),
        ({"model": "C:\\m.pkl"}, "bad_request"),
        ({"session": "not an id"}, "bad_request"),
        ({"seed": 3}, "bad_request"),
    ],
)
def test_job_validation_names_each_problem(over, code):
    with pytest.raises(P.ProtocolError) as err:
        check(job_frames(**over))
    assert err.value.code == code
    assert err.value.message


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"pairs": []}, "at least one handle -> target pair"),
        ({"pairs": [[60, 1, 1, 1]]}, r"point \(60, 1\) is outside the 4x3 image"),
        ({"mask": bytes(12)}, "the selection is empty"),
        ({"mask": b"\xff" + bytes(11)}, r"pair 0: target \(3, 2\) lies outside the selection"),
        ({"pairs": [[1, 1, 1.2, 1.1]]}, "handle and target are the same point"),
        ({"params": {"preset": "slow"}}, "preset must be one of"),
        ({"params": {"blend": "paint"}}, "blend must be one of"),
    ],
)
def test_bad_jobs_say_what_to_do(over, message):
    """Checked once, where a job enters; the pipeline trusts what passed."""
    with pytest.raises(P.ProtocolError, match=message) as err:
        check(job_frames(**over))
    assert err.value.code == "bad_request"


def test_checked_applies_the_wire_rules_to_a_request_built_here():
    good = P.JobRequest.photo(bytes(48), 4, 3, [((0, 0), (3, 2))], params=Params(steps=5))
    assert P.checked(good) == P.JobRequest.photo(
        bytes(48), 4, 3, [((0.0, 0.0), (3.0, 2.0))], params=Params(steps=5)
    )
    with pytest.raises(P.ProtocolError, match="steps must be in"):
        P.checked(dataclasses.replace(good, params=Params(steps=5000)))
    with pytest.raises(P.ProtocolError, match="four finite numbers"):
        P.checked(dataclasses.replace(good, pairs=[((float("nan"), 0.0), (3.0, 2.0))]))


def test_seed_form_takes_no_pixels_and_an_optional_model_sized_mask():
    frames = P.encode("drag", "s1", {"seed": 7, "pairs": [[1, 1, 5, 5]]})
    req = check(frames)
    assert req.seed == 7 and req.image is None and req.pixels is None
    frames = P.encode(
        "drag",
        "s2",
        {"seed": 7, "pairs": [[1, 1, 5, 5]], "width": 8, "height": 8},
        {"mask": bytes(64)},
    )
    req = check(frames)
    assert req.image == P.ImageSpec(8, 8, "u8") and req.mask == bytes(64)
    with pytest.raises(P.ProtocolError):
        check(P.encode("drag", "s3", {"seed": -1, "pairs": [[1, 1, 5, 5]]}))
    with pytest.raises(P.ProtocolError):
        check(P.encode("invert", "s4", {"seed": 1, "pairs": []}))


def test_job_fields_is_the_inverse_of_check_job():
    req = check(job_frames(mask=b"\xff" * 12, session="abc123", params={"preview_every": 5}))
    fields, blobs = P.job_fields(req)
    again = P.check_job(P.decode(P.encode("drag", "j1", fields, blobs)))
    assert again == req


def test_every_parameter_has_one_rule_and_the_rules_fill_in_its_default():
    assert tuple(f.name for f in dataclasses.fields(Params)) == P.PARAM_NAMES
    assert P.check_params({}) == Params()
    assert P.check_params(Params(steps=7, lr=0.01).fields()) == Params(steps=7, lr=0.01)


def test_result_and_progress_roundtrip():
    r = P.JobResult(
        session="s1",
        x=3,
        y=4,
        width=2,
        height=1,
        depth="u16",
        patch=bytes(16),
        points=[(1.5, 2.0)],
        distances=[0.5],
        steps=9,
        timings={"drag": 1.0},
    )
    assert P.parse_result(P.decode(P.result_frames("j", r))) == r
    with pytest.raises(ValueError):
        P.result_frames("j", dataclasses.replace(r, patch=bytes(15)))
    ev = P.ProgressEvent("drag", 3, 10, [(1.0, 2.0)], [4.0], b"\xff\xd8jpeg", (-4, 2, 64, 64))
    assert P.parse_progress(P.decode(P.progress_frames("j", ev))) == ev
    ev = P.ProgressEvent("invert", 1, 10)
    assert P.parse_progress(P.decode(P.progress_frames("j", ev))) == ev


def test_error_frames_carry_code_message_and_a_hint_for_people():
    header = json.loads(P.error_frames("j", "model_not_cached", "model 'x' is missing")[0])
    assert header["op"] == "error" and header["code"] == "model_not_cached"
    assert "models download" in header["hint"]
    assert "models download" in P.ProtocolError("model_not_cached", "missing").sentence
    with pytest.raises(ValueError):
        P.error_frames("j", "no_such_code", "x")


def test_addresses(monkeypatch):
    monkeypatch.delenv(P.ADDRESS_ENV, raising=False)
    assert P.default_address() == "tcp://127.0.0.1:5589"
    monkeypatch.setenv(P.ADDRESS_ENV, "tcp://127.0.0.1:6000")
    assert P.default_address() == "tcp://127.0.0.1:6000"
    assert P.is_loopback("tcp://127.0.0.1:1") and P.is_loopback("tcp://localhost:1")
    assert P.is_loopback("tcp://[::1]:1") and P.is_loopback("ipc:///tmp/x")
    assert not P.is_loopback("tcp://0.0.0.0:1") and not P.is_loopback("tcp://*:1")
    assert not P.is_loopback("tcp://192.168.1.2:1")
    assert P.check_address("tcp://*:5589") == "tcp://*:5589"
    for bad in ("127.0.0.1:5589", "tcp://host", "tcp://host:0", "http://x:1", "tcp://:5"):
        with pytest.raises(ValueError):
            P.check_address(bad)
