"""Fast unit tests of what keeps the sandbox's output from being trusted: the escapers
(``grading.escape``), the safe reads (``grading.safe``), the run-record schema
(``grading.schema``), staging (``grade.stage``) and the submission budget's setting."""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import unicodedata
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from grading import escape, grade, honesty, report, runner, safe, schema
from grading.config import WEIGHTS_REL, ConfigError, load_weights, submission_budget
from grading.tests import fakes

# --- escape ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["\x1b[31mred\x1b[0m", "\x1b]0;title\x07x", "a\x1b]8;;u\x1b\\b",
                                  "\x9b2J", "\x00bell\x07", "\u202eevil"])
def test_terminal_leaves_no_escape_or_control_character(text):
    out = escape.terminal(text)
    assert "\x1b" not in out and "\x9b" not in out and "\x07" not in out
    assert all(ch.isprintable() for ch in out), repr(out)


def test_terminal_is_one_line_and_terminal_block_keeps_lines():
    assert escape.terminal("a\nb\rc") == "a\\nb\\x0dc"
    assert escape.terminal_block("a\n\x1b[2Jb") == "a\nb"


def test_terminal_cuts_at_the_limit():
    assert escape.terminal("x" * 50, 10) == "x" * 10 + " ..."


@pytest.mark.parametrize("text", ["a\n| lab | 30 |\n<!-- hide", "`code` and ``", "<b>x</b>",
                                  "[click](http://x)", "a\\|b", "**bold**", "\x1b[31mx"])
def test_markdown_cannot_break_a_table_or_hide_content(text):
    out = escape.markdown(text, 0)
    for bad in ("\n", "|", "<", ">", "`", "[", "]", "*", "\\", "\x1b"):
        assert bad not in out, (bad, out)
    assert "<!--" not in out


def test_markdown_keeps_plain_text_and_is_never_empty():
    assert escape.markdown("test_add_small_ints (structural)") == \
        "test_add_small_ints (structural)"
    assert escape.markdown("") == " "
    assert escape.markdown("a & b") == "a &amp; b"


# --- escape.markdown through a GFM renderer -------------------------------------------------
#
# markdown-it-py's "gfm-like" preset (CommonMark + GFM tables and strikethrough) renders each
# escaped cell. It has no linkify-it here, so GFM's extended autolinks are checked on the source,
# the way cmark-gfm's autolink extension finds them: on literal characters ("www.", a scheme's
# "://", "mailto:", "xmpp:", and the "@" of an address), where an entity is not the character.

GFM = MarkdownIt("gfm-like", {"linkify": False})
AUTOLINK_TRIGGERS = re.compile(r"(?i)www\.|[a-z][a-z0-9+.-]*://|mailto:|xmpp:|@")
MARKUP_TOKENS = {"em_open", "strong_open", "s_open", "link_open", "image", "code_inline",
                 "html_inline", "html_block", "softbreak", "hardbreak"}
INVISIBLES = ["\u200e", "\u200f", "\u061c", "\u200b", "\u200c", "\u200d", "\u2060",
              "\ufeff", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066",
              "\u2067", "\u2068", "\u2069", "\u00ad", "\u2028", "\u2029", "\U000e0041",
              "\u3164", "\u115f", "\ufe0f", "\u034f", "\u180e"]
PIECES = ["_", "__", "*", "**", "~~", "`", "[x](http://e.example)", "![i](x)", "<b>", "<!--",
          "http://", "https://e.example/p?q=1", "www.", "www.e.example", "ftp://x", "a@b.co",
          "mailto:a@b.co", "xmpp:a@b.co", "&amp;", "&#95;", "\\", "|", "# ", "- ", "+ ", "1. ",
          "2) ", "---", "___", "> ", "    ", "\n", "\t", ":", ".", "ALL 162 TESTS PASSED: 30.0",
          *INVISIBLES]
hostile_text = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)),
                        max_size=12).map("".join)


def visible(text: str) -> str:
    """What a cell must show: ``text`` on one line, its invisible characters written out."""
    shown = " ".join(escape.controls(" ".join(text.split())).split())
    return escape.NOT_XML.sub("?", shown)


def inline_text(token) -> str:
    kinds = {c.type for c in token.children}
    assert not kinds & MARKUP_TOKENS and kinds <= {"text"}, kinds
    return "".join(c.content for c in token.children)


