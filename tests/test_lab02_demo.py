"""Lab 02's demo (``tools/demo.py``): its own lines reach the terminal, everything reaches the
run's log, and a silent stretch prints the elapsed time, never a promise of how long."""

from __future__ import annotations

import re
import sys

from labkit import load_support

demo = load_support("lab-02", "tools.demo")

CHILD = ("import time; print('[demo] first', flush=True); print('vllm noise', flush=True); "
         "time.sleep(2.6); print('[demo] last', flush=True)")


def test_a_silent_child_gets_elapsed_time_lines_and_its_whole_output_is_logged(tmp_path, capfd):
    log = tmp_path / "run.log"
    code = demo.run_child([], log, verbose=False, cmd=[sys.executable, "-c", CHILD], heartbeat_s=1.0)
    shown = capfd.readouterr().out.splitlines()
    assert code == 0
    assert shown[0] == "[demo] first" and shown[-1] == "[demo] last", shown
    beats = [line for line in shown[1:-1] if re.fullmatch(r"\[demo\] still running after \d+ s", line)]
    assert beats and len(beats) == len(shown) - 2, f"only elapsed-time lines between: {shown}"
    assert "vllm noise" not in shown, "the engine's own lines go to the log, not the terminal"
    assert log.read_text().splitlines() == ["[demo] first", "vllm noise", "[demo] last"]


def test_each_run_gets_its_own_log():
    first, second = demo.run_log(), demo.run_log()
    try:
        assert first != second and first.is_file() and second.is_file()
    finally:
        first.unlink()
        second.unlink()
