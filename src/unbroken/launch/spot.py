"""Cloud spot notices: ask an instance metadata service whether this machine is about to go.

Three services, each asked the same question (``Provider.check(fetch, now) -> SpotNotice | None``):

* AWS (IMDSv2): ``PUT /latest/api/token`` (TTL header) for a session token, then
  ``GET /latest/meta-data/spot/instance-action`` -> ``{"action": "terminate"|"stop", "time": "...Z"}``;
  404 means no notice. The token is kept until shortly before its TTL ends (or a 401).
* GCP: ``GET /computeMetadata/v1/instance/preempted`` with ``Metadata-Flavor: Google`` ->
  ``TRUE``/``FALSE``; the warning is about 30 s, so the deadline is "now + 30 s".
* Azure Scheduled Events: ``GET /metadata/scheduledevents?api-version=2020-07-01`` with
  ``Metadata: true`` -> ``{"Events": [{"EventType": "Preempt", "NotBefore": "<RFC 1123 date>"}]}``.

All three answer at ``http://169.254.169.254`` (GCP also at ``metadata.google.internal``); the base
URL is ``$UNBROKEN_SPOT_ENDPOINT`` when set (tests imitate the services on 127.0.0.1). Nothing
here loops or sleeps: :mod:`unbroken.launch.spotwatch` polls. Network failures (refused,
timeouts) raise :class:`SpotServiceError`; the poller reports them and goes on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import json
import os
import urllib.error
import urllib.request
from typing import Callable, Mapping

from ..envvars import ENV_SPOT_ENDPOINT
from ..errors import ConfigError, LaunchError

#: The link-local address every cloud's metadata service answers on.
DEFAULT_ENDPOINT = "http://169.254.169.254"
#: Seconds one metadata request may take (the service is local: it answers in milliseconds).
REQUEST_TIMEOUT = 1.0
#: GCP gives no time with its notice; its documented warning is 30 seconds.
GCP_WARNING_SECONDS = 30.0
#: IMDSv2 session token lifetime asked for (seconds), and how long before its end it is renewed.
AWS_TOKEN_TTL = 21600
AWS_TOKEN_RENEW = 60.0
PROVIDERS = ("aws", "gcp", "azure")


class SpotServiceError(LaunchError):
    """The metadata service could not be asked (refused, timed out, an unexpected answer)."""


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    body: str


#: ``fetch(method, url, headers, timeout) -> Response``; raises SpotServiceError when no answer came.
Fetch = Callable[[str, str, Mapping[str, str], float], Response]


@dataclasses.dataclass(frozen=True)
class SpotNotice:
    """A notice that the machine will be taken: by whom, what happens, and by when (Unix time)."""

    provider: str
    action: str
    deadline: float

    def describe(self) -> str:
        when = dt.datetime.fromtimestamp(self.deadline, dt.timezone.utc).strftime("%H:%M:%SZ")
        return f"spot notice ({self.provider}: {self.action} at {when})"


def http_fetch(method: str, url: str, headers: Mapping[str, str], timeout: float) -> Response:
    """The real :data:`Fetch` (stdlib urllib, no proxies: the service is link-local). Blocks up to ``timeout``."""
    request = urllib.request.Request(url, method=method, headers=dict(headers))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as answer:
            return Response(answer.status, answer.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.read().decode("utf-8", "replace") if exc.fp else "")
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused, reset, bad URL
        raise SpotServiceError(f"{method} {url}: {getattr(exc, 'reason', exc)}") from exc


def endpoint(environ: Mapping[str, str] = os.environ) -> str:
    """The metadata service's base URL: ``$UNBROKEN_SPOT_ENDPOINT`` or the link-local address."""
    return (environ.get(ENV_SPOT_ENDPOINT) or DEFAULT_ENDPOINT).rstrip("/")


class Provider:
    """One cloud's notice protocol. ``check`` is called from the poller's thread only."""

    name = ""

    def __init__(self, base: str, fetch: Fetch = http_fetch, timeout: float = REQUEST_TIMEOUT):
        self.base, self.fetch, self.timeout = base, fetch, timeout

    def check(self, now: float) -> SpotNotice | None:
        """Ask once: the notice, or None. Raises SpotServiceError when the service did not answer sensibly."""
        raise NotImplementedError

    def _get(self, path: str, headers: Mapping[str, str]) -> Response:
        return self.fetch("GET", self.base + path, headers, self.timeout)

    def _unexpected(self, path: str, response: Response) -> SpotServiceError:
        return SpotServiceError(f"{self.name} metadata {path}: HTTP {response.status} {response.body[:200]!r}")


