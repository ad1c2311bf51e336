"""Read endpoints over the whole home: the ``ls`` document, the runs table, the settings."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from .documents import experiments_document, runs_document
from .responses import handled, json_conditional
from .state import ServerState


def routes(state: ServerState) -> list[Route]:
    @handled
    def experiments(request: Request) -> Response:
        """The document of ``unbroken ls --json``."""
        return json_conditional(request, experiments_document(state.tracker(), state.home))

    @handled
    def runs(request: Request) -> Response:
        """Every trial as a TRIAL plus its runs-table fields (see documents.runs_document)."""
        tracker = state.tracker()
        return json_conditional(request, runs_document(tracker, state.home, state.stats if tracker else dict))

    def settings(request: Request) -> Response:
        return JSONResponse({"version": __version__, "home": str(state.home), "read_only": state.config.read_only})

    return [Route("/api/experiments", experiments), Route("/api/runs", runs), Route("/api/config", settings)]
