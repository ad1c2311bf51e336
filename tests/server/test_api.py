"""The JSON API against a real home (a run SIGKILLed twice and resumed): the documents equal the
CLI's --json output on the same home; series, logs, actions; ids and `../` refused."""

from __future__ import annotations

import json
import struct

import pytest


@pytest.fixture(scope="module")
def served(resumed_home, serve):
    with serve(resumed_home) as s:
        yield s


@pytest.fixture
def req(request_raw):
    return request_raw


@pytest.fixture
def get_json(request_raw):
    def get(served, path, **kw):
        status, _, body = request_raw(served, path, **kw)
        assert status == 200, body
        return json.loads(body)
    return get


def test_experiments_is_the_document_of_ls(served, req, get_json, cli_json):
    assert get_json(served, "/api/experiments") == cli_json(served.home, "ls")


@pytest.mark.parametrize("ref", ["resumed/1", "other/1"])
def test_trial_is_the_document_of_show(served, ref, req, get_json, cli_json):
    assert get_json(served, f"/api/trials/{ref}") == cli_json(served.home, "show", ref)


def test_checkpoints_is_the_document_of_checkpoints(served, req, get_json, cli_json):
    assert get_json(served, "/api/trials/resumed/1/checkpoints") == cli_json(served.home, "checkpoints", "resumed/1")


def test_the_killed_trial_has_three_attempts_resumed_from_10_and_20(served, req, get_json, cli_json):
    doc = get_json(served, "/api/trials/resumed/1")
    assert [a["state"] for a in doc["attempts"]] == ["crashed", "crashed", "completed"]
    assert [a["restored_steps"] for a in doc["attempts"]] == [None, 10, 20]
    runs = {r["ref"]: r for r in get_json(served, "/api/runs")["runs"]}
    assert runs["resumed/1"]["restarts"] == 2 and runs["resumed/1"]["metrics"]["training/loss"][0] == 30
    assert set(runs) == {"resumed/1", "other/1"}


def test_series_at_full_resolution_are_the_points_of_metrics(served, req, get_json, cli_json):
    points = [p for p in cli_json(served.home, "metrics", "resumed/1")["points"] if p["name"] == "loss"]
    doc = get_json(served, "/api/trials/resumed/1/series?group=training&name=loss&format=json")
    assert doc["x"] == [p["steps_completed"] for p in points]
    assert doc["y"] == [p["value"] for p in points]
    assert doc["attempt"] == [p["attempt"] for p in points] and doc["total"] == len(points)


def test_binary_series_downsampled_with_lttb_keep_the_ends(served, req, get_json, cli_json):
    status, headers, body = req(served, "/api/trials/resumed/1/series?group=training&name=loss&max_points=5")
    assert status == 200 and headers["x-points"] == "5" and headers["x-downsampled"] == "1"
    n = 5
    x = struct.unpack(f"{n}d", body[:8 * n])
    assert len(body) == 8 * n + 8 * n + 4 * n and x[0] == 1 and x[-1] == 30
    _, again, _ = req(served, "/api/trials/resumed/1/series?group=training&name=loss&max_points=5",
                          headers={"If-None-Match": headers["etag"]})
    assert again["etag"] == headers["etag"]
    status, _, _ = req(served, "/api/trials/resumed/1/series?group=training&name=loss&max_points=5",
                           headers={"If-None-Match": headers["etag"]})
    assert status == 304


def test_logs_are_addressed_by_attempt_number(served, req, get_json, cli_json):
    status, headers, body = req(served, "/api/trials/resumed/1/attempts/1/log?offset=0")
    assert status == 200 and b"holding at 12" in body and headers["x-state"] == "crashed"
    assert req(served, "/api/trials/resumed/1/attempts/9/log")[0] == 404


@pytest.mark.parametrize("path", [
    "/api/trials/../1", "/api/trials/..%2F..%2Fetc/1", "/api/trials/resumed/..", "/api/trials/resumed/1/attempts/../log",
    "/api/trials/resumed/1/attempts/..%2F1/log", "/api/trials/resumed/-1", "/api/trials/resumed/01",
    "/api/trials/resumed/1/series?group=training&name=../../loss", "/static/../app.py", "/static/..%2Fapp.py"])
def test_traversal_and_bad_ids_are_refused(served, path, req, get_json, cli_json):
    status, _, body = req(served, path)
    assert status in (400, 404), (status, body)


def test_post_verify_needs_the_header_token(served, req, get_json, cli_json):
    uuid = get_json(served, "/api/trials/resumed/1/checkpoints")["checkpoints"][-1]["uuid"]
    path = f"/api/trials/resumed/1/checkpoints/{uuid}/verify"
    assert req(served, path, "POST")[0] == 401
    assert req(served, path + f"?token={served.token}", "POST")[0] == 401
    assert req(served, path, "POST", {"Cookie": f"unbroken_token={served.token}"})[0] == 401
    assert req(served, path, "GET", {"X-Unbroken-Token": served.token})[0] == 405
    status, _, body = req(served, path, "POST", {"X-Unbroken-Token": served.token})
    assert status == 200 and json.loads(body)["status"] == "ok"
    bad = "/api/trials/resumed/1/checkpoints/..%2F..%2Fx/verify"
    assert req(served, bad, "POST", {"X-Unbroken-Token": served.token})[0] in (400, 404)


def test_post_export_copies_a_verified_checkpoint_into_the_home(served, req, get_json, cli_json):
    uuid = get_json(served, "/api/trials/resumed/1/checkpoints")["checkpoints"][0]["uuid"]
    status, _, body = req(served, f"/api/trials/resumed/1/checkpoints/{uuid}/export", "POST",
                              {"Authorization": f"Bearer {served.token}"})
    doc = json.loads(body)
    assert status == 200 and doc["to"] == str(served.home / "exports" / "resumed" / "trial-1" / uuid)
    assert (served.home / "exports" / "resumed" / "trial-1" / uuid / "MANIFEST.json").is_file()


def test_read_only_refuses_every_action(resumed_home, serve, req, get_json):
    with serve(resumed_home, read_only=True) as s:
        uuid = get_json(s, "/api/trials/resumed/1/checkpoints")["checkpoints"][0]["uuid"]
        status, _, body = req(s, f"/api/trials/resumed/1/checkpoints/{uuid}/verify", "POST",
                                  {"X-Unbroken-Token": s.token})
        assert status == 403 and b"read-only" in body
        assert get_json(s, "/api/config")["read_only"] is True
