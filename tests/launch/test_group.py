"""The group launcher's pure parts: torchrun's command line (ours or the user's) and the outcome of a failed group."""

from __future__ import annotations

import signal
from dataclasses import dataclass

import pytest

from unbroken.config import EXIT_PREEMPTED
from unbroken.errors import ConfigError
from unbroken.launch.group import group_outcome, torchrun_args, users_torchrun
from unbroken.launch.runconfig import RunConfig, torchrun_arguments


@dataclass
class Failure:  # the fields of torch.distributed.elastic's ProcessFailure that group_outcome reads
    exitcode: int
    timestamp: int
    pid: int = 4242
    error_file: str = ""


def test_torchrun_runs_one_standalone_group_without_restarts_of_its_own(tmp_path):
    args = torchrun_args(4, tmp_path, ["python", "train.py", "--lr", "1"])
    assert "--max-restarts=0" in args and "--standalone" in args and "--nproc-per-node=4" in args
    assert args[-4:] == ["python", "train.py", "--lr", "1"]


def test_the_first_rank_to_end_decides_and_ranks_torchrun_stopped_come_last():
    failures = {0: Failure(-signal.SIGTERM, 1), 1: Failure(-signal.SIGKILL, 5), 2: Failure(1, 9)}
    code, message = group_outcome(failures)
    assert code == 1 and message.startswith("rank 1 (pid 4242) failed: killed by SIGKILL")


def test_a_rank_that_stopped_after_the_groups_checkpoint_makes_the_group_exit_75():
    code, message = group_outcome({0: Failure(EXIT_PREEMPTED, 3), 1: Failure(-signal.SIGTERM, 4)})
    assert code == EXIT_PREEMPTED and "rank 0 stopped" in message


def test_the_failing_ranks_last_error_line_is_in_the_message(tmp_path):
    (tmp_path / "stderr.log").write_text("Traceback ...\n  ...\nRuntimeError: CUDA out of memory\n\n")
    failures = {1: Failure(1, 2, error_file=str(tmp_path / "error.json"))}
    code, message = group_outcome(failures)
    assert code == 1 and message.endswith("exit status 1: RuntimeError: CUDA out of memory")


def test_a_torchrun_command_is_recognised_as_a_group_and_keeps_its_own_arguments(tmp_path):
    assert torchrun_arguments(["torchrun", "--nnodes=2", "train.py"]) == ["--nnodes=2", "train.py"]
    assert torchrun_arguments(["/usr/bin/python3", "-m", "torch.distributed.run", "t.py"]) == ["t.py"]
    assert torchrun_arguments(["python", "train.py"]) is None
    config = RunConfig(command=["torchrun", "--standalone", "--nproc-per-node=2", "train.py"])
    assert config.is_group and not RunConfig(command=["python", "train.py"]).is_group
    child = config.child_command(tmp_path)
    assert child[child.index("--") + 1:] == ["--standalone", "--nproc-per-node=2", "train.py"]
    assert "--torchrun" in child


def test_nproc_per_node_and_a_torchrun_command_together_are_refused():
    with pytest.raises(ConfigError, match="either"):
        RunConfig(command=["torchrun", "train.py"], nproc_per_node=2)


def test_the_users_torchrun_loses_its_restarts_and_gets_rank_logs_unless_it_chose_a_folder(tmp_path, capsys):
    torchrun = pytest.importorskip("torch.distributed.run")
    args = users_torchrun(torchrun, ["--standalone", "--nproc-per-node=2", "--max-restarts=3", "t.py"], tmp_path)
    assert args.max_restarts == 0 and args.log_dir == str(tmp_path) and args.nproc_per_node == "2"
    assert "--max-restarts=3 is set to 0" in capsys.readouterr().err
    own = users_torchrun(torchrun, ["--log-dir=/logs/mine", "t.py"], tmp_path)
    assert own.log_dir == "/logs/mine"
