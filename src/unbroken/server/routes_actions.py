"""POST endpoints (token in a header, refused under --read-only: see security.py): verify and
export one checkpoint of a trial, by uuid (actions.py runs the CLI's code)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import actions, ids
from .responses import handled
from .routes_trial import PREFIX, trial_of
from .state import ServerState


def routes(state: ServerState) -> list[Route]:
    def action(run):
        @handled
        def endpoint(request: Request) -> Response:
            trial = trial_of(state, request)
            uuid = ids.checkpoint_uuid(request.path_params["uuid"])
            with state.writable() as tracker:
                return JSONResponse(run(state.home, tracker, tracker.trial_by_id(trial.id), uuid))
        return endpoint

    return [Route(PREFIX + "/checkpoints/{uuid}/verify", action(actions.verify), methods=["POST"]),
            Route(PREFIX + "/checkpoints/{uuid}/export", action(actions.export), methods=["POST"])]
