"""A create request's body made into the task it asks for: ``prepare``.

The body (JSON, or a ``multipart/form-data`` form with the images as files) is parsed, checked
(``validation.check_task``) and digested (``store.request_digest``) here, with no I/O and nothing shared,
so that a large one can be done in a parse process (``bodies.LargeBodies.run``) and a small one where it
was read. Images over ``INLINE_IMAGE_MAX`` come back decoded, for the upload to DashScope's temporary
storage, and their data URLs stay out of the fields sent back.

A form is read with python-multipart (the parser Starlette's own forms use), within its limits on each
part's headers (``MAX_PART_HEADERS`` of at most ``MAX_PART_HEADER_BYTES``) and ours on the parts: at most
``MAX_PARTS``, a text field of at most ``MAX_FIELD_BYTES``, a file of at most ``IMAGE_MAX_BYTES``. It scans
for the boundary rather than reading line by line, so a form of tiny lines costs what its bytes cost
(the email parser took 20-45 s for 27 MiB of them).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..core import documents
from ..core.errors import InvalidField
from ..domain.models import IMAGE_MAX_BYTES
from ..domain.validation import ALL_IMAGE_FIELDS, DATA_URL, check_image_bytes, check_task
from ..persistence.store import request_digest
from .responses import ApiError, parse_json

__all__ = ["INLINE_IMAGE_MAX", "MAX_PARTS", "TASK_BODY_LIMIT", "Prepared", "prepare"]

TASK_BODY_LIMIT = 64 * 1024
# Images up to this many bytes are stored with the task and sent to DashScope as base64; larger ones are put
# in DashScope's temporary storage when the task is created, and only their oss:// URL is stored (Redis
# keeps tasks small, and a create carries no more than this inline).
INLINE_IMAGE_MAX = 1024 * 1024

# multipart/form-data: the task's fields as form fields, images as files (or as URLs in the same fields).
FORM_INTEGERS = ("duration", "seed")
FORM_BOOLEANS = ("prompt_extend", "watermark", "audio")
FORM_JSON = ("callback", "metadata")
INTEGER = re.compile(r"-?[0-9]{1,19}")
MAX_PARTS = 32  # a task has fewer fields than this
MAX_FIELD_BYTES = TASK_BODY_LIMIT
MAX_PART_HEADERS = 8  # python-multipart's defaults (DEFAULT_MAX_HEADER_COUNT, DEFAULT_MAX_HEADER_SIZE)
MAX_PART_HEADER_BYTES = 4096 + 128


@dataclass
class Prepared:
    """The task's fields (with ``owner``), the request's digest when asked for, and the large images."""

    fields: dict[str, Any]
    digest: str | None
    uploads: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # field -> (content type, bytes)


def prepare(body: bytes, content_type: str, *, owner: str, allow_private: bool, digest: bool) -> Prepared:
    if is_form(content_type):
        document: Any = read_form(body, content_type)
    else:
        too_large = ApiError(413, "body_too_large", f"the body is over the limit of {TASK_BODY_LIMIT} bytes")
        # Only a task with images may be larger: first by its text (before parsing), then by its fields.
        if len(body) > TASK_BODY_LIMIT and not any(f'"{name}"'.encode() in body for name in ALL_IMAGE_FIELDS):
            raise too_large
        document = parse_json(body)
        images = isinstance(document, dict) and any(isinstance(document.get(name), str) for name in ALL_IMAGE_FIELDS)
        if len(body) > TASK_BODY_LIMIT and not images:
            raise too_large
    fields = check_task(document, allow_private_callbacks=allow_private)
    fields["owner"] = owner
    # The request's digest, of what was sent: an image uploaded later changes the fields, not the request.
    prepared = Prepared(fields, request_digest(fields) if digest else None)
    parameters = fields["parameters"]
    for name in ALL_IMAGE_FIELDS:
        match = DATA_URL.fullmatch(parameters.get(name) or "")
        if match is not None and len(match.group(2)) * 3 // 4 > INLINE_IMAGE_MAX:
            prepared.uploads[name] = (match.group(1), base64.b64decode(match.group(2)))
            parameters[name] = None  # replaced by the upload's oss:// URL before the task is stored
    return prepared


def is_form(content_type: str) -> bool:
    content_type = content_type.lower()
    return content_type.startswith("multipart/form-data") and "boundary=" in content_type


class _Part:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.data = bytearray()
        self.disposition = b""
        self.params: dict[bytes, bytes] = {}

    @property
    def is_file(self) -> bool:
        # python-multipart drops RFC 2231's filename* (RFC 7578 says not to send it): a part that names its
        # file so is a file all the same, for its limit and for what it is taken as.
        return b"filename" in self.params or b"filename*" in self.headers.get(b"content-disposition", b"").lower()


def read_form(body: bytes, content_type: str) -> dict[str, Any]:
    """A ``POST /v1/tasks`` form as the JSON body it stands for: each image file becomes a base64 data URL,
    checked afterwards like any other (``check_task``)."""
    invalid = ApiError(400, "invalid_form", "the body is not a valid multipart/form-data form")
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise invalid
    parts: list[_Part] = []
    header: list[bytes] = [b"", b""]
    ended = False

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise ApiError(400, "invalid_form", f"the form has more than {MAX_PARTS} parts")
        parts.append(_Part())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        part, name = parts[-1], header[0].lower()
        part.headers[name] = header[1]
        if name == b"content-disposition":
            part.disposition, part.params = parse_options_header(header[1])
        header[0] = header[1] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = parts[-1]
        part.data += data[start:end]
        limit = IMAGE_MAX_BYTES if part.is_file else MAX_FIELD_BYTES
        if len(part.data) > limit:
            raise ApiError(413, "body_too_large", f"a part of the form is over {limit} bytes")

    def on_end() -> None:
        nonlocal ended
        ended = True

    try:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_part_data": on_part_data,
                "on_end": on_end,
            },
            max_header_count=MAX_PART_HEADERS,
            max_header_size=MAX_PART_HEADER_BYTES,
        )
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise ApiError(400, "invalid_form", f"the body is not a valid multipart/form-data form ({exc})") from None
    if not ended or not parts:
        raise invalid
    document: dict[str, Any] = {}
    for part in parts:
        name = part.params.get(b"name", b"").decode("utf-8", "replace")
        if part.disposition != b"form-data" or not name:
            raise ApiError(400, "invalid_form", "every part of the form needs a name and a body")
        if name in document:
            raise InvalidField(name, "is given more than once")
        payload = bytes(part.data)
        if part.is_file:  # only the image fields take a file
            if name not in ALL_IMAGE_FIELDS:
                raise InvalidField(name, f"takes no file; files go in {', '.join(ALL_IMAGE_FIELDS)}")
            check_image_bytes(name, payload)
            declared = part.headers.get(b"content-type", b"").decode("latin-1").split(";", 1)[0].strip().lower()
            kind = declared if declared.startswith("image/") else "image/jpeg"
            document[name] = f"data:{kind};base64,{base64.b64encode(payload).decode()}"
            continue
        try:
            value = payload.decode()
        except UnicodeDecodeError:
            raise InvalidField(name, "is not UTF-8 text") from None
        document[name] = _form_value(name, value)
    return document


def _form_value(name: str, value: str) -> Any:
    if name in FORM_INTEGERS:
        # ASCII digits only: str.isdigit() takes "²", which int() refuses.
        if INTEGER.fullmatch(value.strip()) is None:
            raise InvalidField(name, "must be an integer")
        return int(value)
    if name in FORM_BOOLEANS:
        if value not in ("true", "false"):
            raise InvalidField(name, "must be true or false")
        return value == "true"
    if name in FORM_JSON:
        return documents.load(value.encode(), lambda code, message: InvalidField(name, "must be JSON in a form"))
    return value
