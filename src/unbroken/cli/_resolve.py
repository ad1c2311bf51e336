"""From command-line words to things: the home folder, the index, trials, checkpoint folders.

A TRIAL is ``EXPERIMENT`` (its newest trial) or ``EXPERIMENT/NUMBER``. Commands that also take
a PATH (verify, export) treat an argument naming an existing folder as a path, anything else as
a trial (write ``./name`` to force the path form). Paths need no database: a checkpoint folder
describes itself.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click

from ..checkpoint import CheckpointStore
from ..checkpoint.store.trialstore import trial_store as shared_trial_store
from ..config import DB_FILENAME, MANIFEST_NAME, check_name, resolve_home, resolve_storage_root
from ..errors import ConfigError
from ..paths import TrialPaths
from ..storage import LocalStorage
from ..tracking import Tracker, Trial, resolve_db_url
from ..tracking.url import backend_of, sqlite_path
from ._output import CliError

_TRIAL_RE = re.compile(r"^(?P<experiment>[^/]+)(?:/(?P<number>[0-9]+))?$")


def home_of(ctx: click.Context) -> Path:
    """The home folder from ``--home`` / ``$UNBROKEN_HOME`` (the group stores it in ``ctx.obj``)."""
    root = ctx.find_root()
    return resolve_home((root.obj or {}).get("home"))


def open_index(ctx: click.Context, home: Path, *, required: bool = True, readonly: bool = False) -> Tracker | None:
    """The tracking index of ``home``, closed with the command; never created by a reader.

    ``readonly``: opened with :meth:`Tracker.open_readonly` (no file is created or changed, and
    it works on a read-only home; a write through it raises). Without a database: None, or
    CliError "no runs yet" when ``required``.
    """
    url = db_url_of(ctx, home)
    if backend_of(url) == "sqlite" and not sqlite_path(url).is_file():
        if required:
            raise CliError(f"no runs yet in {home} (no {DB_FILENAME}; start one with unbroken.init or `unbroken run`)")
        return None
    tracker = Tracker.open_readonly(url) if readonly else Tracker(url)
    ctx.call_on_close(tracker.close)
    return tracker


def db_url_of(ctx: click.Context, home: Path) -> str:
    """The index's URL from ``--db`` / ``$UNBROKEN_DB``, else ``<home>/unbroken.db``."""
    return resolve_db_url((ctx.find_root().obj or {}).get("db"), home)


def storage_root_of(ctx: click.Context) -> str | None:
    """Where new trials keep checkpoints, from ``--storage`` / ``$UNBROKEN_STORAGE`` (None: the home)."""
    return resolve_storage_root((ctx.find_root().obj or {}).get("storage"))


def parse_trial(text: str) -> tuple[str, int | None]:
    """``"cifar"`` -> ``("cifar", None)``; ``"cifar/2"`` -> ``("cifar", 2)``; else CliError."""
    match = _TRIAL_RE.match(text)
    if not match or (match["number"] is not None and int(match["number"]) < 1):
        raise CliError(f"invalid trial {text!r}: write EXPERIMENT (its newest trial) or EXPERIMENT/NUMBER, "
                       "e.g. cifar/2")
    check_name(match["experiment"])
    number = match["number"]
    return match["experiment"], int(number) if number is not None else None


def find_trial(tracker: Tracker, text: str) -> Trial:
    experiment, number = parse_trial(text)
    tracker.experiment(experiment)  # "no experiment named ..." is clearer than "no trial ..."
    return tracker.trial(experiment, number)


def paths_of(home: Path, trial: Trial) -> TrialPaths:
    """Where the files of ``trial`` live (the one owner of the layout)."""
    return TrialPaths(home, trial.experiment, trial.number)


def trials_on_disk(home: Path) -> list[TrialPaths]:
    """Every trial folder under ``home`` that holds a checkpoints folder, by experiment and number.

    Storage is the truth: this finds trials the index may have lost. Folders whose names do not
    round-trip through :class:`TrialPaths` (not a valid experiment name, not a number) are skipped.
    """
    found = []
    for folder in (home / "experiments").glob("*/trial-*"):
        number = folder.name.removeprefix("trial-")
        try:
            paths = TrialPaths(home, folder.parent.name, int(number)) if number.isdigit() else None
        except ConfigError:
            paths = None
        if paths is not None and paths.root == folder and paths.checkpoints.is_dir():
            found.append(paths)
    return sorted(found, key=lambda p: (p.experiment, p.number))


def checkpoints_dir(home: Path, trial: Trial) -> Path:
    return paths_of(home, trial).checkpoints


def trial_store(home: Path, trial: Trial, storage_root: str | None = None) -> CheckpointStore:
    """The checkpoints of a trial, as storage holds them (the truth; the index only adds marks):
    where the index recorded them (an object store), else under the home."""
    return shared_trial_store(home, trial, storage_root)


@dataclasses.dataclass
class Target:
    """What verify/export work on: a trial's checkpoints, a checkpoints folder, or one checkpoint folder."""

    label: str
    location: Path | str  # a folder, or the URL of a trial's checkpoints on an object store
    store: CheckpointStore | None = None  # None for a single checkpoint folder
    trial: Trial | None = None
    tracker: Tracker | None = None

    @property
    def single(self) -> bool:
        return self.store is None


def resolve_target(ctx: click.Context, text: str) -> Target:
    """A TRIAL or a PATH (see the module docstring)."""
    path = Path(text).expanduser()
    if path.is_dir():
        return path_target(path)
    if "/" in text.rstrip("/") and not _TRIAL_RE.match(text):
        raise CliError(f"{text!r} is neither a folder nor a trial (EXPERIMENT or EXPERIMENT/NUMBER)")
    home = home_of(ctx)
    tracker = open_index(ctx, home)
    return trial_target(home, tracker, find_trial(tracker, text))


def trial_target(home: Path, tracker: Tracker, trial: Trial) -> Target:
    store = trial_store(home, trial)
    location = checkpoints_dir(home, trial) if store.storage.is_local else store.storage.location
    return Target(trial.ref, location, store, trial, tracker)


def path_target(path: Path) -> Target:
    """A single checkpoint folder (it holds a manifest), a trial folder, or a checkpoints folder."""
    path = path.resolve()
    if (path / MANIFEST_NAME).exists():
        return Target(str(path), path)
    if (path / "checkpoints").is_dir() and not any(path.glob(f"*/{MANIFEST_NAME}")):
        path = path / "checkpoints"
    return Target(str(path), path, CheckpointStore(LocalStorage(path)))
