"""The one translation of object-store errors, and the client's guard against use after fork."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap

import pytest

from unbroken.errors import StorageError
from unbroken.storage.fsio import object_store_error

URL = "s3://bucket/prefix/ck/x.bin"


def fake(kind: str, message: str, base=Exception) -> Exception:
    """An exception of obstore's class name (the mapping goes by name, so no network is needed)."""
    return type(kind, (base,), {})(message)


@pytest.mark.parametrize("exc, code, hint", [
    (fake("NotFoundError", "Object at location x not found", FileNotFoundError), errno.ENOENT, ""),
    (fake("AlreadyExistsError", "Object at location x already exists: 412 Precondition Failed"), errno.EEXIST, ""),
    (fake("PreconditionError", "Request precondition failure"), errno.EEXIST, ""),
    (fake("PermissionDeniedError", "lacked the necessary privileges: 403 Forbidden"), errno.EACCES,
     "AWS_SECRET_ACCESS_KEY"),
    (fake("GenericError", "Generic S3 error: list request: 403 Forbidden: <?xml version=\"1.0\"?>"
                          "<Error><Code>SignatureDoesNotMatch</Code></Error>"), errno.EACCES, "AWS_ACCESS_KEY_ID"),
    (fake("GenericError", "Generic S3 error: 404 Not Found: <?xml version=\"1.0\"?>"
                          "<Error><Code>NoSuchBucket</Code></Error>"), errno.ENXIO, "bucket does not exist"),
    (fake("GenericError", "Generic S3 error: Error performing PUT http://127.0.0.1:1/b/x in 210ms, after 3 "
                          "retries - HTTP error: error sending request"), errno.ECONNREFUSED, "AWS_ENDPOINT_URL"),
    (fake("GenericError", "Generic S3 error: HTTP error: operation timed out"), errno.ETIMEDOUT, "AWS_ENDPOINT_URL"),
    (fake("GenericError", "Generic S3 error: something else"), errno.EIO, ""),
])
def test_object_store_errors_become_storage_errors_naming_the_url_and_what_to_check(exc, code, hint):
    err = object_store_error("read", URL, exc)
    assert isinstance(err, StorageError)
    assert err.errno == code
    assert URL in str(err)
    assert hint in str(err)
    assert err.__cause__ is exc


def test_the_message_keeps_the_first_line_without_xml_body_or_debug_dump():
    exc = fake("GenericError", "Generic S3 error: 404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket"
                               "</Code></Error>\n\nDebug source:\nGeneric {\n  store: \"S3\" }")
    message = str(object_store_error("list", URL, exc))
    assert "Debug source" not in message and "<?xml" not in message
    assert "404 Not Found" in message


def test_a_forked_child_gets_an_error_instead_of_a_hang(tmp_path, obstore):
    script = textwrap.dedent(f"""
        import errno, os, sys
        from unbroken.storage import open_storage
        from unbroken.errors import StorageError
        storage = open_storage("memory://", cache_dir={str(tmp_path)!r})
        storage.names()                      # the parent uses the client
        pid = os.fork()
        if pid == 0:
            try:
                storage.names()
            except StorageError as exc:
                os._exit(3 if exc.errno == errno.EPERM and "fork" in str(exc) else 4)
            os._exit(5)
        _, status = os.waitpid(pid, 0)
        storage.names()                      # the parent goes on working
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr


def test_a_missing_bucket_is_not_a_missing_object_even_when_obstore_says_not_found():
    exc = fake("NotFoundError", "Object at location p/a not found: 404 Not Found: <?xml version=\"1.0\"?>"
                                "<Error><Code>NoSuchBucket</Code></Error>", FileNotFoundError)
    err = object_store_error("read", URL, exc)
    assert err.errno == errno.ENXIO
    assert not isinstance(err.__cause__, FileNotFoundError)  # readers must not take it for a deleted checkpoint
