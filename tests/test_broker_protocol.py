"""What workers send and receive (broker/protocol.py): the request schema of the original task_broker, each refusal
with its reason, and the ROUTER envelope."""

from __future__ import annotations

import pytest

from avoviirscollector.broker.protocol import MAX_REQUEST_BYTES, parse_request, split_envelope

# -- pure request handling -------------------------------------------------------------------------------------

GOOD = [
    (b'{"desired products": ["tir"]}', (("tir",), False)),
    (b'{"desired products": ["tir", "mir"], "just testing": true}', (("tir", "mir"), True)),
    (b'{"desired products": ["x"], "just testing": false, "extra": 1}', (("x",), False)),
]
BAD = [
    (b"", "not JSON"), (b"gimme something to do", "not JSON"), (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"), (b'"tir"', "not a JSON object"), (b"null", "not a JSON object"),
    (b"{}", 'no "desired products"'), (b'{"desired products": "tir"}', "not a list"),
    (b'{"desired products": []}', "empty"), (b'{"desired products": [1]}', "product names"),
    (b'{"desired products": [""]}', "product names"), (b'{"desired products": [null]}', "product names"),
    (b'{"desired products": ["tir"], "just testing": "yes"}', '"just testing"'),
    (b'{"desired products": ["tir"], "just testing": 1}', '"just testing"'),
    (b'{"desired products": ["tir"], "pad": "' + b"x" * MAX_REQUEST_BYTES + b'"}', "limit"),
    (b"[" * 100000 + b"]" * 100000, "limit"),
    (b"[" * 5000 + b"]" * 5000, "not a JSON object"),
]


@pytest.mark.parametrize("payload,expected", GOOD)
def test_parse_request_accepts_the_original_schema(payload, expected):
    got = parse_request(payload)
    assert (got.desired_products, got.just_testing) == expected


@pytest.mark.parametrize("payload,reason", BAD, ids=[repr(p[:30]) for p, _ in BAD])
def test_parse_request_refuses_with_a_reason(payload, reason):
    with pytest.raises(ValueError, match=reason):
        parse_request(payload)


def test_split_envelope():
    assert split_envelope([b"id", b"", b"body"]) == ([b"id", b""], [b"body"])
    assert split_envelope([b"id", b"body"]) == ([b"id"], [b"body"])
    assert split_envelope([b"id", b"", b"a", b"b"]) == ([b"id", b""], [b"a", b"b"])
