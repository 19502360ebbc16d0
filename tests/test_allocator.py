"""``labkit.allocator``: freed memory stays in the process, so reusing it faults no pages."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from labkit import allocator

# One child process per setting: allocate a 64 MiB block, write every page, free it; 8 times.
# The block is above glibc's default mmap threshold, so by default each round maps fresh pages.
ROUNDS_CODE = """
import resource, sys
from labkit import allocator
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    block = b"\\x01" * (64 << 20)
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def minor_faults(setting: str) -> int:
    done = subprocess.run([sys.executable, "-c", ROUNDS_CODE, setting], capture_output=True,
                          text=True, timeout=60, check=True)
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_memory_is_reused_without_faulting_its_pages_again():
    default, kept = minor_faults("default"), minor_faults("keep")
    assert kept * 4 < default, (
        f"8 rounds of a 64 MiB block: {kept} minor page faults with keep_freed_memory, "
        f"{default} without; kept memory must fault in once, not every round")


def test_a_c_library_other_than_glibc_is_left_alone(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    monkeypatch.setattr(allocator.ctypes, "CDLL", None)  # calling it would fail the test
    assert allocator.keep_freed_memory() is False
