"""Fixtures for the grading tools' own tests: fake courses in temp dirs (see ``fakes``).

Tests marked ``slow`` run whole grading sessions (many pytest subprocesses, a minute or more on
two cores); ``pytest grading/tests -m "not slow"`` runs the rest in seconds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from grading import sandbox
from grading.tests import fakes


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: runs whole grading sessions in subprocesses")


def _no_sandbox(why: str) -> None:
    """Skip, with the way to fix it; under CI=true a missing sandbox is a failure."""
    message = f"the grader's sandbox is unavailable here: {why}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def sandbox_works() -> sandbox.Sandbox:
    try:
        return sandbox.probe(sys.executable, [fakes.REAL_REPO])
    except sandbox.SandboxUnavailable as err:
        _no_sandbox(str(err))


@pytest.fixture(scope="session")
def sandbox_or_not() -> list[str]:
    """``grade`` options for tests of the grader's logic: sandboxed where bwrap works, else
    ``--no-sandbox`` (under CI=true a missing sandbox is a failure)."""
    try:
        sandbox.probe(sys.executable, [fakes.REAL_REPO])
        return []
    except sandbox.SandboxUnavailable as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the grader's sandbox is unavailable here: {err}", pytrace=False)
        return ["--no-sandbox"]


@pytest.fixture(scope="session")
def sandbox_limits(sandbox_works: sandbox.Sandbox) -> sandbox.Sandbox:
    """A sandbox that enforces both limits with cgroups (the fork and memory bombs need it)."""
    weak = {k: v for k, v in sandbox_works.enforcement.items() if not v.startswith("cgroup")}
    if weak:
        _no_sandbox(f"limits not enforced by a cgroup: {weak}")
    return sandbox_works


@pytest.fixture(scope="module")
def fake_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fakes.make_repo(tmp_path_factory.mktemp("repo"))
