"""The child of `unbroken run --nproc-per-node N` (and of `unbroken run -- torchrun ...`): torch's own
elastic launcher, one group per attempt.

``python -m unbroken.launch.group --nproc-per-node N --log-dir DIR -- CMD ...`` runs CMD as N ranks
through :mod:`torch.distributed.run` (torchrun) in this process, with ``--max-restarts 0`` (when
any rank dies torchrun stops the others: the group, not the rank, is what the supervisor
restarts), ``--standalone`` rendezvous, and one stdout/stderr log per rank under ``DIR``
(``--log-dir`` with ``--tee 3``: the output also reaches the supervisor's attempt log).
``... --torchrun --log-dir DIR -- TORCHRUN-ARGS ...`` runs the user's own torchrun command line the
same way (its rendezvous and node options kept; its restarts turned off; DIR unless it names a log folder).

Stops: torchrun answers SIGTERM by killing its workers, so the supervisor sends a group the
preempt signal (USR2 by default) instead, which this process passes on to every rank; the ranks
agree on the step, save once and exit 75 (:mod:`unbroken.runtime.grouploop`).

Exit status: 0 all ranks completed; 75 the first rank to end exited 75 (ranks exit 75 only after
the group's checkpoint is committed); 1 otherwise, after recording which rank failed and why as the
attempt's message (the supervisor keeps it). All of this runs on the main thread.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from ..config import EXIT_PREEMPTED
from ..envvars import LaunchEnv
from ..tracking import Tracker
from ..tracking.guarded import GuardedWrites


def torchrun_args(nproc: int, log_dir: Path, command: Sequence[str]) -> list[str]:
    """The torchrun command line (without the program) for one attempt of a group."""
    return ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "--no-python",
            f"--log-dir={log_dir}", "--tee=3", *command]


def group_outcome(failures: dict[int, Any]) -> tuple[int, str]:
    """``(exit status, message)`` from torchrun's failures (rank -> ProcessFailure): the first rank to end decides.

    Ranks that torchrun itself stopped with SIGTERM (because another failed) come last.
    """
    rank, first = min(failures.items(), key=lambda item: (item[1].exitcode == -signal.SIGTERM, item[1].timestamp,
                                                          item[0]))
    if first.exitcode == EXIT_PREEMPTED:
        return EXIT_PREEMPTED, f"rank {rank} stopped after the group's checkpoint"
    return 1, f"rank {rank} (pid {first.pid}) failed: {_why(first)}"


def _why(failure: Any) -> str:
    code = failure.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exit status {code}"
    last = _last_line(Path(failure.error_file).parent / "stderr.log") if failure.error_file else None
    return f"{how}: {last}" if last else how


def _last_line(path: Path) -> str | None:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1][:500] if lines else None


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _pass_on(signum: int, _frame: Any) -> None:
    """Signal handler: give every rank the stop request (they agree on the step themselves)."""
    for pid in children_of(os.getpid()):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _record(message: str) -> None:
    launch = LaunchEnv.from_env()
    if not launch.supervised or not launch.db:
        return
    writes = GuardedWrites()
    tracker = writes("open the index", Tracker, launch.db)
    if tracker is not None:
        writes("record the failing rank", tracker.update_attempt, launch.attempt_id, message=message)
        tracker.close()


def users_torchrun(torchrun: Any, arguments: Sequence[str], log_dir: Path) -> Any:
    """The user's own torchrun command line (``unbroken run -- torchrun ...``), made one attempt of a
    group: torchrun's restarts are turned off (the supervisor restarts the group from its newest
    checkpoint) and, unless the user chose a log folder, one log per rank goes under ``log_dir``."""
    args = torchrun.parse_args(list(arguments))
    if args.max_restarts:
        print(f"unbroken: torchrun's --max-restarts={args.max_restarts} is set to 0: unbroken run restarts the "
              "whole group from its newest checkpoint (use --max-restarts of unbroken run)", file=sys.stderr, flush=True)
    args.max_restarts = 0
    if not args.log_dir:
        args.log_dir, args.tee = str(log_dir), "3"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unbroken.launch.group")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--nproc-per-node", type=int, help="run COMMAND as this many ranks")
    how.add_argument("--torchrun", action="store_true", help="COMMAND is the arguments of the user's torchrun")
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    command = opts.command[1:] if opts.command[:1] == ["--"] else opts.command
    from torch.distributed import run as torchrun  # noqa: PLC0415 - torch only in the group's child
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError  # noqa: PLC0415

    preempt = signal.Signals[LaunchEnv.from_env().preempt_signal or "SIGUSR2"]
    signal.signal(preempt, _pass_on)
    opts.log_dir.mkdir(parents=True, exist_ok=True)
    if opts.torchrun:
        args = users_torchrun(torchrun, command, opts.log_dir)
    else:
        args = torchrun.parse_args(torchrun_args(opts.nproc_per_node, opts.log_dir, command))
    try:
        torchrun.run(args)
    except ChildFailedError as exc:
        code, message = group_outcome(exc.failures)
        print(f"unbroken: {message}", file=sys.stderr, flush=True)
        if code != EXIT_PREEMPTED:
            _record(message)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
