"""Read endpoints of one trial, addressed ``/api/trials/EXPERIMENT/NUMBER``: the ``show``
document, its checkpoints, a metric series, an attempt's log. Every id is validated (ids.py)."""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ConfigError, NotFound
from ..tracking import Trial
from . import ids, logs, series
from .documents import checkpoints_document, trial_document
from .responses import conditional, handled, json_conditional
from .state import ServerState

PREFIX = "/api/trials/{experiment}/{number}"


def trial_of(state: ServerState, request: Request) -> Trial:
    """The trial named by the path (400 for a bad id, 404 for an unknown one)."""
    params = request.path_params
    return state.trial(ids.experiment(params["experiment"]), ids.number(params["number"]))


def _float(request: Request, key: str, default: float) -> float:
    raw = request.query_params.get(key)
    try:
        value = default if raw in (None, "") else float(raw)
    except ValueError:
        raise ConfigError(f"invalid {key} {raw!r}: a number") from None
    if math.isnan(value):
        raise ConfigError(f"invalid {key}: NaN")
    return value


def _choice(request: Request, key: str, allowed: tuple[str, ...]) -> str:
    value = request.query_params.get(key, allowed[0])
    if value not in allowed:
        raise ConfigError(f"invalid {key} {value!r}: one of {', '.join(allowed)}")
    return value


def routes(state: ServerState) -> list[Route]:
    @handled
    def show(request: Request) -> Response:
        """The document of ``unbroken show EXPERIMENT/NUMBER --json`` (ETag: 304 when unchanged)."""
        trial = trial_of(state, request)
        stats = state.stats([trial.id]).get(trial.id, {})
        return json_conditional(request, trial_document(state.require(), trial, stats))

    @handled
    def checkpoints(request: Request) -> Response:
        """The document of ``unbroken checkpoints EXPERIMENT/NUMBER --json``."""
        trial = trial_of(state, request)
        return json_conditional(request, checkpoints_document(state.home, state.require(), trial))

    @handled
    def metric_series(request: Request) -> Response:
        """One metric's points: ``group``, ``name``; ``x`` step|time; ``lo``/``hi`` the window;
        ``max_points`` (LTTB beyond); ``since`` a row id (only newer points); ``format`` f64|f32|json."""
        trial = trial_of(state, request)
        q = request.query_params
        group, name = ids.metric_part(q.get("group", ""), "metric group"), ids.metric_part(q.get("name", ""), "metric name")
        cols = state.series.get(state.columns(), trial.id, group, name)
        numbers = {a.id: a.number for a in state.require().attempts(trial.id)}
        win = series.window(cols, numbers, x=_choice(request, "x", ("step", "time")), lo=_float(request, "lo", -math.inf),
                            hi=_float(request, "hi", math.inf), since_id=int(_float(request, "since", 0)),
                            max_points=int(_float(request, "max_points", series.MAX_POINTS)))
        body, media = series.encode(win, _choice(request, "format", ("f64", "f32", "json")))
        return conditional(request, body, media, series.headers(win))

    @handled
    def attempt_log(request: Request) -> Response:
        """Bytes of attempt NUMBER's log from ``offset`` (headers: X-Offset, X-Next-Offset, X-Size, X-State)."""
        trial = trial_of(state, request)
        number = ids.number(request.path_params["attempt"], "attempt number")
        attempts = {a.number: a for a in state.require().attempts(trial.id)}
        if number not in attempts:
            raise NotFound(f"trial {trial.ref} has no attempt {number}")
        chunk = logs.read_chunk(logs.log_path(state.home, trial, attempts[number]), int(_float(request, "offset", 0)))
        from ..tracking import attempt_state  # noqa: PLC0415 - psutil only when a log is followed
        headers = {"X-Offset": str(chunk.offset), "X-Next-Offset": str(chunk.next_offset),
                   "X-Size": "" if chunk.size is None else str(chunk.size),
                   "X-State": attempt_state(attempts[number]), "Cache-Control": "no-cache"}
        return Response(chunk.data, media_type="text/plain; charset=utf-8", headers=headers)

    return [Route(PREFIX, show), Route(PREFIX + "/checkpoints", checkpoints),
            Route(PREFIX + "/series", metric_series),
            Route(PREFIX + "/attempts/{attempt}/log", attempt_log)]
