"""vLLM's plugin hook for lab 02, part 3: a server process can run the student's punica ops.

vLLM calls every ``vllm.general_plugins`` entry point (``pyproject.toml`` declares this one)
in each process it starts, the API server's engine core included. ``register`` does nothing
unless ``LAB02_PUNICA_OPS=lab``; then it installs lab 02's six CPU punica ops, from the
implementation ``LAB_IMPL`` selects, with the lab's own ``install_ops``:

    LAB02_PUNICA_OPS=lab python -m vllm.entrypoints.openai.api_server ...
"""

from __future__ import annotations

import os

OPS_ENV = "LAB02_PUNICA_OPS"  # the lab's ``OPS_ENV``: "lab", or unset / "stock" for vLLM's own
CHOICES = ("stock", "lab")


def register() -> None:
    """Install lab 02's ops in this process when ``LAB02_PUNICA_OPS=lab``; refuse any value
    other than "lab", "stock" or unset, naming it."""
    value = os.environ.get(OPS_ENV, "") or "stock"
    if value not in CHOICES:
        raise ValueError(f"{OPS_ENV}: expected one of {CHOICES} or unset, got {value!r}")
    if value == "lab":
        from labkit import load_lab

        lab = load_lab("lab-02")
        lab.install_ops(lab.lab_ops())