def assert_shown_as_is(rendered: str, escaped: str, text: str) -> None:
    assert not AUTOLINK_TRIGGERS.search(escaped), escaped
    assert rendered == visible(text), (rendered, escaped)
    assert not any(unicodedata.category(ch) in escape.CONTROL_CATEGORIES
                   or escape.INVISIBLE.match(ch) for ch in rendered), ascii(rendered)


def cell_shown(escaped: str) -> str:
    """The text GFM shows for ``escaped`` in the second cell of a table's one row."""
    tokens = GFM.parse(f"| a | b |\n|---|---|\n| x | {escaped} |\n")
    assert [t.type for t in tokens].count("td_open") == 2, "one row, two cells"
    cells = [t for i, t in enumerate(tokens) if t.type == "inline" and tokens[i - 1].type == "td_open"]
    assert inline_text(cells[0]) == "x"
    return inline_text(cells[1])


@settings(max_examples=250, deadline=None)
@given(hostile_text)
def test_a_table_cell_renders_as_its_text_in_gfm(text):
    escaped = escape.markdown(text, 0)
    assert_shown_as_is(cell_shown(escaped), escaped, text)


@settings(max_examples=250, deadline=None)
@given(hostile_text)
def test_a_list_item_renders_as_one_paragraph_of_its_text_in_gfm(text):
    assume(visible(text))  # nothing to show: an empty item
    escaped = escape.markdown_item(text, 0)
    tokens = GFM.parse(f"- {escaped}\n")
    assert [t.type for t in tokens] == [
        "bullet_list_open", "list_item_open", "paragraph_open", "inline", "paragraph_close",
        "list_item_close", "bullet_list_close"], escaped
    assert_shown_as_is(inline_text(tokens[3]), escaped, text)


def test_the_issues_escapes_render_as_plain_text():
    """Bold "all passed" with ``__``, autolinked addresses, bidi and zero-width characters."""
    for text in ("__ALL 162 TESTS PASSED: 30.0 / 30.0__", "_x_ and ___y___",
                 "see https://evil.example, www.evil.example or root@evil.example",
                 "a\u200eb\u200fc\u061cd\u200be\u2060f\ufeffg"):
        escaped = escape.markdown(text, 0)
        assert_shown_as_is(cell_shown(escaped), escaped, text)


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\",\"y\")", "+1", "-2+3", "@SUM(A1)",
                                  "\t=1", "\r=1", "\x1b[0m=1"])
def test_csv_cells_never_start_a_formula(text):
    out = escape.csv_cell(text)
    assert not out.startswith(escape.CSV_FORMULA), out
    assert "\n" not in out and "\r" not in out


def test_csv_cells_keep_numbers_and_plain_text():
    assert escape.csv_cell(3) == "3" and escape.csv_cell("solved") == "solved"


def test_xml_drops_what_xml_cannot_hold():
    assert escape.xml("a\x00b\x1b[31mc") == "a?bc"


# --- safe -----------------------------------------------------------------------------------


def test_safe_read_reads_a_regular_file_capped(tmp_path):
    (tmp_path / "f").write_bytes(b"0123456789")
    assert safe.read_bytes(tmp_path / "f") == (b"0123456789", False)
    assert safe.read_bytes(tmp_path / "f", 4) == (b"0123", True)
    assert safe.read_text(tmp_path / "f", 4).startswith("0123\n[grading: cut at 4 bytes]")


def test_safe_read_refuses_a_symlink(tmp_path):
    (tmp_path / "secret").write_text("keys")
    (tmp_path / "log").symlink_to(tmp_path / "secret")
    with pytest.raises(safe.Unsafe, match=r"refused to read .*log: a symlink"):
        safe.read_bytes(tmp_path / "log")


def test_safe_read_refuses_a_fifo_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "log")
    with pytest.raises(safe.Unsafe, match="a FIFO"):
        safe.read_bytes(tmp_path / "log")


def test_safe_read_refuses_a_socket_a_device_and_a_folder(tmp_path):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        with pytest.raises(safe.Unsafe, match="a socket"):
            safe.read_bytes(tmp_path / "sock")
    with pytest.raises(safe.Unsafe, match="a character device"):
        safe.read_bytes(Path("/dev/null"))
    with pytest.raises(safe.Unsafe, match="a folder"):
        safe.read_bytes(tmp_path)


