"""Joining CRC32C values of consecutive ranges gives the CRC32C of the whole."""

from __future__ import annotations

import random

import crc32c
import pytest

from unbroken.checkpoint.io.crcjoin import join


@pytest.mark.parametrize("len_a, len_b", [(0, 0), (0, 7), (7, 0), (1, 1), (4095, 4097), (3, 1 << 20)])
def test_join_equals_the_crc_of_the_concatenation(len_a, len_b):
    rng = random.Random(len_a * 31 + len_b)
    a, b = rng.randbytes(len_a), rng.randbytes(len_b)
    assert join(crc32c.crc32c(a), crc32c.crc32c(b), len(b)) == crc32c.crc32c(a + b)


def test_many_chunks_joined_in_order():
    rng = random.Random(5)
    chunks = [rng.randbytes(rng.randrange(0, 5000)) for _ in range(50)]
    crc = crc32c.crc32c(b"header")
    for chunk in chunks:
        crc = join(crc, crc32c.crc32c(chunk), len(chunk))
    assert crc == crc32c.crc32c(b"header" + b"".join(chunks))


def test_huge_lengths_are_exact():
    # x^(8n) for n near 2^60 uses the top of the power table; zeros extend a CRC like a join of zeros.
    zeros = bytes(1 << 16)
    assert join(crc32c.crc32c(b"a"), crc32c.crc32c(zeros), len(zeros)) == crc32c.crc32c(b"a" + zeros)
    assert 0 <= join(0x12345678, 0x9ABCDEF0, (1 << 61) - 1) < 1 << 32
