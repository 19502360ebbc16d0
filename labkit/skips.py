"""Why a `gpu` or `engine` test cannot run here, or None when it can.

Both checks import heavy packages (torch, vLLM), so they run only when such a test is selected,
and once per session.
"""

from __future__ import annotations

import functools
import importlib.util

ENGINE_INSTALL = "make install  (or: pip install -e '.[engine]'; see README.md)"
GPU_INSTALL = "pip install -e '.[gpu]' on a CUDA machine"


@functools.cache
def cuda_skip_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return f"gpu: torch is not installed ({GPU_INSTALL})"
    import torch

    if not torch.cuda.is_available():
        return "gpu: no CUDA device (torch.cuda.is_available() is False)"
    return None


@functools.cache
def engine_skip_reason() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return f"engine: vLLM is not installed; install the CPU build with: {ENGINE_INSTALL}"
    try:
        import vllm  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure means "no usable engine"
        return (f"engine: `import vllm` failed ({type(err).__name__}: {err}); "
                f"reinstall with: {ENGINE_INSTALL}")
    return None
