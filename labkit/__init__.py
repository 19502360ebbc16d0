"""Shared machinery for the Phase 11 labs: the LAB_IMPL loader and assertions that teach."""

from labkit.asserts import assert_bitwise_equal, assert_close, first_mismatch
from labkit.isolate import in_worker
from labkit.loader import LabImplError, load_impl, load_lab, load_support, resolve_impl

__all__ = [
    "LabImplError",
    "assert_bitwise_equal",
    "assert_close",
    "first_mismatch",
    "in_worker",
    "load_impl",
    "load_lab",
    "load_support",
    "resolve_impl",
]
