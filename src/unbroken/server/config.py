"""The dashboard's settings: where it listens, its token, whether actions are allowed.

Rules (issue "unbroken ui"): the server listens on 127.0.0.1 unless told otherwise; on any other
address every request must carry the token. Mutating actions (POST) always need the token, and
are refused altogether with ``read_only``. A token is therefore always present: the one given
(``--token`` or ``$UNBROKEN_UI_TOKEN``), or a fresh random one, printed once inside the URL.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import quote

from ..errors import ConfigError

#: Environment variable holding the token (same as ``--token``).
ENV_TOKEN = "UNBROKEN_UI_TOKEN"
#: Names that always mean this machine.
_LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}
#: Shortest token accepted from the user (a guessable token is no protection).
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """True for an address (or ``localhost``) that only this machine can reach."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A random URL-safe token (256 bits)."""
    return secrets.token_urlsafe(32)


def check_token(token: str) -> str:
    """``token`` if it is long enough and URL-safe; else ConfigError saying what is wrong."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"the UI token must have at least {MIN_TOKEN_LENGTH} characters")
    if quote(token, safe="-_.~") != token:
        raise ConfigError("the UI token may hold only letters, digits, '-', '_', '.' and '~'")
    return token


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """What one ``unbroken ui`` serves and how.

    ``token`` is always set (see the module docstring); ``token_for_reads`` says whether reads
    need it too: on a non-loopback address, or when the user chose the token explicitly.
    """

    home: Path
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = dataclasses.field(default_factory=new_token)
    token_for_reads: bool = False
    read_only: bool = False
    db: str | None = None  #: the index's URL (None: ``<home>/unbroken.db``)

    @classmethod
    def build(cls, home: Path, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
              read_only: bool = False, db: str | None = None) -> "ServerConfig":
        """The settings from the command line: a given token (or ``$UNBROKEN_UI_TOKEN``) guards
        reads as well; without one a random token is made, guarding reads only off loopback."""
        if not 0 <= port < 65536:
            raise ConfigError(f"invalid port {port}: use 0-65535")
        given = token or os.environ.get(ENV_TOKEN) or None
        chosen = check_token(given) if given else new_token()
        return cls(Path(home), host, port, chosen, bool(given) or not is_loopback(host), read_only, db)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def url(self, port: int | None = None) -> str:
        """The address to open, with the token (the page keeps it and sends it with each request)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port or self.port}/?token={self.token}"
