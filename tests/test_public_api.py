"""The public names are what the README and docs promise; everything else is private."""

from __future__ import annotations

import unbroken
import unbroken.checkpoint
import unbroken.checkpoint.files
import unbroken.errors

PROMISED = {
    "EXIT_PREEMPTED", "ResumableLoader", "Run", "RunInfo", "State", "__version__", "every_seconds", "every_steps",
    "init", "auto_interval", "keep_all", "keep_best", "keep_every", "keep_latest", "never",
    "BackgroundSaveError", "CheckpointError", "CheckpointGone", "CheckpointNotFound", "ConfigError",
    "CorruptCheckpoint", "CorruptCheckpointWarning", "IndexWarning", "LaunchError", "NotFound", "PickleNotAllowed", "StateMismatch",
    "StorageError", "TensorFileError", "TrackingError", "TrialBusy", "TrialNotFound", "UnbrokenError",
    "UnbrokenWarning", "UnsafePathError", "UnsupportedFormatVersion", "UnsupportedValue",
}


def test_the_top_level_exports_exactly_the_promised_names():
    assert set(unbroken.__all__) == PROMISED
    for name in PROMISED:
        assert getattr(unbroken, name) is not None


def test_every_error_is_rooted_in_unbroken_error_and_exported():
    errors = {name for name, obj in vars(unbroken.errors).items()
              if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == "unbroken.errors"}
    raising = {n for n in errors if issubclass(getattr(unbroken.errors, n), unbroken.UnbrokenError)}
    warning = {n for n in errors if issubclass(getattr(unbroken.errors, n), unbroken.UnbrokenWarning)}
    assert raising | warning == errors
    assert errors <= PROMISED


def test_the_checkpoint_package_and_the_path_api():
    assert set(unbroken.checkpoint.__all__) == {
        "CheckpointStore", "FileEntry", "Manifest", "PendingCheckpoint", "RetentionPolicy", "State",
        "keep_all", "keep_best", "keep_every", "keep_latest"}
    assert set(unbroken.checkpoint.files.__all__) == {"load", "prepare", "release", "save", "wait"}


def test_importing_unbroken_imports_neither_torch_nor_the_cli():
    import subprocess
    import sys

    code = "import sys, unbroken; print(sorted(m for m in ('torch', 'click', 'rich') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
