"""Joining CRC32C values of consecutive byte ranges: ``join(crc(A), crc(B), len(B)) == crc(A + B)``.

Lets several threads checksum the chunks of one file independently (each from 0) and the
result be assembled in file order afterwards. Same convention as ``crc32c.crc32c`` (reflected
polynomial 0x82F63B78, initial and final XOR with 0xFFFFFFFF): the method of zlib's
``crc32_combine``, a multiplication by ``x^(8 * len(B))`` modulo the polynomial, computed with
O(log len) products of 32-bit values. Pure Python, about 50 us per join; any thread.
"""

from __future__ import annotations

POLY = 0x82F63B78
_TOP = 1 << 31  # the polynomial 1 (bit order reflected)


def _multiply(a: int, b: int) -> int:
    """``a * b`` modulo the CRC polynomial (both reflected 32-bit polynomials)."""
    product = 0
    mask = _TOP
    while a:
        if a & mask:
            product ^= b
            a ^= mask
        mask >>= 1
        b = (b >> 1) ^ POLY if b & 1 else b >> 1
    return product


def _powers() -> list[int]:
    """``x^(2^k)`` modulo the polynomial, for k in 0..66 (lengths below 2^64 bytes)."""
    table, power = [], _TOP >> 1  # x^1
    for _ in range(67):
        table.append(power)
        power = _multiply(power, power)
    return table


_X_POW_2K = _powers()


def _x_to_8n(n: int) -> int:
    """``x^(8 n)`` modulo the polynomial."""
    result, k = _TOP, 3  # x^0; 8 n = n << 3
    while n:
        if n & 1:
            result = _multiply(_X_POW_2K[k], result)
        n >>= 1
        k += 1
    return result


def join(crc_a: int, crc_b: int, len_b: int) -> int:
    """The CRC32C of ``A + B`` from the CRC32C of ``A``, that of ``B``, and ``len(B)`` in bytes."""
    if len_b <= 0:
        return crc_a
    return _multiply(_x_to_8n(len_b), crc_a) ^ crc_b
