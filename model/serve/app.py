"""The Ray Serve side: two deployments, each replica running the in-process `ModelService`.

- `stories` (route `/stories`): `POST /stories/story` streams a story as NDJSON lines
  (`core.wire`), `POST /stories/count` counts tokens, `GET /stories/ready` says which replica
  answered and how busy it is. Each replica runs the same continuous-batching scheduler as the
  in-process service, so a replica batches its own stories; Serve only spreads requests.
- `explanations` (route `/why`): `POST /why/why` streams `/why` progress and its result. Apart
  from stories because an explanation runs alone and needs gradients: a long one must not hold
  up a replica's story batch, and the two scale separately.

Each is its own Serve application (both deployed by one `serve.run_many`) rather than one behind a
routing ingress deployment: the proxy then reaches the replica in one hop, and a stream is not
copied through a second actor. `deploy` returns once both run, or says why not.

Stop crosses the wire as a disconnect: Serve cancels the request, and the stream's `finally`
stops its row, which leaves the batch at its next step.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray import serve
from ray.serve.api import RunTarget
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from core.config import Config
from core.errors import PromptError, TaleweaverError
from core.wire import (
    error_to_json,
    line,
    progress_to_json,
    story_request_from_json,
    story_result_to_json,
    why_request_from_json,
    why_result_to_json,
)
from model.loading import load_model
from model.serve.placement import Replicas
from model.service import ModelService

NDJSON = "application/x-ndjson"
UNLIMITED = 1_000_000_000
APPLICATIONS = ("stories", "explanations")
START_TIMEOUT_S = 300.0
"""How long the replicas may take to load the model and answer their first health check."""


class DeployError(Exception):
    """The applications did not come up; the message says what Serve reports of each."""


class _Replica:
    """What both deployments share: the model, a lazily started `ModelService`, and health."""

    def __init__(self, config: dict[str, Any]) -> None:
        given = Config.model_validate(config)
        # Per-user limits stay in the bot, which sees all of a user's requests; a replica sees only
        # some, and would refuse a new story while a Stopped one's disconnect is still on its way.
        unlimited = {"per_user_in_flight": UNLIMITED, "per_user_per_minute": UNLIMITED}
        self.config = given.model_copy(update={"service": given.service.model_copy(update=unlimited)})
        model = self.config.model
        self.loaded = load_model(
            self.config.model_source, model.device, model.dtype, model.compile, model.onednn_linears, model.precision
        )
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.actor = ray.get_runtime_context().get_actor_name()
        """Serve's name of this replica's actor (`ray.get_actor(name, namespace="serve")`)."""
        self.served = 0
        self.stopped: deque[int] = deque(maxlen=100)
        """Tokens each recent stopped request had written when its row left the batch (tests read it)."""
        self._service: ModelService | None = None
        self._starting = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def service(self) -> ModelService:
        """Started on the first request: the scheduler must run on the loop Serve runs requests on."""
        async with self._starting:
            if self._service is None:
                service = ModelService(self.loaded, self.config)
                await service.start()
                self._service = service
        return self._service

    async def check_health(self) -> None:
        """Serve restarts a replica whose scheduler has died (it would refuse everyone)."""
        if self._service is not None and not await self._service.ready():
            raise RuntimeError("the model scheduler is not running")

    async def status(self) -> JSONResponse:
        service = await self.service()
        return JSONResponse(
            {
                "ready": await service.ready(),
                "replica": self.replica,
                "actor": self.actor,
                "served": self.served,
                "queue_length": service.queue_length,
                "writing": len(service._writing),
                "stopped": list(self.stopped),
                "max_prompt_tokens": service.max_prompt_tokens,
            }
        )

    @staticmethod
    def refused(error: TaleweaverError) -> StreamingResponse:
        return StreamingResponse(iter([line(error_to_json(error))]), media_type=NDJSON)

    async def _relay(self, stream: Any, event: Any) -> AsyncIterator[bytes]:
        """The stream's lines: accepted, events, then a result or an error; stopped if the client leaves."""
        ended = False
        try:
            yield line({"type": "accepted", "queue_position": stream.queue_position, "replica": self.replica})
            async for item in event(stream):
                yield item
            ended = True
        finally:
            if not ended:  # the client went away (Stop, a deleted message, the bot restarting)
                stream.stop()
                task = asyncio.get_running_loop().create_task(self._count_stopped(stream))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _count_stopped(self, stream: Any) -> None:
        try:
            result = await stream.result()
        except TaleweaverError:
            return
        self.stopped.append(getattr(result, "new_tokens", 0))


@serve.deployment(name="stories", health_check_period_s=2, health_check_timeout_s=30, graceful_shutdown_timeout_s=5)
class Stories(_Replica):
    """Story replicas: streamed, continuously batched inside each replica."""

    async def __call__(self, request: Request) -> Response:
        action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        if action == "ready":
            return await self.status()
        service = await self.service()
        data = await request.json()
        if action == "count":
            return JSONResponse({"tokens": await service.count_tokens(str(data["text"]))})
        if action != "story":
            return JSONResponse({"error": "unknown action"}, status_code=404)
        try:
            stream = await service.story(story_request_from_json(data))
        except TaleweaverError as exc:
            return self.refused(exc)
        except (KeyError, TypeError, ValueError) as exc:
            return self.refused(PromptError(f"That request was malformed ({type(exc).__name__})."))
        self.served += 1
        return StreamingResponse(self._relay(stream, self._story_lines), media_type=NDJSON)

    async def _story_lines(self, stream: Any) -> AsyncIterator[bytes]:
        service = await self.service()
        text = ""
        async for delta in stream:
            text += delta
            # The count lets the client answer a Stop (a disconnect) with the tokens written so far.
            yield line({"type": "text", "text": delta, "tokens": await service.count_tokens(text)})
        try:
            result = await stream.result()
        except TaleweaverError as exc:
            yield line(error_to_json(exc))
        else:
            yield line({"type": "result", "replica": self.replica, **story_result_to_json(result)})


