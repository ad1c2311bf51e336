"""Running the dashboard: uvicorn on the configured address until interrupted."""

from __future__ import annotations

import asyncio
from typing import Callable

import uvicorn

from .app import create_app
from .config import ServerConfig


class _Server(uvicorn.Server):
    """uvicorn's server that reports the bound URL (with the real port when asked for port 0)."""

    def __init__(self, config: uvicorn.Config, ours: ServerConfig, started: Callable[[str], None]):
        super().__init__(config)
        self._ours, self._started = ours, started

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1] if self.servers else self._ours.port
            self._started(self._ours.url(port))


def serve(config: ServerConfig, started: Callable[[str], None]) -> None:
    """Serve ``config`` until SIGINT/SIGTERM; ``started(url)`` once listening (the URL holds the token)."""
    app = create_app(config)
    server = _Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                    access_log=False, lifespan="on"), config, started)
    asyncio.run(server.serve())
