"""Escapers: one per place untrusted text (anything a run reported, a submission's name) ends
up. ``terminal`` for what is printed, ``markdown`` for report.md and summary.md (one line, safe
in a table cell; ``markdown_item`` after a list marker), ``csv_cell`` for summary.csv, ``xml``
for junit.xml."""

from __future__ import annotations

import re
import unicodedata

# ANSI escape sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), other ESC X
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]"
                  r"|\x9b[0-?]*[ -/]*[@-~]")
# Candidates for ``controls``: every character but printable ASCII (tab and newline decided there)
NOT_PLAIN = re.compile(r"[^\x20-\x7e]")
# Written out by ``controls``: the C0/C1 controls (Cc), every format character (Cf: the bidi
# marks, embeddings, overrides and isolates U+200E/F, U+202A-E, U+2066-9, U+061C; the zero-width
# U+200B-D, U+2060-4, U+FEFF; the soft hyphen, the tags U+E0000-7F, ...), the line and paragraph
# separators (Zl, Zp), lone surrogates (Cs), and the characters that draw nothing though they
# are letters or marks: the Hangul fillers, the combining grapheme joiner, variation selectors
# and the Mongolian free variation selectors
CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
INVISIBLE = re.compile("[\u115f\u1160\u3164\uffa0\u034f\u180b-\u180f\u2800\ufe00-\ufe0f"
                       "\U000e0100-\U000e01ef]")
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")
# Markdown: what could start markup (a table cell's end, HTML and comments, code spans, links,
# images, emphasis, strikethrough, backslash escapes, autolinks' ``@``) becomes an entity
MARKDOWN = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "&#124;", "`": "&#96;",
            "\\": "&#92;", "*": "&#42;", "[": "&#91;", "]": "&#93;", "~": "&#126;",
            "@": "&#64;"}
MARKDOWN_CHARS = re.compile("[" + re.escape("".join(MARKDOWN)) + "]")
# ``_`` opens or closes emphasis unless both neighbours are letters, digits or marks (then it is
# intraword, as in test_add_small_ints, and stays); every other ``_`` becomes an entity
LOOSE_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
# GFM's extended autolinks: ``www.``, a scheme's ``://`` (http, https, ftp, ...), ``mailto:`` and
# ``xmpp:``; the ``.`` or ``:`` that makes one becomes an entity (and every ``@``, above)
AUTOLINK_DOT = re.compile(r"(?i)(?<=www)\.")
AUTOLINK_COLON = re.compile(r"(?i)(?<=[a-z0-9+.-]):(?=//)|(?<=mailto):|(?<=xmpp):")
# what would make a list item's text a block of its own: a heading, a list marker, a rule
BLOCK_START = re.compile(r"^(?:#{1,6}(?=\s|$)|[-+](?=[\s-]|$)|\d{1,9}[.)](?=\s|$))")


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def cut(text: str, limit: int) -> str:
    """``text`` cut at ``limit`` characters (0: never), marked with " ..." when cut."""
    return text if not limit or len(text) <= limit else text[:limit] + " ..."


def written_out(ch: str) -> str:
    """``ch`` as its code: ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``."""
    n = ord(ch)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def controls(value: object, keep_newlines: bool = False) -> str:
    """``value`` without ANSI escapes, every other control character, bidirectional or
    zero-width character, and every character that draws nothing (``CONTROL_CATEGORIES``,
    ``INVISIBLE``) written as its code (``written_out``); tabs and, with ``keep_newlines``,
    newlines stay."""
    text = ANSI.sub("", _text(value))

    def one(match: re.Match) -> str:
        ch = match.group()
        if ch in "\t\n" or (keep_newlines and ch == "\r"):
            return ch  # a newline is written out below, unless kept
        if unicodedata.category(ch) in CONTROL_CATEGORIES or INVISIBLE.match(ch):
            return written_out(ch)
        return ch

    text = NOT_PLAIN.sub(one, text)
    return text.replace("\n", "\\n") if not keep_newlines else text


def terminal(value: object, limit: int = 0) -> str:
    """One line safe to print: no ANSI escape, no control character, no newline."""
    return cut(controls(value), limit)


def terminal_block(value: object, limit: int = 0) -> str:
    """Lines safe to print (a log quoted to a person): newlines kept, escapes removed."""
    return cut(controls(value, keep_newlines=True), limit)


def markdown(value: object, limit: int = 140) -> str:
    """One line of Markdown that renders as the text itself (GitHub's GFM) in a table cell:
    whitespace runs (newlines too) become one space; control, bidirectional, zero-width and
    invisible characters are written as their codes (``controls``); ``& < > | ` \\ * [ ] ~ @``
    become HTML entities, and so do a ``_`` that is not inside a word, the ``.`` of ``www.``
    and the ``:`` of ``://``, ``mailto:`` and ``xmpp:``: no table cell broken, no ``<!--``
    comment, no HTML, code span, link, autolink, image, emphasis or strikethrough. Cut at
    ``limit`` characters before escaping (0: never); never empty (a space). After a list
    item's marker, use ``markdown_item``."""
    text = " ".join(controls(" ".join(_text(value).split())).split())
    text = cut(NOT_XML.sub("?", text), limit)
    text = MARKDOWN_CHARS.sub(lambda m: MARKDOWN[m.group()], text)
    text = AUTOLINK_DOT.sub("&#46;", AUTOLINK_COLON.sub("&#58;", text))
    return LOOSE_UNDERSCORE.sub("&#95;", text) or " "


def markdown_item(value: object, limit: int = 140) -> str:
    """``markdown`` for the text of a list item (``- <text>``): a leading heading, list or rule
    marker (``#``, ``-``, ``+``, ``1.``) becomes an entity too, so the item stays one
    paragraph."""
    text = markdown(value, limit)
    return BLOCK_START.sub(lambda m: f"&#{ord(m.group()[0])};" + m.group()[1:], text)


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