class AwsSpot(Provider):
    """AWS IMDSv2 spot instance-action (see the module docstring)."""

    name = "aws"
    TOKEN_PATH = "/latest/api/token"
    ACTION_PATH = "/latest/meta-data/spot/instance-action"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._token: str | None = None
        self._token_until = 0.0

    def check(self, now: float) -> SpotNotice | None:
        response = self._get(self.ACTION_PATH, {"X-aws-ec2-metadata-token": self._session(now)})
        if response.status == 401:  # the token expired early (the service restarted): once more
            self._token = None
            response = self._get(self.ACTION_PATH, {"X-aws-ec2-metadata-token": self._session(now)})
        if response.status == 404:
            return None
        if response.status != 200:
            raise self._unexpected(self.ACTION_PATH, response)
        return parse_aws(response.body)

    def _session(self, now: float) -> str:
        if self._token is None or now >= self._token_until:
            response = self.fetch("PUT", self.base + self.TOKEN_PATH,
                                  {"X-aws-ec2-metadata-token-ttl-seconds": str(AWS_TOKEN_TTL)}, self.timeout)
            if response.status != 200 or not response.body.strip():
                raise self._unexpected(self.TOKEN_PATH, response)
            self._token, self._token_until = response.body.strip(), now + AWS_TOKEN_TTL - AWS_TOKEN_RENEW
        return self._token


class GcpSpot(Provider):
    """GCP's ``instance/preempted`` flag (see the module docstring)."""

    name = "gcp"
    PATH = "/computeMetadata/v1/instance/preempted"

    def check(self, now: float) -> SpotNotice | None:
        response = self._get(self.PATH, {"Metadata-Flavor": "Google"})
        if response.status != 200:
            raise self._unexpected(self.PATH, response)
        return parse_gcp(response.body, now)


class AzureSpot(Provider):
    """Azure Scheduled Events; only ``Preempt`` events count (see the module docstring)."""

    name = "azure"
    PATH = "/metadata/scheduledevents?api-version=2020-07-01"

    def check(self, now: float) -> SpotNotice | None:
        response = self._get(self.PATH, {"Metadata": "true"})
        if response.status != 200:
            raise self._unexpected(self.PATH, response)
        return parse_azure(response.body, now)


_CLASSES = {"aws": AwsSpot, "gcp": GcpSpot, "azure": AzureSpot}


def provider(name: str, base: str, fetch: Fetch = http_fetch, timeout: float = REQUEST_TIMEOUT) -> Provider:
    """The :class:`Provider` called ``name`` (aws, gcp, azure); ConfigError for another name."""
    if name not in _CLASSES:
        raise ConfigError(f"--spot {name!r}: use one of aws, gcp, azure, auto")
    return _CLASSES[name](base, fetch, timeout)


def detect(base: str, fetch: Fetch = http_fetch, timeout: float = REQUEST_TIMEOUT) -> Provider | None:
    """``--spot auto``: the first provider whose service answers one quick question, or None.

    Blocks at most ``len(PROVIDERS) * 2 * timeout`` seconds (AWS asks twice: token, then notice).
    """
    for name in PROVIDERS:
        candidate = provider(name, base, fetch, timeout)
        try:
            candidate.check(0.0)
        except SpotServiceError:
            continue
        return candidate
    return None


# -- parsers (pure) ---------------------------------------------------------------------------------
def parse_aws(body: str) -> SpotNotice:
    """AWS instance-action JSON -> a notice; SpotServiceError if it is not that JSON."""
    try:
        data = json.loads(body)
        return SpotNotice("aws", str(data["action"]), _iso_time(data["time"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise SpotServiceError(f"aws instance-action is not {{action, time}} JSON: {body[:200]!r}") from exc


def parse_gcp(body: str, now: float) -> SpotNotice | None:
    """GCP's ``TRUE``/``FALSE`` -> a notice due ``GCP_WARNING_SECONDS`` after ``now``, or None."""
    flag = body.strip().upper()
    if flag == "FALSE":
        return None
    if flag == "TRUE":
        return SpotNotice("gcp", "preempt", now + GCP_WARNING_SECONDS)
    raise SpotServiceError(f"gcp instance/preempted is neither TRUE nor FALSE: {body[:200]!r}")


def parse_azure(body: str, now: float) -> SpotNotice | None:
    """Azure Scheduled Events JSON -> the earliest ``Preempt`` event as a notice, or None.

    A Preempt event without a NotBefore time is due now (Azure leaves it empty once it started).
    """
    try:
        events = json.loads(body).get("Events") or []
        times = [_rfc1123_time(e.get("NotBefore"), now) for e in events if e.get("EventType") == "Preempt"]
    except (ValueError, AttributeError, TypeError) as exc:
        raise SpotServiceError(f"azure scheduledevents is not Scheduled Events JSON: {body[:200]!r}") from exc
    return SpotNotice("azure", "preempt", min(times)) if times else None


def _iso_time(text: str) -> float:
    return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def _rfc1123_time(text: str | None, now: float) -> float:
    if not text:
        return now
    parsed = email.utils.parsedate_to_datetime(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()
