"""The state loop of one rank of a torch.distributed group: the same decisions on every rank.

:class:`GroupStateLoop` is :class:`~.loop.StateLoop` with three group rules:

* **restore**: rank 0 lists the candidates; for each, every rank verifies its own shard (and the
  replicated part) under a read lease, and the ranks agree with one allgather: a checkpoint one
  rank finds corrupt (or gone) is skipped as a whole by every rank and the previous one is tried;
* **save and stop decisions** are agreed at step boundaries (``maybe_save``, which ``steps()``
  calls): one small allgather of (stop request, save due) every ``sync_every`` boundaries. A stop
  requested on any rank (its signal, or rank 0's deadline estimate) stops every rank at the same
  boundary; whether a save is due is rank 0's decision (time-based policies differ per rank). The
  cost is bounded: one collective per ``sync_every`` steps, none between;
* **stop**: after the stopping save, every rank waits until rank 0 committed it (a collective),
  so no rank exits 75 before the checkpoint is committed.

Every rank must run the same loop: ``restore``, ``save``, ``maybe_save`` and ``steps`` are collectives.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from ..checkpoint import State
from ..checkpoint.format.manifest import Manifest
from ..checkpoint.saving import shards, statefile
from ..checkpoint.saving.sharded import ShardedSaver
from ..errors import CheckpointGone, CorruptCheckpoint
from .loop import StateLoop
from .preempt import PreemptContext

log = logging.getLogger("unbroken")

#: Agree on stops and saves at every this-many step boundaries.
SYNC_EVERY = 1


class GroupPreempt:
    """``run.preempt`` of a rank: its own signals and deadline, and the stop the group agreed on.

    :meth:`should_preempt` answers the agreed decision (the same on every rank at a boundary);
    :meth:`settle` (with every rank's :meth:`own_request`, gathered by :class:`GroupStateLoop` at its
    boundaries, or by :meth:`agree` for loops of their own) updates it.
    """

    def __init__(self, own: PreemptContext, group: Any):
        self.own, self.group = own, group
        self._agreed: str | None = None

    def own_request(self) -> str | None:
        """This rank's own stop request (signal, deadline), or None."""
        return self.own.own_request()

    def settle(self, requests: list[str | None]) -> str | None:
        """Record the group's decision from every rank's request (in rank order); return it."""
        self._agreed = self._agreed or next((f"{r} on rank {i}" for i, r in enumerate(requests) if r), None)
        return self._agreed

    def agree(self) -> bool:
        """Stop now? A collective (one allgather): True on every rank once any rank was asked to stop."""
        return self.settle(self.group.allgather(self.own_request())) is not None

    def should_preempt(self) -> bool:
        self.own.should_preempt()  # installs the handlers on first use
        return self._agreed is not None

    @property
    def reason(self) -> str | None:
        return self._agreed or self.own.reason

    def request(self, reason: str = "requested") -> None:
        self.own.request(reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.own, name)  # deadline, seconds_left, armed, install, uninstall, signals


class GroupStateLoop(StateLoop):
    """See the module docstring; ``group`` is the run's distributed context."""

    def __init__(self, *args: Any, group: Any, sync_every: int = SYNC_EVERY, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.group, self.sync_every = group, max(1, int(sync_every))
        self._boundaries = 0

    # -- saving ----------------------------------------------------------------------------------
    @property
    def _saves(self) -> ShardedSaver:
        if self._saver is None:
            self._saver = ShardedSaver(self.checkpoint.store, self.group, on_committed=self._on_committed)
        return self._saver

    def maybe_save(self, state: State, steps_completed: int, *, metrics: dict[str, Any] | None = None) -> str | None:
        """At every ``sync_every``-th boundary: agree on stop and save, then save if so. A collective."""
        if self._saver is not None:
            self._saver.check()
        self._boundaries += 1
        if self._boundaries % self.sync_every:
            return None
        due = self.policy.due(steps_completed, self._last_save_steps, self._clock() - self._last_save_time)
        votes = self.group.allgather((self.preempt.own_request(), due))  # one collective: stop from any rank, due from 0
        stop = self.preempt.settle([request for request, _due in votes])
        due = votes[0][1]
        if (stop and steps_completed > self._last_save_steps) or due:
            return self.save(state, steps_completed, metrics=metrics)
        return None

    def _deadline_near(self, state: State | None) -> bool:
        """Rank 0 alone estimates the deadline; its request is agreed at the next boundary."""
        if self.group.is_chief and super()._deadline_near(state):
            self.preempt.own.request(self.preempt.own.reason or "deadline")
        return False

    def _stop(self, state: State | None, steps_completed: int) -> None:
        super()._stop(state, steps_completed)
        self._saves.wait_group()  # rank 0 committed it: only now may any rank exit

    # -- restoring -------------------------------------------------------------------------------
    def restore(self, state: State, *, allow_pickle: bool = False, strict: bool = True) -> int:
        """Load the newest checkpoint every rank can read; see the module docstring. A collective."""
        self.state = state
        self.wait_for_saves()
        uuids = self.group.broadcast([m.uuid for m in self.checkpoint.candidates() if statefile.written_from_state(m)]
                                     if self.group.is_chief else None)
        for uuid in uuids:
            manifest = self._try(uuid, state, allow_pickle, strict)
            if manifest is None:
                continue
            self.checkpoint.store.mark_verified(uuid)
            self._last_save_steps = manifest.steps_completed
            if self.group.is_chief:
                self.checkpoint.record_restore(manifest)
            self._prepare_saves(state)
            return manifest.steps_completed
        log.info("unbroken: %s starts from scratch (no checkpoint every rank can read)", self._label)
        self._prepare_saves(state)
        return 0

    def _try(self, uuid: str, state: State, allow_pickle: bool, strict: bool) -> Manifest | None:
        """Verify this rank's parts, agree, and read them if every rank's verified; else None."""
        with contextlib.ExitStack() as stack:
            problem, manifest, parts = None, None, []
            try:
                manifest = stack.enter_context(self.checkpoint.store.reading(uuid))
                parts = shards.parts_to_read(state, self.group.rank, manifest)
                for folder, _part in parts:
                    for entry in shards.entries_in(manifest, folder):
                        self.checkpoint.store.verify_file(uuid, entry)
            except CheckpointGone:
                problem = ("gone", "")
            except CorruptCheckpoint as exc:
                problem = ("corrupt", str(exc))
            problems = self.group.allgather(problem)
            if any(problems):
                self._skip(uuid, problems)
                return None
            for folder, part in parts:
                shards.restore_part(state, part, self.checkpoint.store.local_copy(uuid), manifest, folder,
                                    allow_pickle=allow_pickle, strict=strict)
            return manifest

    def _skip(self, uuid: str, problems: list) -> None:
        corrupt = [(rank, p[1]) for rank, p in enumerate(problems) if p and p[0] == "corrupt"]
        if not corrupt:
            return  # deleted meanwhile: skipped silently
        reason = f"rank {corrupt[0][0]}: {corrupt[0][1]}"
        if self.group.is_chief:
            self.checkpoint.report_corrupt(uuid, reason)
        else:
            self.checkpoint.store.mark_corrupt(uuid, reason)
