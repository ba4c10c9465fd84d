"""Reading a message request the way Discord does: JSON, or multipart with payload_json and files."""

from __future__ import annotations

import json
import mimetypes
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

_FILE_FIELD = re.compile(r"^files?\[?(\d*)\]?$")


@dataclass(frozen=True)
class Upload:
    """One uploaded file; `index` is the n of its `files[n]` field, which `attachments[].id` names."""

    index: int
    filename: str
    content_type: str
    data: bytes


async def read_body(request: web.Request) -> tuple[dict[str, Any], list[Upload]]:
    """The JSON payload and the uploaded files of a request; ({}, []) for an empty body."""
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request)
    if not request.can_read_body:
        return {}, []
    raw = await request.read()
    return (json.loads(raw) if raw.strip() else {}), []


async def _read_multipart(request: web.Request) -> tuple[dict[str, Any], list[Upload]]:
    payload: dict[str, Any] = {}
    uploads: list[Upload] = []
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "payload_json":
            payload = json.loads(await part.text())
            continue
        match = _FILE_FIELD.match(part.name or "")
        if match is None:
            continue
        filename = part.filename or f"file{len(uploads)}"
        content_type = part.headers.get("Content-Type", "application/octet-stream")
        if content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(filename)[0] or content_type
        index = int(match.group(1)) if match.group(1) else len(uploads)
        uploads.append(Upload(index, filename, content_type, bytes(await part.read(decode=False))))
    return payload, uploads
