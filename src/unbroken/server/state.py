"""What one running dashboard holds: its settings, the index opened read-only, caches.

The index is opened on first need (a home may have no runs yet when the server starts) with
:meth:`Tracker.open_readonly`; only the POST actions open it read-write, briefly, and never
under ``--read-only``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from ..tracking import resolve_db_url
from ..tracking.url import backend_of, sqlite_path
from ..errors import ConfigError, NotFound
from ..tracking import Tracker, Trial
from .columns import ColumnSource, Stats, column_source
from .config import ServerConfig
from .series import SeriesCache


class ServerState:
    """Shared by every request (thread-safe: the Tracker and the column source lock themselves)."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.home = config.home
        self.series = SeriesCache()
        self._tracker: Tracker | None = None
        self._columns: ColumnSource | None = None
        self._lock = threading.Lock()

    def tracker(self) -> Tracker | None:
        """The read-only index, or None while the home has none."""
        with self._lock:
            if self._tracker is None and self._index_exists():
                self._tracker = Tracker.open_readonly(self._db)
                self._columns = column_source(self._tracker)
            return self._tracker

    @property
    def _db(self) -> str:
        return self.config.db or resolve_db_url(None, self.home)

    def _index_exists(self) -> bool:
        return backend_of(self._db) != "sqlite" or sqlite_path(self._db).is_file()

    def require(self) -> Tracker:
        """The read-only index; NotFound when the home has no runs yet."""
        tracker = self.tracker()
        if tracker is None:
            raise NotFound(f"no runs yet in {self.home}")
        return tracker

    def columns(self) -> ColumnSource:
        self.require()
        return self._columns

    def stats(self, trial_ids: list[int]) -> Stats:
        return self.columns().stats(trial_ids)

    def trial(self, experiment: str, number: int) -> Trial:
        """The trial ``experiment/number`` (NotFound / TrialNotFound)."""
        tracker = self.require()
        tracker.experiment(experiment)
        return tracker.trial(experiment, number)

    @contextlib.contextmanager
    def writable(self) -> Iterator[Tracker]:
        """A read-write index for one action; ConfigError under ``--read-only``."""
        if self.config.read_only:
            raise ConfigError("this dashboard is read-only (started with --read-only)")
        tracker = Tracker(self._db)
        try:
            yield tracker
        finally:
            tracker.close()

    def close(self) -> None:
        with self._lock:
            if self._columns is not None:
                self._columns.close()
            if self._tracker is not None:
                self._tracker.close()
