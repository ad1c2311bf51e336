"""The Ray executor: each segment is one Ray task on an existing cluster (``address``, else
``$RAY_ADDRESS``, else ``auto``), which runs ``unbroken run`` for the trial on its node.

Tasks belong to the driver: when it dies, Ray ends them, and their ``unbroken run`` dies with
the task's worker (parent-death signal); a restarted driver starts those segments again and
the trials resume from their checkpoints. The home (index and checkpoints) must be shared by
the nodes. ``stop`` cancels the task, which passes SIGTERM on to the trial (it saves, exits 75).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from typing import Any

from ...errors import ConfigError, LaunchError
from .base import LOST, Executor, SegmentJob
from .local import _die_with_parent


def run_segment(argv: list[str], env: dict[str, str], log: str, cwd: str | None) -> int:
    """The task: run the supervisor of one segment on this node; return its exit status."""
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, cwd=cwd if cwd and os.path.isdir(cwd) else None,
                                 start_new_session=True, preexec_fn=_die_with_parent)
    try:
        return child.wait()
    except KeyboardInterrupt:  # ray.cancel: ask the trial to save and stop
        child.send_signal(signal.SIGTERM)
        return child.wait()


class RayExecutor(Executor):
    """See the module docstring. ``num_cpus``: CPUs each trial reserves on the cluster."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1):
        self.address, self.num_cpus = address, num_cpus
        self._refs: dict[str, Any] = {}
        self._ray = None

    def start(self) -> None:
        try:
            import ray  # noqa: PLC0415 - optional extra
        except ImportError:
            raise ConfigError("the ray executor needs Ray: pip install 'unbroken[ray]'") from None
        address = self.address or os.environ.get("RAY_ADDRESS") or "auto"
        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise LaunchError(f"no Ray cluster at {address}: {exc}; start one (scripts/ray-up.sh, or `ray start "
                              "--head`) and give its address (executor: {type: ray, address: HOST:PORT})") from exc
        self._ray = ray
        self._task = ray.remote(num_cpus=self.num_cpus, max_retries=0)(run_segment)

    def launch(self, job: SegmentJob) -> dict[str, Any]:
        key = uuid.uuid4().hex
        self._refs[key] = self._task.remote(job.supervisor_argv(sys.executable), job.env,
                                            str(job.logs / "supervisor.log"), job.cwd)
        return {"executor": self.name, "task": key}

    def poll(self, handle: dict[str, Any]) -> int | str | None:
        ref = self._refs.get(handle.get("task"))
        if ref is None:
            return LOST  # a task of an earlier driver: Ray ended it with that driver
        ready, _ = self._ray.wait([ref], timeout=0)
        if not ready:
            return None
        del self._refs[handle["task"]]
        try:
            return int(self._ray.get(ref))
        except Exception:  # noqa: BLE001 - the task or its worker died: start the segment again
            return LOST

    def stop(self, handle: dict[str, Any]) -> None:
        ref = self._refs.get(handle.get("task"))
        if ref is not None:
            self._ray.cancel(ref)

    def close(self) -> None:
        if self._ray is not None:
            for ref in self._refs.values():
                self._ray.cancel(ref, force=True)
            self._refs.clear()
            self._ray.shutdown()
