"""The supervisor's spot-notice poller: a daemon thread that asks a :class:`~.spot.Provider` every few seconds.

Threads: :meth:`SpotWatcher.start` and :meth:`SpotWatcher.stop` are called from the supervisor's
main thread; the polling, ``on_notice`` and ``log`` run on the watcher's own daemon thread.
``on_notice`` must only record the notice (the supervisor acts on it on its main thread, where
it forwards signals). A service that is down, slow or answers nonsense never stops the
training: the first failure is reported once, polling goes on, and recovery is reported once.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Mapping

from .clock import SYSTEM_CLOCK, Clock
from .spot import Fetch, Provider, SpotNotice, SpotServiceError, detect, endpoint, http_fetch, provider

#: How often the metadata service is asked (AWS recommends every 5 s; GCP warns 30 s ahead).
DEFAULT_INTERVAL = 5.0


class SpotWatcher:
    """Polls ``provider`` every ``interval`` seconds until it reports a notice (then stops) or :meth:`stop`.

    ``provider`` may be a callable that finds it (``--spot auto``): it is called on the watcher's
    thread, so a slow probe never delays the training; None from it means no service answered.
    """

    def __init__(self, provider: Provider | Callable[[], Provider | None], on_notice: Callable[[SpotNotice], None], *,
                 interval: float = DEFAULT_INTERVAL, clock: Clock = SYSTEM_CLOCK,
                 log: Callable[[str], None] = lambda text: None):
        self.provider, self.on_notice, self.interval = provider, on_notice, interval
        self.clock, self.log = clock, log
        self.notice: SpotNotice | None = None
        self.failing = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> SpotNotice | None:
        """Ask once (the calling thread blocks up to the provider's timeout); report a notice or a failure."""
        try:
            notice = self.provider.check(self.clock.time())
        except SpotServiceError as exc:
            if not self.failing:
                self.log(f"unbroken: cannot read spot notices ({exc}); training goes on, still asking")
            self.failing = True
            return None
        if self.failing:
            self.log(f"unbroken: the {self.provider.name} metadata service answers again")
            self.failing = False
        if notice is not None and self.notice is None:
            self.notice = notice
            self.on_notice(notice)
        return notice

    def start(self) -> None:
        """Start polling on a daemon thread (returns at once)."""
        self._thread = threading.Thread(target=self._run, name="unbroken-spot", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to end; wait up to ``timeout`` s for it (a request in flight ends by its own timeout)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        if not isinstance(self.provider, Provider):
            found = self.provider()
            if found is None:
                self.log("unbroken: --spot auto: no metadata service (aws, gcp, azure) answered; not polling")
                return
            self.provider = found
            self.log(f"unbroken: --spot auto: polling {found.name} spot notices every {self.interval:g} s")
        while not self._stopped.is_set():
            if self.poll_once() is not None:
                return  # one notice is all it takes; the supervisor stops
            self._stopped.wait(self.interval)


def spot_watcher(name: str, on_notice: Callable[[SpotNotice], None], *, interval: float = DEFAULT_INTERVAL,
                 clock: Clock = SYSTEM_CLOCK, log: Callable[[str], None] = lambda text: None,
                 fetch: Fetch = http_fetch, environ: Mapping[str, str] = os.environ) -> SpotWatcher:
    """A (not started) watcher for ``--spot NAME`` (aws, gcp, azure, auto) at the configured endpoint."""
    base = endpoint(environ)
    chosen = (lambda: detect(base, fetch)) if name == "auto" else provider(name, base, fetch)
    return SpotWatcher(chosen, on_notice, interval=interval, clock=clock, log=log)
