"""The model service's wire format: requests as JSON, answers as NDJSON lines (one event a line).

Both sides of the HTTP hop use it: the Ray Serve replicas (`model.serve`) write these lines and
the bot's `core.remote.RemoteModelService` reads them. It lives in `core/` because it needs only
the dataclasses of `core.service` and the JSON module: the bot's side stays free of torch and Ray.

A stream is a sequence of lines, each a JSON object with a "type":
- `{"type": "accepted", "queue_position": n, "replica": id}` first: the request was admitted;
- `{"type": "text", "text": "...", "tokens": n}` (stories) or `{"type": "progress", ...}` (/why);
- `{"type": "result", ...}` or `{"type": "error", "kind": ..., "message": ...}` last.
An error before "accepted" is a refusal (a bad prompt, busy); after it, the request failed.
A stream that ends without a last line means the replica died: the reader says so.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

from core import errors
from core.service import (
    StopReason,
    StoryRequest,
    StoryResult,
    WhyProgress,
    WhyRequest,
    WhyResult,
    WordImportance,
)
from core.settings import DecodingSettings

ERROR_KINDS: dict[str, type[errors.TaleweaverError]] = {
    kind.__name__: kind
    for kind in (
        errors.PromptError,
        errors.QueueFullError,
        errors.UserBusyError,
        errors.BusyError,
        errors.RequestTimeoutError,
        errors.GenerationFailedError,
        errors.ModelLoadError,
    )
}
"""The errors that cross the wire as themselves; any other becomes a `GenerationFailedError`."""


def line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def story_request_to_json(request: StoryRequest) -> dict[str, Any]:
    return {
        "user_id": request.user_id,
        "prompt": request.prompt,
        "settings": dataclasses.asdict(request.settings),
        "seed": request.seed,
        "keep_tail": request.keep_tail,
    }


def story_request_from_json(data: dict[str, Any]) -> StoryRequest:
    return StoryRequest(
        user_id=int(data["user_id"]),
        prompt=str(data["prompt"]),
        settings=DecodingSettings.from_mapping(data["settings"]),
        seed=int(data["seed"]),
        keep_tail=bool(data.get("keep_tail", False)),
    )


def why_request_to_json(request: WhyRequest) -> dict[str, Any]:
    return dataclasses.asdict(request)


def why_request_from_json(data: dict[str, Any]) -> WhyRequest:
    return WhyRequest(
        user_id=int(data["user_id"]),
        prompt=str(data["prompt"]),
        seed=int(data.get("seed", 0)),
        view=data.get("view", "bars"),
        keep_tail=bool(data.get("keep_tail", False)),
    )


def story_result_to_json(result: StoryResult) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    data["stop_reason"] = str(result.stop_reason)
    return data


def story_result_from_json(data: dict[str, Any]) -> StoryResult:
    return StoryResult(
        prompt=data["prompt"],
        continuation=data["continuation"],
        seed=int(data["seed"]),
        settings=DecodingSettings.from_mapping(data["settings"]),
        new_tokens=int(data["new_tokens"]),
        elapsed_s=float(data["elapsed_s"]),
        stop_reason=StopReason(data["stop_reason"]),
        precision=str(data.get("precision", "")),
    )


def _png(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unpng(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def why_result_to_json(result: WhyResult) -> dict[str, Any]:
    return {
        "prompt": result.prompt,
        "words": [dataclasses.asdict(word) for word in result.words],
        "token_sigmas": [list(pair) for pair in result.token_sigmas],
        "top_predictions": [list(pair) for pair in result.top_predictions],
        "iterations": result.iterations,
        "elapsed_s": result.elapsed_s,
        "stopped_early": result.stopped_early,
        "image_png": _png(result.image_png),
        "attention_png": _png(result.attention_png),
        "notes": list(result.notes),
    }


def why_result_from_json(data: dict[str, Any]) -> WhyResult:
    return WhyResult(
        prompt=data["prompt"],
        words=tuple(
            WordImportance(w["word"], tuple(w["tokens"]), float(w["sigma"]), float(w["importance"]))
            for w in data["words"]
        ),
        token_sigmas=tuple((str(t), float(s)) for t, s in data["token_sigmas"]),
        top_predictions=tuple((str(t), float(p)) for t, p in data["top_predictions"]),
        iterations=int(data["iterations"]),
        elapsed_s=float(data["elapsed_s"]),
        stopped_early=bool(data["stopped_early"]),
        image_png=_unpng(data.get("image_png")),
        attention_png=_unpng(data.get("attention_png")),
        notes=tuple(data.get("notes", ())),
    )


def progress_to_json(progress: WhyProgress) -> dict[str, Any]:
    return {"type": "progress", "fraction": progress.fraction, "status": progress.status}


def progress_from_json(data: dict[str, Any]) -> WhyProgress:
    return WhyProgress(float(data["fraction"]), str(data["status"]))


def error_to_json(error: BaseException) -> dict[str, Any]:
    """An error line; only a `TaleweaverError`'s message (written for users) crosses the wire."""
    if isinstance(error, errors.TaleweaverError):
        kind = type(error).__name__ if type(error).__name__ in ERROR_KINDS else "GenerationFailedError"
        payload: dict[str, Any] = {"type": "error", "kind": kind, "message": error.message}
        if isinstance(error, errors.BusyError) and error.retry_after is not None:
            payload["retry_after"] = error.retry_after
        return payload
    return {
        "type": "error",
        "kind": "GenerationFailedError",
        "message": "Something went wrong on my side; please try again.",
    }


def error_from_json(data: dict[str, Any]) -> errors.TaleweaverError:
    kind = ERROR_KINDS.get(str(data.get("kind")), errors.GenerationFailedError)
    message = str(data.get("message") or "Something went wrong on my side; please try again.")
    if issubclass(kind, errors.BusyError):
        return kind(message, retry_after=data.get("retry_after"))
    return kind(message)
