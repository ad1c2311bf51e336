"""Spot notices: the three services' parsers, the providers and the poller with fakes, and real
`unbroken run --spot X` runs against local imitations of the metadata services (tests/launch/spotserver.py)."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from procs import child_env
from spotserver import SpotServer

from unbroken.checkpoint.store.trialstore import trial_store
from unbroken.launch.spot import (GCP_WARNING_SECONDS, AwsSpot, AzureSpot, GcpSpot, Response, SpotNotice,
                                  SpotServiceError, detect, endpoint, parse_aws, parse_azure, parse_gcp, provider)
from unbroken.launch.spotwatch import SpotWatcher
from unbroken.paths import TrialPaths
from unbroken.tracking import Tracker

NOW = 1_800_000_000.0


# -- parsers -------------------------------------------------------------------------------------------
def test_aws_instance_action_is_parsed():
    notice = parse_aws('{"action": "terminate", "time": "2027-01-15T08:22:00Z"}')
    assert notice == SpotNotice("aws", "terminate",
                                dt.datetime(2027, 1, 15, 8, 22, tzinfo=dt.timezone.utc).timestamp())
    for bad in ("<html>", "{}", '{"action": "stop", "time": "soon"}'):
        with pytest.raises(SpotServiceError, match="aws instance-action"):
            parse_aws(bad)


def test_gcp_flag_gives_a_30_second_notice():
    assert parse_gcp("FALSE", NOW) is None
    assert parse_gcp("TRUE\n", NOW) == SpotNotice("gcp", "preempt", NOW + GCP_WARNING_SECONDS)
    with pytest.raises(SpotServiceError, match="neither TRUE nor FALSE"):
        parse_gcp("maybe", NOW)


def test_azure_only_preempt_events_count_and_the_earliest_wins():
    events = {"Events": [
        {"EventType": "Reboot", "NotBefore": "Mon, 19 Sep 2016 18:00:00 GMT"},
        {"EventType": "Preempt", "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT"},
        {"EventType": "Preempt", "NotBefore": "Mon, 19 Sep 2016 18:29:40 GMT"}]}
    import json
    notice = parse_azure(json.dumps(events), NOW)
    assert notice.deadline == dt.datetime(2016, 9, 19, 18, 29, 40, tzinfo=dt.timezone.utc).timestamp()
    assert parse_azure('{"DocumentIncarnation": 0, "Events": []}', NOW) is None
    assert parse_azure(json.dumps({"Events": [{"EventType": "Preempt", "NotBefore": ""}]}), NOW).deadline == NOW
    with pytest.raises(SpotServiceError):
        parse_azure("[1, 2]", NOW)


# -- providers with a fake fetch -----------------------------------------------------------------------
class FakeFetch:
    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def __call__(self, method, url, headers, timeout):
        self.calls.append((method, url, dict(headers)))
        answer = self.answers(method, url, headers) if callable(self.answers) else self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_aws_keeps_its_token_and_renews_it_after_a_401():
    fetch = FakeFetch([Response(200, "T1"), Response(404, ""), Response(404, ""),
                       Response(401, ""), Response(200, "T2"), Response(404, "")])
    aws = AwsSpot("http://md", fetch)
    assert aws.check(NOW) is None and aws.check(NOW + 5) is None
    assert aws.check(NOW + 10) is None
    methods = [(m, u.split("md")[1]) for m, u, _ in fetch.calls]
    assert methods == [("PUT", "/latest/api/token"), ("GET", AwsSpot.ACTION_PATH), ("GET", AwsSpot.ACTION_PATH),
                       ("GET", AwsSpot.ACTION_PATH), ("PUT", "/latest/api/token"), ("GET", AwsSpot.ACTION_PATH)]
    assert fetch.calls[0][2] == {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}
    assert fetch.calls[5][2] == {"X-aws-ec2-metadata-token": "T2"}


def test_providers_send_their_headers_and_reject_errors():
    gcp = FakeFetch([Response(200, "FALSE"), Response(500, "oops")])
    assert GcpSpot("http://md", gcp).check(NOW) is None
    assert gcp.calls[0][2] == {"Metadata-Flavor": "Google"}
    with pytest.raises(SpotServiceError, match="HTTP 500"):
        GcpSpot("http://md", gcp).check(NOW)
    azure = FakeFetch([Response(200, '{"Events": []}')])
    assert AzureSpot("http://md", azure).check(NOW) is None
    assert azure.calls[0][1] == "http://md/metadata/scheduledevents?api-version=2020-07-01"
    with pytest.raises(Exception, match="use one of aws, gcp, azure, auto"):
        provider("oracle", "http://md")


def test_endpoint_is_overridable():
    assert endpoint({}) == "http://169.254.169.254"
    assert endpoint({"UNBROKEN_SPOT_ENDPOINT": "http://127.0.0.1:9/"}) == "http://127.0.0.1:9"


# -- the poller ----------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = NOW

    def time(self):
        return self.now

    def monotonic(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_poller_reports_one_notice_and_failures_once():
    answers = [SpotServiceError("refused"), SpotServiceError("refused"), Response(200, "FALSE"),
               Response(200, "TRUE"), Response(200, "TRUE")]
    clock, seen, logs = FakeClock(), [], []
    watcher = SpotWatcher(GcpSpot("http://md", FakeFetch(answers)), seen.append, clock=clock, log=logs.append)
    results = []
    for _ in range(5):
        results.append(watcher.poll_once())
        clock.sleep(5)
    assert results[:3] == [None, None, None] and results[3].deadline == NOW + 15 + 30
    assert seen == [results[3]]  # told once, however often the service repeats it
    assert len(logs) == 2 and "cannot read spot notices" in logs[0] and "answers again" in logs[1]


def test_poller_thread_stops_after_a_notice(wait_until):
    seen = []
    watcher = SpotWatcher(GcpSpot("http://md", FakeFetch(lambda *a: Response(200, "TRUE"))), seen.append,
                          interval=0.01)
    watcher.start()
    wait_until(lambda: seen, timeout=10, what="the notice")
    watcher._thread.join(5)
    assert not watcher._thread.is_alive() and len(seen) == 1


@pytest.mark.parametrize("name", ["aws", "gcp", "azure"])
def test_auto_detects_each_service_and_none_when_nothing_answers(name):
    server = SpotServer(name)
    try:
        found = detect(server.url)
        assert found is not None and found.name == name
    finally:
        server.close()
    assert detect(f"http://127.0.0.1:{free_port()}") is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- real `unbroken run --spot` --------------------------------------------------------------------
TRAIN = textwrap.dedent("""
    import sys, time, unbroken
    with unbroken.init(save=unbroken.every_steps(100000)) as run:
        state = unbroken.State(n=0, rng=False)
        start = run.restore(state)
        for step in run.steps(start, int(sys.argv[1])):
            state.n += 1
            time.sleep(0.01)
            if step % 10 == 0:
                print("step", step, flush=True)