def test_safe_read_refuses_a_symlinked_folder_below_the_root(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "pytest.log").write_text("keys")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "hidden-1").symlink_to(tmp_path / "elsewhere")
    target = tmp_path / "run" / "hidden-1" / "pytest.log"
    assert safe.read_bytes(target)[0] == b"keys", "without a root only the file is checked"
    with pytest.raises(safe.Unsafe, match="hidden-1 is a symlink"):
        safe.read_bytes(target, root=tmp_path / "run")
    with pytest.raises(safe.Unsafe, match="not under"):
        safe.read_bytes(tmp_path / "elsewhere" / "pytest.log", root=tmp_path / "run")


def test_safe_read_refuses_a_hard_link_when_asked(tmp_path):
    (tmp_path / "a").write_text("x")
    os.link(tmp_path / "a", tmp_path / "b")
    assert safe.read_bytes(tmp_path / "b")[0] == b"x"
    with pytest.raises(safe.Unsafe, match="a hard link"):
        safe.read_bytes(tmp_path / "b", single_link=True)


def test_safe_copy_never_writes_through_a_link(tmp_path):
    (tmp_path / "src").write_text("log")
    (tmp_path / "victim").write_text("kept")
    (tmp_path / "dst").symlink_to(tmp_path / "victim")
    with pytest.raises(FileExistsError):
        safe.copy(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "victim").read_text() == "kept"


def test_safe_read_names_a_bad_limit():
    with pytest.raises(ValueError, match="limit: expected a non-negative int, got -1"):
        safe.read_bytes(Path("/dev/null"), -1)


# --- schema ---------------------------------------------------------------------------------


def good_test(**changes) -> runner.TestResult:
    test = runner.TestResult(nodeid="t.py::test_a", name="test_a", outcome="passed")
    vars(test).update(changes)
    return test


@pytest.mark.parametrize("changes", [{"name": 3}, {"nodeid": {"x": 1}}, {"outcome": "won"},
                                     {"message": ["x"]}, {"duration_s": float("nan")},
                                     {"duration_s": "1"}, {"structural": "no"},
                                     {"markers": "gpu"}, {"markers": [1]}, {"reason": None}])
def test_a_malformed_test_record_scores_as_a_failed_test(changes):
    run = runner.LabRun(lab="lab-01", impl=None, tests=[good_test(), good_test(**changes)])
    checked = schema.check_run(run, "lab-01")
    tests = checked.run.tests
    assert [t.outcome for t in tests] == ["passed", "failed"]
    assert tests[1].reason == schema.MALFORMED and tests[1].name == "<malformed record 1>"
    assert checked.problems and "malformed run record: tests[1]" in checked.problems[0]
    assert any("malformed" in p for p in checked.run.problems)


def test_a_record_missing_a_key_is_malformed():
    with pytest.raises(schema.Malformed, match="no 'outcome'"):
        schema.check_test({"nodeid": "x", "name": "x"}, "tests[0]")


def test_malformed_flags_stay_flags_and_problems_become_notes():
    run = runner.LabRun(lab="lab-01", impl=None, flags=[
        {"kind": "reads_solution", "nodeid": None, "detail": "ok"},
        {"kind": "x\n| lab | 30 |<!--", "nodeid": None, "detail": "fake"},
        {"kind": "tampers_tests", "detail": 7}, "not a dict"], problems=["fine", 42])
    checked = schema.check_run(run, "lab-01").run
    assert [f["kind"] for f in checked.flags] == ["reads_solution", *[schema.MALFORMED] * 3]
    assert checked.problems[0] == "fine"
    assert all(isinstance(p, str) for p in checked.problems) and len(checked.problems) == 2


def test_a_run_that_is_not_a_labrun_scores_nothing():
    checked = schema.check_run({"tests": []}, "lab-01").run
    assert checked.tests == [] and "expected a LabRun, got dict" in checked.problems[0]


