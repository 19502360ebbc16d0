"""Fixtures for the grading tools' own tests: fake courses in temp dirs (see ``fakes``).

Tests marked ``slow`` run whole grading sessions (many pytest subprocesses, a minute or more on
two cores); ``pytest grading/tests -m "not slow"`` runs the rest in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grading.tests import fakes


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: runs whole grading sessions in subprocesses")


@pytest.fixture(scope="module")
def fake_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fakes.make_repo(tmp_path_factory.mktemp("repo"))
