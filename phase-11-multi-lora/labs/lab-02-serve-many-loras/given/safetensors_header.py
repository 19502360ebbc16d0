"""Given: a checkpoint's tensor table, read from safetensors headers (not graded).

A support module (``labkit.load_support("lab-02", "given.safetensors_header")``). ``reconcile`` needs the exact
bytes of the base and the adapter, and a safetensors file states them in its header: no tensor
data is read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DTYPE_BYTES = {"float32": 4, "F32": 4, "float16": 2, "F16": 2, "bfloat16": 2, "BF16": 2,
               "half": 2, "float": 4}



@dataclass(frozen=True)
class Tensor:
    """One tensor of a safetensors file, from its header: dtype code, shape, bytes."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int



def read_safetensors_header(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensor table of a ``.safetensors`` file, read from its JSON header only.

    Layout: 8 bytes little-endian header length N, then N bytes of JSON mapping each tensor
    name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (plus ``__metadata__``).
    """
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return {name: Tensor(t["dtype"], tuple(t["shape"]), t["data_offsets"][1] - t["data_offsets"][0])
            for name, t in header.items()}



def tensors_in(folder: Path) -> dict[str, Tensor]:
    tensors: dict[str, Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors |= read_safetensors_header(file)
    if not tensors:
        raise FileNotFoundError(f"{folder}: no .safetensors file")
    return tensors



def dtype_bytes(name: str, what: str) -> int:
    if name not in DTYPE_BYTES:
        raise ValueError(f"{what}: expected one of {sorted(DTYPE_BYTES)}, got {name!r}")
    return DTYPE_BYTES[name]



def one_dtype(tensors: dict[str, Tensor], folder: Path) -> int:
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) != 1:
        raise ValueError(f"{folder}: expected one dtype across tensors, got {sorted(dtypes)}")
    return dtype_bytes(dtypes.pop(), f"{folder} dtype")