def test_a_run_whose_lists_are_not_lists_keeps_nothing_of_them():
    run = runner.LabRun(lab="lab-01", impl=None)
    run.tests, run.flags, run.problems, run.wall_s = "x", {"a": 1}, None, -1
    checked = schema.check_run(run, "lab-01").run
    assert checked.tests == [] and checked.flags == []
    assert sum("expected a list" in p for p in checked.problems) == 3
    assert any("wall_s" in p for p in checked.problems)


# --- staging --------------------------------------------------------------------------------

LAB1, LAB2 = "lab-01-x", "lab-02-y"


def starter(root: Path, lab: str, text: str = "x = 1\n") -> Path:
    (root / lab).mkdir(parents=True, exist_ok=True)
    path = root / lab / "starter.py"
    path.write_text(text)
    return path


def staged(sub: Path, tmp_path: Path, labs=(LAB1,)) -> tuple[Path, list[dict]]:
    return grade.stage(sub, list(labs), tmp_path / "staged")


def test_staging_copies_a_plain_starter(tmp_path):
    starter(tmp_path / "sub", LAB1, "def f(): ...\n")
    dst, flags = staged(tmp_path / "sub", tmp_path)
    assert flags == [] and (dst / LAB1 / "starter.py").read_text() == "def f(): ...\n"


def test_staging_skips_a_missing_lab_without_a_flag(tmp_path):
    (tmp_path / "sub").mkdir()
    dst, flags = staged(tmp_path / "sub", tmp_path)
    assert flags == [] and not (dst / LAB1 / "starter.py").exists()


@pytest.mark.parametrize(("make", "what"), [
    (lambda p, other: p.symlink_to(other), "a symlink"),
    (lambda p, other: os.link(other, p), "a hard link"),
    (lambda p, other: os.mkfifo(p), "a FIFO"),
])
def test_staging_refuses_links_and_fifos(tmp_path, make, what):
    secret = tmp_path / "secret.py"
    secret.write_text("SECRET = 1\n")
    (tmp_path / "sub" / LAB1).mkdir(parents=True)
    make(tmp_path / "sub" / LAB1 / "starter.py", secret)
    dst, flags = staged(tmp_path / "sub", tmp_path)
    assert not (dst / LAB1 / "starter.py").exists()
    (flag,) = flags
    assert flag["kind"] == "unsafe_submission" and flag["lab"] == LAB1
    assert what in flag["detail"] and "starter.py" in flag["detail"]
    assert "SECRET" not in flag["detail"]


def test_staging_refuses_a_symlinked_lab_folder_and_submission(tmp_path):
    starter(tmp_path / "other", LAB1)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / LAB1).symlink_to(tmp_path / "other" / LAB1)
    dst, flags = staged(tmp_path / "sub", tmp_path)
    assert [f["detail"].split(";")[0] for f in flags] == [f"{LAB1} is a symlink"]
    (tmp_path / "link").symlink_to(tmp_path / "other")
    dst, flags = grade.stage(tmp_path / "link", [LAB1], tmp_path / "staged2")
    assert [f["kind"] for f in flags] == ["unsafe_submission"]
    assert not (dst / LAB1 / "starter.py").exists()


def test_staging_refuses_a_device_and_escapes_the_detail(tmp_path):
    (tmp_path / "sub" / LAB1).mkdir(parents=True)
    (tmp_path / "sub" / LAB1 / "starter.py").symlink_to("/dev/zero")
    _, flags = staged(tmp_path / "sub", tmp_path)
    assert "a symlink" in flags[0]["detail"]
    lab = "lab-01-\x1b[31m\nx"
    (tmp_path / "sub" / lab).mkdir()
    os.mkfifo(tmp_path / "sub" / lab / "starter.py")
    _, flags = grade.stage(tmp_path / "sub", [lab], tmp_path / "staged3")
    assert "\x1b" not in flags[0]["detail"] and "\n" not in flags[0]["detail"]


def test_only_graded_labs_and_those_lab_02_loads_are_staged():
    every = ["lab-01-a", "lab-02-b", "lab-03-c", "lab-04-d"]
    assert grade.staged_labs(["lab-01-a"], every) == ["lab-01-a"]
    assert grade.staged_labs(["lab-03-c", "lab-04-d"], every) == ["lab-03-c", "lab-04-d"]
    assert grade.staged_labs(["lab-02-b"], every) == every
    assert grade.staged_labs(["lab-02-b"], ["lab-01-a", "lab-02-b"]) == ["lab-01-a", "lab-02-b"]


