"""open_storage: which backend a location gives, and the errors for unusable ones (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unbroken.errors import ConfigError
from unbroken.storage import LocalStorage, open_storage


def test_a_plain_path_and_a_file_url_give_local_storage(tmp_path):
    for location in (tmp_path, str(tmp_path), f"file://{tmp_path}", f"file://localhost{tmp_path}"):
        storage = open_storage(location)
        assert isinstance(storage, LocalStorage)
        assert storage.root == tmp_path


def test_a_file_url_with_a_remote_host_is_refused():
    with pytest.raises(ConfigError, match="local path"):
        open_storage("file://otherhost/data")


def test_an_unknown_scheme_is_named_and_the_supported_ones_listed():
    with pytest.raises(ConfigError) as info:
        open_storage("ftp://host/checkpoints")
    message = str(info.value)
    assert "'ftp'" in message
    for scheme in ("s3://", "gs://", "az://", "memory://", "file://"):
        assert scheme in message


@pytest.mark.parametrize("location", ["", "   ", "s3://", "s3:///prefix", "s3://bucket/p?x=1"])
def test_unusable_locations_are_config_errors(location, obstore):
    with pytest.raises(ConfigError):
        open_storage(location)


@pytest.mark.parametrize("url, store_type", [
    ("s3://bucket/some/prefix", "S3Store"),
    ("gs://bucket/prefix", "GCSStore"),
    ("az://container/prefix", "AzureStore"),
    ("memory://", "MemoryStore"),
])
def test_object_urls_build_the_store_of_their_scheme_without_network(url, store_type, tmp_path, monkeypatch,
                                                                     obstore):
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "account")
    storage = open_storage(url, cache_dir=tmp_path)
    assert type(storage.client.store).__name__ == store_type
    assert storage.location == url
    assert storage.local_dir("x") is None
    assert storage.cache.parent == tmp_path


def test_the_store_prefix_comes_from_the_url(tmp_path, obstore):
    storage = open_storage("s3://bucket/some/prefix/", cache_dir=tmp_path)
    assert storage.client.store.prefix == "some/prefix"
    assert storage.location == "s3://bucket/some/prefix"


def test_the_cache_defaults_to_unbroken_cache_then_home(tmp_path, monkeypatch, obstore):
    monkeypatch.setenv("UNBROKEN_CACHE", str(tmp_path / "c"))
    assert open_storage("memory://").cache.parent == tmp_path / "c"
    monkeypatch.delenv("UNBROKEN_CACHE")
    monkeypatch.setenv("UNBROKEN_HOME", str(tmp_path / "home"))
    assert open_storage("memory://").cache.parent == tmp_path / "home" / "cache"


def test_one_url_always_gets_the_same_cache_folder_and_two_urls_different_ones(tmp_path, obstore):
    a1 = open_storage("s3://bucket/a", cache_dir=tmp_path).cache
    a2 = open_storage("s3://bucket/a", cache_dir=tmp_path).cache
    b = open_storage("s3://bucket/b", cache_dir=tmp_path).cache
    assert a1 == a2 != b
    assert (a1 / "LOCATION").read_text().strip() == "s3://bucket/a"


def test_importing_the_storage_package_does_not_import_obstore():
    import subprocess
    import sys

    code = "import sys, unbroken.storage; print('obstore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_location_keeps_the_path_of_local_storage(tmp_path):
    assert open_storage(tmp_path / "x").location == str(Path(tmp_path / "x"))
