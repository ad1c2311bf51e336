"""What `unbroken run` is asked to do: the validated options of one supervisor."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError
from .restart import StopPolicy, WaitPolicy, exponential_backoff, max_failures
from ..signals import parse_signal


@dataclasses.dataclass
class RunConfig:
    """Everything `unbroken run` needs; see the CLI for the meaning of each option.

    Durations are seconds: finite and non-negative (``wait_for_trial`` may be ``math.inf``).
    Invalid values raise :class:`~unbroken.errors.ConfigError` naming the CLI option.
    """

    command: Sequence[str]
    name: str | None = None
    home: str | os.PathLike | None = None
    storage: str | None = None  # where new trials keep checkpoints (folder or URL); None: $UNBROKEN_STORAGE or home
    db: str | None = None  # the tracking index (URL or SQLite file); None: $UNBROKEN_DB or <home>/unbroken.db
    fresh: bool = False
    trial: int | None = None  # join this trial number of the experiment (created if it is the next one)
    stop: StopPolicy = dataclasses.field(default_factory=lambda: max_failures(3))
    wait: WaitPolicy = dataclasses.field(default_factory=exponential_backoff)
    grace: float = 60.0
    preempt_signal: str = "USR2"
    time_limit: float | None = None  # seconds from start; the child is asked to stop `margin` before
    margin: float = 60.0
    reset_after: float | None = None  # an attempt this long counts as progress (own checkpointing)
    wait_for_trial: float = 0.0  # how long to wait for another writer of the trial to end (inf: no limit)
    spot: str | None = None  # poll spot notices: aws, gcp, azure, auto (None: not at all)
    spot_interval: float = 5.0  # seconds between two questions to the metadata service
    max_stalled: int | None = 3  # --max-requeues-without-progress (None: no limit)
    nproc_per_node: int | None = None  # run the command as a torch.distributed group of this many ranks

    @property
    def is_group(self) -> bool:
        """True if an attempt is a torch.distributed group under torchrun (``--nproc-per-node``, or a
        command that is torchrun itself): stopped with the preempt signal, one attempt per group run."""
        return self.nproc_per_node is not None or torchrun_arguments(self.command) is not None

    def child_command(self, rank_logs: Path) -> list[str]:
        """What one attempt runs: the command, or a group through torchrun (:mod:`.group`): of the
        command with ``--nproc-per-node``, or of the user's own torchrun command line."""
        group = [sys.executable, "-m", "unbroken.launch.group", "--log-dir", str(rank_logs)]
        if self.nproc_per_node is not None:
            return [*group, "--nproc-per-node", str(self.nproc_per_node), "--", *self.command]
        user_torchrun = torchrun_arguments(self.command)
        if user_torchrun is not None:
            return [*group, "--torchrun", "--", *user_torchrun]
        return list(self.command)

    def __post_init__(self):
        if not self.command:
            raise ConfigError("unbroken run needs a command: unbroken run -- python train.py")
        for option, value in (("--grace", self.grace), ("--margin", self.margin), ("--time-limit", self.time_limit),
                              ("--reset-after", self.reset_after), ("--spot-interval", self.spot_interval)):
            _check_seconds(option, value)
        if math.isnan(self.wait_for_trial) or self.wait_for_trial < 0:
            raise ConfigError(f"--wait must be 0 or more seconds (or inf), not {self.wait_for_trial!r}")
        if self.time_limit is not None and self.time_limit <= self.margin:
            raise ConfigError(f"--time-limit ({self.time_limit:g} s) must be longer than the save margin "
                              f"({self.margin:g} s), or the job would stop before it starts")
        if self.spot is not None and self.spot not in ("aws", "gcp", "azure", "auto"):
            raise ConfigError(f"--spot {self.spot!r}: use one of aws, gcp, azure, auto")
        if self.nproc_per_node is not None and self.nproc_per_node < 1:
            raise ConfigError(f"--nproc-per-node must be 1 or more, not {self.nproc_per_node!r}")
        if self.nproc_per_node is not None and torchrun_arguments(self.command) is not None:
            raise ConfigError("--nproc-per-node runs the command under torchrun already: give either "
                              "`unbroken run --nproc-per-node N -- python train.py` or `unbroken run -- torchrun ...`")
        if self.max_stalled is not None and self.max_stalled < 1:
            raise ConfigError(f"--max-requeues-without-progress must be 1 or more, not {self.max_stalled!r}")
        try:
            self.preempt_signal = parse_signal(self.preempt_signal).name
        except ConfigError as exc:
            raise ConfigError(f"--preempt-signal: {exc}") from None


def torchrun_arguments(command: Sequence[str]) -> list[str] | None:
    """The arguments of torchrun if ``command`` runs it (``torchrun ...`` or ``python -m torch.distributed.run ...``), else None."""
    words = list(command)
    if words and Path(words[0]).name == "torchrun":
        return words[1:]
    if len(words) >= 3 and Path(words[0]).name.startswith("python") and words[1:3] == ["-m", "torch.distributed.run"]:
        return words[3:]
    return None


def derive_name(command: Sequence[str]) -> str:
    """An experiment name from a command: the first ``*.py`` argument's stem, else the program's name."""
    words = [Path(w).name for w in command]
    pick = next((w[:-3] for w in words if w.endswith(".py")), None) or words[0]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", pick).strip("-._") or "run"
    return name[:128]


def _check_seconds(option: str, value: float | None) -> None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise ConfigError(f"{option} must be a finite number of seconds, 0 or more, not {value!r}")
