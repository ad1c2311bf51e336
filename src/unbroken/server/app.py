"""The Starlette application of ``unbroken ui``: API routes, the static page, the guard."""

from __future__ import annotations

import contextlib
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import routes_actions, routes_runs, routes_trial
from .config import ServerConfig
from .security import Guard
from .state import ServerState


def static_dir() -> Path:
    """The folder of the page's files, shipped inside the package."""
    return Path(str(resources.files("unbroken.server") / "static"))


def create_app(config: ServerConfig) -> Guard:
    """The ASGI application serving ``config.home`` (wrapped in the token/Host :class:`Guard`).

    ``app.state.unbroken`` is the :class:`ServerState`; it is closed when the server shuts down.
    """
    state = ServerState(config)
    page = static_dir() / "index.html"

    def index(request):
        return FileResponse(page, headers={"Cache-Control": "no-cache"})

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        state.close()

    app = Starlette(routes=[*routes_runs.routes(state), *routes_trial.routes(state), *routes_actions.routes(state),
                            Route("/", index), Mount("/static", StaticFiles(directory=static_dir()), name="static")],
                    lifespan=lifespan)
    app.state.unbroken = state
    return Guard(app, config)
