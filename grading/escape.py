"""Escapers: one per place untrusted text (anything a run reported, a submission's name) ends
up. ``terminal`` for what is printed, ``markdown`` for report.md and summary.md (one line, safe
in a table cell), ``csv_cell`` for summary.csv, ``xml`` for junit.xml."""

from __future__ import annotations

import re

# ANSI escape sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), other ESC X
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]"
                  r"|\x9b[0-?]*[ -/]*[@-~]")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")
MARKDOWN = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "&#124;", "`": "&#96;",
            "\\": "&#92;", "*": "&#42;", "[": "&#91;", "]": "&#93;", "~": "&#126;"}
MARKDOWN_CHARS = re.compile("[" + re.escape("".join(MARKDOWN)) + "]")


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def cut(text: str, limit: int) -> str:
    """``text`` cut at ``limit`` characters (0: never), marked with " ..." when cut."""
    return text if not limit or len(text) <= limit else text[:limit] + " ..."


def controls(value: object, keep_newlines: bool = False) -> str:
    """``value`` without ANSI escapes, every other control character (and the bidirectional
    overrides) written as ``\\xNN``/``\\uNNNN``; tabs and, with ``keep_newlines``, newlines
    stay."""
    text = ANSI.sub("", _text(value))

    def one(match: re.Match) -> str:
        ch = match.group()
        if keep_newlines and ch in "\n\r":
            return ch
        return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"

    text = CONTROL.sub(one, text)
    return text.replace("\n", "\\n") if not keep_newlines else text


def terminal(value: object, limit: int = 0) -> str:
    """One line safe to print: no ANSI escape, no control character, no newline."""
    return cut(controls(value), limit)


def terminal_block(value: object, limit: int = 0) -> str:
    """Lines safe to print (a log quoted to a person): newlines kept, escapes removed."""
    return cut(controls(value, keep_newlines=True), limit)


def markdown(value: object, limit: int = 140) -> str:
    """One line of Markdown that renders as the text itself: whitespace runs (newlines too)
    become one space, control characters and ANSI escapes are escaped, and ``& < > | ` \\ * [
    ] ~`` become HTML entities (no table cell broken, no ``<!--`` comment, no code span, link or
    emphasis). Cut at ``limit`` characters before escaping (0: never); never empty (a space)."""
    text = " ".join(controls(" ".join(_text(value).split())).split())
    text = cut(NOT_XML.sub("?", text), limit)
    return MARKDOWN_CHARS.sub(lambda m: MARKDOWN[m.group()], text) or " "


def csv_cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: control characters escaped (newlines too), and
    one starting with ``= + - @``, a tab or a CR prefixed with ``'`` (no formula runs)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    text = controls(value)
    return "'" + text if text.startswith(CSV_FORMULA) else text


def xml(value: object, limit: int = 0) -> str:
    """Text XML can hold (junit.xml): characters XML forbids become ``?``; ANSI escapes go."""
    return cut(NOT_XML.sub("?", ANSI.sub("", _text(value))), limit)