# --- removing what a run left, and grader errors after the tests ran --------------------------


@pytest.fixture
def fast_tmp(tmp_path: Path):
    """A temp folder on tmpfs where there is one (thousands of folders go in milliseconds)."""
    if not os.path.isdir("/dev/shm"):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="phase11-test-", dir="/dev/shm"))
    yield folder
    safe.remove_tree(folder)


def test_remove_tree_removes_what_a_submission_can_leave(fast_tmp):
    """Deeper than Python's recursion limit, links (never followed), a FIFO, a socket and a
    mode-000 folder: all gone; what a link pointed at stays."""
    tmp_path = fast_tmp
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    fakes.leave_a_tree_no_cleanup_survives(tmp_path / "scratch", depth=1200)
    os.symlink(outside, tmp_path / "scratch" / "to-outside")
    safe.remove_tree(tmp_path / "scratch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside"]
    assert (outside / "keep").read_text() == "x"
    safe.remove_tree(tmp_path / "missing")  # nothing to do


def _graded_one(tmp_path: Path) -> tuple[grade.Job, Path]:
    (tmp_path / "repo").mkdir()
    repo = fakes.make_repo(tmp_path / "repo")
    sub = fakes.make_submission(tmp_path / "sub", "# fake: plain\n", "# fake: plain\n")
    labs = runner.lab_names(repo)
    job = grade.Job(repo=repo, labs=labs, weights=load_weights(labs, repo / WEIGHTS_REL),
                    seeds=[], opts=runner.RunOptions(), env={}, staged=labs,
                    run_lab=fakes.forged_run)
    return job, sub


def test_a_grader_error_after_the_tests_ran_keeps_the_grade(tmp_path, monkeypatch):
    """Removing the temp folder fails, then rendering report.md fails: the computed grade and
    its flags stand, each error is a problem of the grade, and report.json says so."""
    job, sub = _graded_one(tmp_path)

    def cannot_remove(path):
        raise RecursionError("maximum recursion depth exceeded")

    def cannot_render(grade_):
        raise ValueError("a renderer bug")

    monkeypatch.setattr(safe, "remove_tree", cannot_remove)
    monkeypatch.setattr(report, "markdown", cannot_render)
    got = grade.grade_and_report(job, sub, tmp_path / "out")
    assert got["total"] == 100 and [lab["points"] for lab in got["labs"]] == [60, 40]
    assert any("could not be removed (RecursionError" in e for e in got["errors"])
    assert any("writing the reports" in e and "a renderer bug" in e for e in got["errors"])
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["total"] == 100 and saved["errors"] == got["errors"]


def test_a_grader_error_between_labs_keeps_the_labs_that_ran(tmp_path, monkeypatch):
    job, sub = _graded_one(tmp_path)
    real = grade.grade_lab

    def second_lab_breaks(job_, lab, *args):
        if lab == fakes.LAB2:
            raise KeyError("a grader bug")
        return real(job_, lab, *args)

    monkeypatch.setattr(grade, "grade_lab", second_lab_breaks)
    monkeypatch.setattr(honesty, "scan_file", lambda path: [{"kind": "reads_solution",
                                                             "detail": "names solution.py"}])
    got = grade.grade_submission(job, sub, tmp_path / "out")
    assert [lab["points"] for lab in got["labs"]] == [60, 0] and got["total"] == 60
    assert [f["kind"] for f in got["flags"]] == ["reads_solution", "reads_solution"]
    assert any("a grader bug" in e for e in got["errors"])


# --- the submission budget's setting ---------------------------------------------------------


def test_submission_budget_is_read_from_the_defaults(tmp_path):
    path = tmp_path / "weights.toml"
    path.write_text("[defaults]\nsubmission_budget_s = 90\n")
    assert submission_budget(path) == 90.0
    path.write_text("[defaults]\ntimeout_s = 1\n")
    assert submission_budget(path) is None
    path.write_text("[defaults]\nsubmission_budget_s = -1\n")
    with pytest.raises(ConfigError, match="submission_budget_s must be a positive number"):
        submission_budget(path)


def test_the_shipped_weights_set_a_submission_budget():
    assert submission_budget() is not None