@serve.deployment(
    name="explanations", health_check_period_s=2, health_check_timeout_s=30, graceful_shutdown_timeout_s=5
)
class Explanations(_Replica):
    """`/why` replicas: one explanation at a time per replica (it needs gradients and runs alone)."""

    async def __call__(self, request: Request) -> Response:
        action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        if action == "ready":
            return await self.status()
        if action != "why":
            return JSONResponse({"error": "unknown action"}, status_code=404)
        service = await self.service()
        try:
            stream = await service.why(why_request_from_json(await request.json()))
        except TaleweaverError as exc:
            return self.refused(exc)
        except (KeyError, TypeError, ValueError) as exc:
            return self.refused(PromptError(f"That request was malformed ({type(exc).__name__})."))
        self.served += 1
        return StreamingResponse(self._relay(stream, self._why_lines), media_type=NDJSON)

    async def _why_lines(self, stream: Any) -> AsyncIterator[bytes]:
        async for progress in stream:
            yield line(progress_to_json(progress))
        try:
            result = await stream.result()
        except TaleweaverError as exc:
            yield line(error_to_json(exc))
        else:
            yield line({"type": "result", "replica": self.replica, **why_result_to_json(result)})


def ongoing_limit(config: Config) -> int:
    """Requests one replica takes at once: its own queue and batch, so its own "busy" answers first."""
    return config.service.queue_size + config.service.max_batch_size + 4


def scaling(replicas: Replicas, target_ongoing_requests: float) -> dict[str, Any]:
    """Deployment options for a fixed number of replicas, or for Serve's autoscaler over a range."""
    if not replicas.autoscaled:
        return {"num_replicas": replicas.minimum}
    return {
        "num_replicas": "auto",
        "autoscaling_config": {
            "min_replicas": replicas.minimum,
            "max_replicas": replicas.maximum,
            "target_ongoing_requests": target_ongoing_requests,
        },
    }


def deploy(
    config: Config,
    *,
    replicas: Replicas | int = 1,
    why_replicas: Replicas | int = 1,
    actor_options: dict[str, Any] | None = None,
    target_ongoing_requests: float | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    """Run both applications on the Ray cluster `ray.init` joined (Serve's proxy must be started),
    and return once both are running; `DeployError` says what is not.

    Story replicas autoscale toward `target_ongoing_requests` each (default: the stories one
    replica writes at once, `service.max_batch_size`); /why replicas toward one (an explanation
    runs alone).
    """
    stories_replicas = replicas if isinstance(replicas, Replicas) else Replicas(replicas, replicas)
    why = why_replicas if isinstance(why_replicas, Replicas) else Replicas(why_replicas, why_replicas)
    target = target_ongoing_requests or float(config.service.max_batch_size)
    data = config.model_dump(mode="json")
    options = {"num_cpus": 1} if actor_options is None else actor_options
    limit = ongoing_limit(config)
    stories = Stories.options(
        **scaling(stories_replicas, target),
        max_ongoing_requests=limit,
        max_queued_requests=config.service.queue_size,
        ray_actor_options=options,
    ).bind(data)
    explanations = Explanations.options(
        **scaling(why, 1.0),
        max_ongoing_requests=limit,
        max_queued_requests=config.service.queue_size,
        ray_actor_options=options,
    ).bind(data)
    serve.run_many(
        [
            RunTarget(stories, name=APPLICATIONS[0], route_prefix="/stories"),
            RunTarget(explanations, name=APPLICATIONS[1], route_prefix="/why"),
        ],
        wait_for_applications_running=False,
    )
    wait_until_running(APPLICATIONS, timeout_s)


def wait_until_running(names: tuple[str, ...], timeout_s: float) -> None:
    """Until every application is RUNNING; `DeployError` at once when one fails, or at the deadline
    with what Serve says of each one still starting (a replica it cannot schedule, say)."""
    deadline = time.monotonic() + timeout_s
    while True:
        applications = serve.status().applications
        states = {name: applications.get(name) for name in names}
        failed = [name for name, app in states.items() if app is not None and app.status == "DEPLOY_FAILED"]
        if failed:
            raise DeployError(f"{failed[0]} failed to deploy: {_why_not(states[failed[0]])}")
        waiting = [name for name, app in states.items() if app is None or app.status != "RUNNING"]
        if not waiting:
            return
        if time.monotonic() > deadline:
            detail = "; ".join(f"{name}: {_why_not(states[name])}" for name in waiting)
            raise DeployError(f"not running after {timeout_s:.0f} s: {detail}")
        time.sleep(0.5)


def _why_not(app: Any) -> str:
    if app is None:
        return "not deployed yet"
    messages = [app.message, *(d.message for d in app.deployments.values())]
    return f"{app.status}" + "".join(f"; {message}" for message in messages if message)
