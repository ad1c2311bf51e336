"""HTTP helpers shared by the routes: JSON with ETags (304 on a match), errors as JSON.

Errors from :mod:`unbroken.errors` become a status and ``{"error": message}``: ConfigError 400,
NotFound / CheckpointNotFound 404, CorruptCheckpoint 409, TrialBusy 409, TrackingError 503,
any other UnbrokenError 500.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import (CheckpointNotFound, ConfigError, CorruptCheckpoint, NotFound, TrackingError, TrialBusy,
                      UnbrokenError)

_STATUS = ((ConfigError, 400), (NotFound, 404), (CheckpointNotFound, 404), (CorruptCheckpoint, 409),
           (TrialBusy, 409), (TrackingError, 503), (UnbrokenError, 500))


def status_of(exc: UnbrokenError) -> int:
    return next(code for kind, code in _STATUS if isinstance(exc, kind))


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def handled(endpoint: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """Turn an UnbrokenError raised by a (synchronous) endpoint into its JSON error response."""
    @functools.wraps(endpoint)
    def wrapper(request: Request) -> Response:
        try:
            return endpoint(request)
        except UnbrokenError as exc:
            return error(status_of(exc), str(exc))
    return wrapper


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha1(body).hexdigest()[:20] + '"'


def conditional(request: Request, body: bytes, media_type: str, headers: dict[str, str] | None = None) -> Response:
    """``body`` with an ETag, or 304 Not Modified when the request's If-None-Match has it."""
    tag = etag_of(body)
    common = {"ETag": tag, "Cache-Control": "no-cache", **(headers or {})}
    if tag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=common)
    return Response(body, media_type=media_type, headers=common)


def json_conditional(request: Request, doc: Any) -> Response:
    """``doc`` as JSON (NaN refused, as the CLI does) with an ETag (see :func:`conditional`)."""
    return conditional(request, json.dumps(doc, allow_nan=False).encode(), "application/json")