""")


def start_run(tmp_path, url, spot, steps):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    home = tmp_path / "home"
    env = child_env(home, UNBROKEN_SPOT_ENDPOINT=url)
    proc = subprocess.Popen([sys.executable, "-m", "unbroken", "run", "--name", "spotty", "--spot", spot,
                             "--spot-interval", "0.1", "--", sys.executable, str(script), str(steps)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, home


@pytest.mark.parametrize("spot", ["aws", "gcp", "azure"])
def test_notice_mid_training_saves_at_the_next_step_and_exits_75_before_its_deadline(tmp_path, spot, wait_until):
    server = SpotServer(spot)
    try:
        proc, home = start_run(tmp_path, server.url, spot, 1_000_000)
        log = TrialPaths(home, "spotty", 1).attempt_log(1)
        wait_until(lambda: log.exists() and "step 50" in log.read_text(), timeout=60, what="training under way")
        notice_at = time.time()
        deadline = notice_at + 30  # GCP's warning is 30 s from when it is seen, so at least this
        server.notice(deadline)
        out, err = proc.communicate(timeout=30)
        ended = time.time()
    finally:
        server.close()
    assert proc.returncode == 75, err
    assert ended < deadline and ended - notice_at < 10  # the next step, not the deadline
    text = log.read_text()
    assert f"spot notice ({spot}" in text and "stopping at step" in text
    stopped_at = int(text.split("stopping at step ")[1].split()[0])
    tracker = Tracker(home / "unbroken.db")
    try:
        trial = tracker.trial("spotty")
        newest = trial_store(home, trial, None).newest_good()
        assert newest.steps_completed == stopped_at > 50
        assert trial.status == "preempted" and "spot notice" in trial.message
    finally:
        tracker.close()


@pytest.mark.parametrize("mode", ["slow", "fail", "refused"])
def test_a_service_down_or_slow_leaves_training_unaffected(tmp_path, mode):
    server = None if mode == "refused" else SpotServer("aws", mode=mode)
    url = server.url if server else f"http://127.0.0.1:{free_port()}"
    try:
        proc, home = start_run(tmp_path, url, "aws", 150)
        out, err = proc.communicate(timeout=60)
    finally:
        if server:
            server.close()
    assert proc.returncode == 0, err
    assert "cannot read spot notices" in err
    if server:
        assert server.requests >= 1
    tracker = Tracker(home / "unbroken.db")
    try:
        assert tracker.trial("spotty").status == "completed"
    finally:
        tracker.close()
