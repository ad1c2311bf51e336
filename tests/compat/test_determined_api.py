"""The Determined core API in-process: the contexts' contracts and the experiment config parser."""

from __future__ import annotations

import json

import pytest

import unbroken.compat.determined as det
from unbroken import ConfigError
from unbroken.compat.determined import _session, core, core_v2, load_experiment_config
from unbroken.compat.determined.expconf import storage_location


@pytest.fixture
def ctx(home, monkeypatch):
    monkeypatch.delenv("UNBROKEN_DET_SEARCHER_LENGTH", raising=False)
    context = core.init(name="api", hparams={"lr": 0.1})
    yield context
    if _session.current() is not None:
        context.close()


def test_get_cluster_info_is_none_off_cluster(home):
    assert det.get_cluster_info() is None


def test_checkpoint_round_trip_metadata_upload_download_delete(ctx, tmp_path):
    with ctx.checkpoint.store_path({"steps_completed": 5, "epoch": 1}, shard=True) as (path, storage_id):
        (path / "w.txt").write_text("weights")
    assert ctx.checkpoint.get_metadata(storage_id)["epoch"] == 1
    with ctx.checkpoint.restore_path(storage_id) as path:
        assert (path / "w.txt").read_text() == "weights"
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("A")
    uploaded = ctx.checkpoint.upload(src, {"steps_completed": 6})
    ctx.checkpoint.download(uploaded, tmp_path / "dst")
    assert (tmp_path / "dst" / "a").read_text() == "A"
    with pytest.raises(ConfigError, match="whole"):
        ctx.checkpoint.delete(uploaded, globs=["a"])
    ctx.checkpoint.delete(uploaded)
    assert ctx.run.checkpoint.latest_checkpoint == storage_id
    assert ctx.info.trial.hparams == {"lr": 0.1} and ctx.info.latest_checkpoint is None


def test_searcher_needs_a_length_and_reports_progress_in_units(ctx):
    with pytest.raises(ConfigError, match="--searcher-length"):
        next(ctx.searcher.operations())
    ops = core.SearcherContext(ctx.run, 40).operations()
    op = next(ops)
    op.report_progress(10)
    op.report_completed(0.5)
    with pytest.raises(RuntimeError, match="once"):
        op.report_completed(0.5)
    assert next(ops, None) is None


def test_uncompleted_operation_is_an_error(ctx):
    ops = core.SearcherContext(ctx.run, 3).operations()
    next(ops)
    with pytest.raises(RuntimeError, match="report_completed"):
        next(ops)


@pytest.mark.parametrize("mode", list(core.PreemptMode))
def test_a_stop_request_is_seen_in_every_mode_and_closing_exits_75(ctx, mode):
    preempt = core.PreemptContext(ctx.run, mode)
    assert preempt.should_preempt() is False
    ctx.run.preempt.request("test")
    assert preempt.should_preempt() is True
    with pytest.raises(SystemExit) as stop:
        ctx.close()
    assert stop.value.code == 75


def test_core_v2_external_ids_name_the_experiment(home):
    core_v2.init(defaults=core_v2.DefaultConfig(name="x", hparams={"a": 1}),
                 unmanaged=core_v2.UnmanagedConfig(external_experiment_id="exp 1", external_trial_id="t2"))
    assert core_v2.info.trial.experiment_id == "exp-1.t2" and core_v2.info.trial.hparams == {"a": 1}
    core_v2.train.report_training_metrics(steps_completed=1, metrics={"loss": 1.0})
    core_v2.close()
    assert core_v2.train is None and _session.current() is None
    assert core_v2.experiment_name(core_v2.Config(name="n")) == "n"
    with pytest.raises(ConfigError, match="external_experiment_id"):
        core_v2.experiment_name(core_v2.Config(external_trial_id="t"))


def test_config_parser_reads_what_unbroken_run_needs(tmp_path):
    config = {"name": "mnist pytorch", "max_restarts": 1, "min_checkpoint_period": {"batches": 50},
              "hyperparameters": {"lr": 0.1, "net": {"width": {"type": "const", "val": 64}}},
              "searcher": {"name": "single", "max_length": 500},
              "checkpoint_storage": {"type": "shared_fs", "host_path": str(tmp_path), "storage_path": "ckpts"}}
    (tmp_path / "c.json").write_text(json.dumps(config))
    plan = load_experiment_config(tmp_path / "c.json", searcher_length=7)
    assert plan.cli_args() == ["--name", "mnist-pytorch", "--max-restarts", "1", "--storage", str(tmp_path / "ckpts")]
    assert plan.hparams == {"lr": 0.1, "net": {"width": 64}} and plan.searcher_length == 7
    assert plan.min_checkpoint_period == ("batches", 50) and plan.run_options()["name"] == "mnist-pytorch"
    env = plan.child_env()
    assert json.loads(env["UNBROKEN_DET_HPARAMS"]) == plan.hparams and env["UNBROKEN_DET_SEARCHER_LENGTH"] == "7"
    assert load_experiment_config({"name": "n"}).max_restarts == 5


@pytest.mark.parametrize("config,match", [
    ({"name": "n", "hyperparameters": {"lr": {"type": "log", "minval": -3, "maxval": -1}}}, "search space"),
    ({"hyperparameters": {}}, "needs a name"),
    ({"name": "n", "max_restarts": -1}, "max_restarts"),
    ({"name": "n", "searcher": {"max_length": 0}}, "max_length"),
    ({"name": "n", "checkpoint_storage": {"type": "azure"}}, "not supported"),
    ({"name": "n", "min_checkpoint_period": {"steps": 3}}, "min_checkpoint_period"),
])
def test_bad_configs_are_config_errors_naming_the_field(config, match):
    with pytest.raises(ConfigError, match=match):
        load_experiment_config(config)


def test_object_store_settings():
    s3 = {"type": "s3", "bucket": "b", "prefix": "/runs/", "endpoint_url": "http://127.0.0.1:9000",
          "access_key": "k", "secret_key": "s"}
    plan = load_experiment_config({"name": "n", "checkpoint_storage": s3})
    assert plan.storage == "s3://b/runs" and plan.child_env()["AWS_ACCESS_KEY_ID"] == "k"
    assert "secret" not in plan.child_env()["UNBROKEN_DET_CONFIG"]
    assert storage_location({"type": "gcs", "bucket": "g"}) == "gs://g" and storage_location("/x") == "/x"


def test_distributed_context_from_torchrun_environment_must_match_the_run(home, monkeypatch):
    monkeypatch.setenv("UNBROKEN_HOME", str(home))
    monkeypatch.setenv("RANK", "1")  # torchrun says rank 1 of 2, but no group runs here
    monkeypatch.setenv("WORLD_SIZE", "2")
    requested = core.DistributedContext.from_torch_distributed()
    assert (requested.rank, requested.size, requested.local_rank) == (1, 2, 0)
    monkeypatch.setenv("WORLD_SIZE", "1")  # so that init does not try to form the group
    with pytest.raises(ConfigError, match="rank 1 of 2, but this process is rank 0 of 1"):
        core.init(distributed=requested, name="dist")
    assert _session.current() is None  # the run it opened was closed again
    with pytest.raises(ConfigError, match="from_torch_distributed"):
        core.init(distributed="nccl", name="dist")
    with pytest.raises(ConfigError, match="torchrun"):
        core.DistributedContext.from_horovod()
