"""What task_broker's workers send and receive on ``TASK_PORT`` (SPEC section 6). Pure: bytes in, bytes out.

A request is one frame, a JSON object ``{"desired products": ["tir", ...], "just testing": false}`` of at most
:data:`MAX_REQUEST_BYTES` (the schema of the original task_broker); :func:`parse_request` checks it and raises
:class:`BadRequest` with the reason, which the broker sends back as ``{"error": "<reason>"}``
(:func:`error_reply`). A task goes out as a posttroll message that posttroll 1.5 (the workers' version) and today's
posttroll both decode (:func:`encode_task`); nothing to hand out is an empty frame. The broker's ROUTER socket
receives each request behind its routing envelope (:func:`split_envelope`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from posttroll.message import Message

from avoviirscollector.broker.taskqueue import Task
from avoviirscollector.bus import encode_legacy

MAX_REQUEST_BYTES = 64 * 1024
MAX_PRODUCTS = 64
MAX_PRODUCT_NAME = 64


class BadRequest(ValueError):
    """A request the broker answers with ``{"error": ...}``."""


@dataclass(frozen=True)
class Request:
    desired_products: tuple[str, ...]
    just_testing: bool


def parse_request(payload: bytes) -> Request:
    """Validate one request body (the schema of the original task_broker); raise :class:`BadRequest`."""
    if len(payload) > MAX_REQUEST_BYTES:
        raise BadRequest(f"request is {len(payload)} bytes, the limit is {MAX_REQUEST_BYTES}")
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("request is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request is not a JSON object")
    if "desired products" not in body:
        raise BadRequest('request has no "desired products"')
    products = body["desired products"]
    if not isinstance(products, list):
        raise BadRequest('"desired products" is not a list')
    if not products:
        raise BadRequest('"desired products" is empty')
    if len(products) > MAX_PRODUCTS:
        raise BadRequest(f'"desired products" has more than {MAX_PRODUCTS} entries')
    for product in products:
        if not isinstance(product, str) or not product or len(product) > MAX_PRODUCT_NAME:
            raise BadRequest(f'"desired products" entries must be product names of 1-{MAX_PRODUCT_NAME} characters')
    just_testing = body.get("just testing", False)
    if not isinstance(just_testing, bool):
        raise BadRequest('"just testing" is not true or false')
    return Request(tuple(products), just_testing)


def error_reply(reason: str) -> bytes:
    """The reply to a request that is refused."""
    return json.dumps({"error": reason}).encode("utf-8")


def encode_task(task: Task) -> bytes:
    """The reply for a task: a posttroll message that posttroll 1.5 and today's posttroll both decode."""
    msg = Message(task.subject, task.atype, task.handout_data())
    msg.sender = task.sender
    msg.time = task.time
    return encode_legacy(msg).encode("utf-8")


def split_request(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """A request's frames as the TASK_PORT listener gives them (no routing id) -> (envelope up to and including REQ's
    empty delimiter, body frames); a DEALER that sends no delimiter has an empty envelope."""
    for index, frame in enumerate(frames):
        if frame == b"":
            return frames[: index + 1], frames[index + 1:]
    return [], frames


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """ROUTER frames -> (routing envelope including the empty delimiter, body frames)."""
    for index, frame in enumerate(frames):
        if frame == b"":
            return frames[: index + 1], frames[index + 1:]
    return frames[:1], frames[1:]
