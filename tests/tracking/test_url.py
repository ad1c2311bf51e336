"""Choosing the index by URL (resolve_db_url, Tracker.open) and what a bad or unreachable URL says."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
import pytest
from pgcluster import free_port

from unbroken.errors import ConfigError, TrackingError
from unbroken.tracking import Tracker, resolve_db_url
from unbroken.tracking.url import backend_of, mask_password, sqlite_path, sqlite_url


def test_the_argument_wins_then_the_environment_then_the_home(tmp_path, monkeypatch):
    monkeypatch.delenv("UNBROKEN_DB", raising=False)
    assert resolve_db_url(None, tmp_path) == f"sqlite:///{tmp_path}/unbroken.db"
    monkeypatch.setenv("UNBROKEN_DB", "postgresql://u@h:5/db")
    assert resolve_db_url(None, tmp_path) == "postgresql://u@h:5/db"
    assert resolve_db_url("sqlite:////x/y.db", tmp_path) == "sqlite:////x/y.db"
    assert resolve_db_url(tmp_path / "a.db", tmp_path) == f"sqlite:///{tmp_path}/a.db"  # a plain path
    monkeypatch.setenv("UNBROKEN_DB", "")
    assert resolve_db_url(None, tmp_path) == f"sqlite:///{tmp_path}/unbroken.db"  # empty: unset


@pytest.mark.parametrize("name", ["plain.db", "with space.db", "per%cent.db", "what?.db", "hash#.db"])
def test_a_path_survives_the_round_trip_through_a_url(tmp_path, name):
    path = tmp_path / name
    assert sqlite_path(resolve_db_url(str(path), tmp_path)) == path
    assert sqlite_path(sqlite_url(Path("relative") / name)) == Path("relative") / name


@pytest.mark.parametrize("url", ["mysql://root:hunter2@h/db", "postgresql+psycopg2://root:hunter2@h/db", "  "])
def test_unsupported_urls_are_config_errors_that_never_show_the_password(tmp_path, url):
    with pytest.raises(ConfigError) as info:
        resolve_db_url(url, tmp_path)
    assert "hunter2" not in str(info.value)


def test_backends_and_masking():
    assert [backend_of(u) for u in ("sqlite:///a", "postgresql://h/d", "postgres://h/d", "postgresql+psycopg://h/d")
            ] == ["sqlite", "postgresql", "postgresql", "postgresql"]
    assert mask_password("postgresql://me:s3cret@db.example:5432/x") == "postgresql://me:***@db.example:5432/x"
    assert mask_password("postgresql://me@db.example/x") == "postgresql://me@db.example/x"
    with pytest.raises(ConfigError, match="sqlite:///PATH"):
        sqlite_path("sqlite://relative-without-slash")


def test_open_uses_the_environment_or_the_home(tmp_path, monkeypatch, pg_url):
    monkeypatch.delenv("UNBROKEN_DB", raising=False)
    with Tracker.open(home=tmp_path) as tracker:
        assert tracker.backend == "sqlite" and tracker.path == tmp_path / "unbroken.db"
        tracker.create_trial("exp")
    monkeypatch.setenv("UNBROKEN_DB", pg_url)
    with Tracker.open(home=tmp_path) as tracker:
        assert tracker.backend == "postgresql" and tracker.path is None and tracker.url == pg_url
        assert tracker.trials() == []  # another database
        tracker.create_trial("on-pg")
    with Tracker.open(home=tmp_path, readonly=True) as reader:
        assert reader.readonly and [t.ref for t in reader.trials()] == ["on-pg/1"]
    with Tracker.open(tmp_path / "unbroken.db", home=tmp_path, rebuild=True) as tracker:  # the argument wins
        assert [t.ref for t in tracker.trials()] == ["exp/1"]
    with pytest.raises(ConfigError, match="not both"):
        Tracker.open(home=tmp_path, readonly=True, rebuild=True)


def test_an_unreachable_server_is_a_tracking_error_naming_the_url_without_its_password():
    url = f"postgresql://unbroken:hunter2@127.0.0.1:{free_port()}/nowhere"
    for opening in (Tracker, Tracker.open_readonly, Tracker.open_or_rebuild):
        with pytest.raises(TrackingError, match="cannot connect to the tracking database") as info:
            opening(url)
        message = str(info.value)
        assert f"postgresql://unbroken:***@127.0.0.1:{url.split(':')[3].split('/')[0]}/nowhere" in message
        assert "hunter2" not in message and "refused" in message


def test_a_missing_database_on_a_live_server_is_named(pg_cluster):
    with pytest.raises(TrackingError, match=r"t_missing.*does not exist"):
        Tracker(pg_cluster.url("t_missing"))


def test_postgresql_without_psycopg_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    with pytest.raises(ConfigError, match=r"pip install 'unbroken\[postgres\]'"):
        Tracker("postgresql://u:hunter2@127.0.0.1:1/x")


def test_a_connection_the_server_dropped_is_replaced(pg_url, pg_cluster):
    with Tracker(pg_url) as tracker:
        tracker.create_trial("exp")
        with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as admin:
            killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                                   "AND pid <> pg_backend_pid()", (pg_url.rsplit("/", 1)[1],)).fetchall()
        assert killed and all(ok for (ok,) in killed)
        assert tracker.create_trial("exp").number == 2  # checked before use, reconnected
