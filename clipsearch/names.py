"""Names that may not be text: file names are bytes on POSIX, and a query can be any bytes.

Python hands a non-UTF-8 file name or argument over as a str with lone surrogates
(`surrogateescape`); SQLite, JSON and a UTF-8 terminal all refuse those. These helpers find
such strings and show them readably, with the bad bytes as `\\xNN`.
"""

from __future__ import annotations


def is_text(value: str) -> bool:
    """Whether `value` is valid Unicode text (no lone surrogates from undecodable bytes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def readable(value: str) -> str:
    """`value` safe to print on one line: undecodable bytes as \\xNN, control characters
    (a newline in a file name) as escapes."""
    if not is_text(value):
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in value)
