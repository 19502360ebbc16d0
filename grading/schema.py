"""The shape of one lab run's record (``grading.runner.LabRun``), checked where run data enters
``grading.grade``: before anything is scored or rendered.

Everything in a run's record came, one way or another, from a process the submission could
influence. ``check_run`` returns a record whose every field has its type; what does not is
reported as a problem of that submission and never reaches a renderer:

- a test record that is malformed is kept as a graded, failed test with reason
  ``malformed_record`` (so a submission cannot shrink the denominator by breaking its own
  failing tests' records), named by its position;
- a malformed flag becomes a ``malformed_record`` flag (nothing a run raised disappears);
- a malformed problem is replaced by a note saying so.

Text fields are capped (``TEXT_LIMIT``) and counts of tests, flags and problems too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from grading.runner import LabRun, TestResult

OUTCOMES = ("passed", "failed", "error", "skipped", "not_run")
TEXT_LIMIT = 4000
NAME_LIMIT = 300
MAX_TESTS = 5000
MAX_FLAGS = 200
MAX_PROBLEMS = 200
MALFORMED = "malformed_record"


class Malformed(Exception):
    """A field that does not have its type, in one line."""


def _str(value: object, what: str, limit: int = TEXT_LIMIT, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise Malformed(f"{what}: expected a str, got {type(value).__name__}")
    if not empty and not value:
        raise Malformed(f"{what}: expected a non-empty str")
    return value if len(value) <= limit else value[:limit] + " ..."


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise Malformed(f"{what}: expected a bool, got {type(value).__name__}")
    return value


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(f"{what}: expected a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise Malformed(f"{what}: expected a finite number >= 0, got {value!r}")
    return float(value)


def _get(record: object, key: str, what: str) -> object:
    if isinstance(record, dict):
        if key not in record:
            raise Malformed(f"{what}: no {key!r}")
        return record[key]
    if not hasattr(record, key):
        raise Malformed(f"{what}: no {key!r}")
    return getattr(record, key)


def check_test(record: object, what: str) -> TestResult:
    """A ``TestResult`` with every field of its type, or ``Malformed``."""
    outcome = _str(_get(record, "outcome", what), f"{what}.outcome", 20)
    if outcome not in OUTCOMES:
        raise Malformed(f"{what}.outcome: expected one of {OUTCOMES}, got {outcome[:20]!r}")
    markers = _get(record, "markers", what)
    if not isinstance(markers, list) or len(markers) > 50:
        raise Malformed(f"{what}.markers: expected a list of at most 50 str")
    return TestResult(
        nodeid=_str(_get(record, "nodeid", what), f"{what}.nodeid", NAME_LIMIT, empty=False),
        name=_str(_get(record, "name", what), f"{what}.name", NAME_LIMIT, empty=False),
        outcome=outcome,
        reason=_str(_get(record, "reason", what), f"{what}.reason", 40),
        message=_str(_get(record, "message", what), f"{what}.message"),
        duration_s=_seconds(_get(record, "duration_s", what), f"{what}.duration_s"),
        structural=_bool(_get(record, "structural", what), f"{what}.structural"),
        randomized=_bool(_get(record, "randomized", what), f"{what}.randomized"),
        markers=[_str(m, f"{what}.markers[{i}]", 80) for i, m in enumerate(markers)])


def check_flag(record: object, what: str) -> dict:
    """A flag ``{"kind", "nodeid", "detail"}`` of str (nodeid may be None), or ``Malformed``."""
    if not isinstance(record, dict):
        raise Malformed(f"{what}: expected a dict, got {type(record).__name__}")
    kind = _str(_get(record, "kind", what), f"{what}.kind", 40, empty=False)
    if not kind.replace("_", "").isalnum() or not kind.isascii():
        raise Malformed(f"{what}.kind: expected letters, digits and _, got {kind[:40]!r}")
    nodeid = record.get("nodeid")
    return {"kind": kind,
            "nodeid": None if nodeid is None else _str(nodeid, f"{what}.nodeid", NAME_LIMIT),
            "detail": _str(_get(record, "detail", what), f"{what}.detail")}


@dataclass
class Checked:
    """A run with every field of its type, and what was wrong with the one that came in."""

    run: LabRun
    problems: list[str] = field(default_factory=list)


def _list(value: object, what: str, limit: int, problems: list[str]) -> list:
    if not isinstance(value, list):
        problems.append(f"malformed run record: {what}: expected a list, got "
                        f"{type(value).__name__}")
        return []
    if len(value) > limit:
        problems.append(f"malformed run record: {what}: {len(value)} entries, only the first "
                        f"{limit} kept")
    return value[:limit]


def check_run(run: object, lab: str) -> Checked:
    """``run`` (a ``LabRun`` from the runner, or anything at all) as a well-typed ``LabRun`` for
    ``lab``; never raises."""
    problems: list[str] = []
    if not isinstance(run, LabRun):
        return Checked(LabRun(lab=lab, impl=None, problems=[
            f"malformed run record: expected a LabRun, got {type(run).__name__}"]), problems)
    clean = LabRun(lab=lab, impl=run.impl if isinstance(run.impl, str) else None)
    for i, test in enumerate(_list(run.tests, "tests", MAX_TESTS, problems)):
        try:
            clean.tests.append(check_test(test, f"tests[{i}]"))
        except Malformed as err:
            problems.append(f"malformed run record: {err}; scored as a failed test")
            clean.tests.append(TestResult(nodeid=f"<malformed record {i}>",
                                          name=f"<malformed record {i}>", outcome="failed",
                                          reason=MALFORMED, message=str(err)))
    for i, flag in enumerate(_list(run.flags, "flags", MAX_FLAGS, problems)):
        try:
            clean.flags.append(check_flag(flag, f"flags[{i}]"))
        except Malformed as err:
            clean.flags.append({"kind": MALFORMED, "nodeid": None, "detail": str(err)})
    for i, problem in enumerate(_list(run.problems, "problems", MAX_PROBLEMS, problems)):
        try:
            clean.problems.append(_str(problem, f"problems[{i}]"))
        except Malformed as err:
            problems.append(f"malformed run record: {err}")
    clean.problems += problems
    try:
        clean.wall_s = _seconds(run.wall_s, "wall_s")
    except Malformed as err:
        clean.problems.append(f"malformed run record: {err}")
    clean.attempts = run.attempts if type(run.attempts) is int and run.attempts >= 0 else 0
    clean.log = run.log if isinstance(run.log, str) else ""
    sandbox = run.sandbox if isinstance(run.sandbox, dict) else {}
    clean.sandbox = {k: v for k, v in sandbox.items() if isinstance(k, str) and len(k) < 40
                     and type(v) is int}
    return Checked(clean, problems)
