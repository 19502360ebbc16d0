"""Alternative lab 03: every size counted by listing the tensors that hold it.

Instead of closed-form sums, this implementation enumerates the tensors a checkpoint or an engine
actually holds (the Hugging Face state dict of the base, the PEFT state dict of an adapter, the
``lora_a_stacked`` / ``lora_b_stacked`` buffers of a vLLM engine) with their shapes, and sums
``numel`` over them. Agreeing with the closed forms on every test is evidence that both count
the same tensors. Units are converted through a single table of unit sizes.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction

# === units ======================================================================================

UNIT_BYTES = {"GB": 10**9, "MB": 10**6, "GiB": 2**30, "MiB": 2**20}
GB, MB, GiB, MiB = (UNIT_BYTES[u] for u in ("GB", "MB", "GiB", "MiB"))


def in_unit(n_bytes: int | float, unit: str) -> float:
    return n_bytes / UNIT_BYTES[unit]


def to_gib(n_bytes: int | float) -> float:
    return in_unit(n_bytes, "GiB")


def to_mib(n_bytes: int | float) -> float:
    return in_unit(n_bytes, "MiB")


def to_gb(n_bytes: int | float) -> float:
    return in_unit(n_bytes, "GB")


# === model shapes ===============================================================================

LLAMA_MODEL_TYPES = ("llama", "mistral")  # same tensor inventory: no biases, gated MLP, RMSNorm


def _check_count(name: str, value: object, *, minimum: int = 1) -> int:
    """A size or count must be an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class ModelShape:
    """The integers of a Llama-architecture ``config.json`` that fix every weight's shape.

    hidden: model width (``hidden_size``); intermediate: MLP width (``intermediate_size``);
    layers: decoder layers; heads / kv_heads: query / key-value heads (kv_heads < heads is
    grouped-query attention); vocab: vocabulary rows; tie_word_embeddings: lm_head shares the
    embedding matrix; head_dim: width of one head, ``hidden // heads`` unless given.
    """

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tie_word_embeddings: bool = False
    head_dim: int | None = None

    def __post_init__(self) -> None:
        for name in ("hidden", "intermediate", "layers", "heads", "kv_heads", "vocab"):
            _check_count(name, getattr(self, name))
        if not isinstance(self.tie_word_embeddings, bool):
            raise TypeError(f"tie_word_embeddings: expected a bool, "
                            f"got {self.tie_word_embeddings!r}")
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads: must divide heads={self.heads}, got {self.kv_heads}")
        if self.head_dim is None:
            if self.hidden % self.heads:
                raise ValueError(f"heads: must divide hidden={self.hidden} when head_dim is not "
                                 f"given, got {self.heads}")
            object.__setattr__(self, "head_dim", self.hidden // self.heads)
        _check_count("head_dim", self.head_dim)

    @classmethod
    def from_hf_config(cls, cfg: Mapping) -> ModelShape:
        """Read a Hugging Face Llama-architecture config (the dict in ``config.json``).

        Uses hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
        vocab_size; num_key_value_heads (default: num_attention_heads, as transformers does),
        tie_word_embeddings (default False) and head_dim (default hidden // heads) when present.
        Pass ``json.loads(path.read_text())`` or ``PretrainedConfig.to_dict()``.
        """
        if not isinstance(cfg, Mapping):
            raise TypeError(f"cfg: expected a config.json dict, got {type(cfg).__name__}")
        model_type = cfg.get("model_type")
        if model_type is not None and model_type not in LLAMA_MODEL_TYPES:
            raise ValueError(f"cfg['model_type']: expected a Llama-architecture config "
                             f"{LLAMA_MODEL_TYPES}, got {model_type!r}")
        required = ("hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "vocab_size")
        missing = [key for key in required if key not in cfg]
        if missing:
            raise ValueError(f"cfg: missing required keys {missing}")
        heads = cfg["num_attention_heads"]
        return cls(
            hidden=cfg["hidden_size"],
            intermediate=cfg["intermediate_size"],
            layers=cfg["num_hidden_layers"],
            heads=heads,
            kv_heads=cfg.get("num_key_value_heads") or heads,
            vocab=cfg["vocab_size"],
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            head_dim=cfg.get("head_dim"),
        )


LLAMA2_7B = ModelShape(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32,
                       vocab=32000)
LLAMA3_8B = ModelShape(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8,
                       vocab=128256)

# === targets ====================================================================================

TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
ALL_LINEAR = TARGETS
DEFAULT_TARGETS = ("q", "k", "v", "o")
ENGINE_TARGETS = ALL_LINEAR
PACKED = {"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")}
NAME = re.compile(r"^(?P<stem>q|k|v|o|gate|up|down|qkv|gate_up)(?P<proj>_proj)?$")
HF_MODULE = {t: f"self_attn.{t}_proj" for t in ("q", "k", "v", "o")}
HF_MODULE |= {t: f"mlp.{t}_proj" for t in ("gate", "up", "down")}


def normalize_targets(targets: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(targets, str):
        if targets != "all-linear":
            raise TypeError(f"targets: expected a sequence of module names or 'all-linear', "
                            f"got the string {targets!r}")
        targets = TARGETS
    expanded: list[str] = []
    for name in targets:
        match = NAME.match(name) if isinstance(name, str) else None
        stem = match["stem"] if match else None
        # packed names exist only with the _proj suffix, as vLLM spells them
        if stem is None or (stem in PACKED and not match["proj"]):
            raise ValueError(f"targets: unknown module {name!r}; expected one of {TARGETS} "
                             f"or their PEFT / vLLM names")
        expanded += PACKED.get(stem, (stem,))
    if not expanded or len(set(expanded)) != len(expanded):
        raise ValueError(f"targets: expected distinct module names, at least one, got {targets!r}")
    return tuple(sorted(expanded, key=TARGETS.index))


def module_dims(shape: ModelShape, target: str) -> tuple[int, int]:
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {TARGETS}, got {target!r}")
    out_widths = {"q": shape.heads, "k": shape.kv_heads, "v": shape.kv_heads}
    if target in out_widths:
        return shape.hidden, out_widths[target] * shape.head_dim
    if target == "o":
        return shape.heads * shape.head_dim, shape.hidden
    if target == "down":
        return shape.intermediate, shape.hidden
    return shape.hidden, shape.intermediate


# === state dicts ================================================================================


def base_state_dict(shape: ModelShape) -> Iterator[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of every tensor in a Hugging Face Llama checkpoint."""
    yield "model.embed_tokens.weight", (shape.vocab, shape.hidden)
    for i in range(shape.layers):
        prefix = f"model.layers.{i}"
        for t in TARGETS:
            d_in, d_out = module_dims(shape, t)
            yield f"{prefix}.{HF_MODULE[t]}.weight", (d_out, d_in)
        yield f"{prefix}.input_layernorm.weight", (shape.hidden,)
        yield f"{prefix}.post_attention_layernorm.weight", (shape.hidden,)
    yield "model.norm.weight", (shape.hidden,)
    if not shape.tie_word_embeddings:
        yield "lm_head.weight", (shape.vocab, shape.hidden)


def adapter_state_dict(shape: ModelShape, rank: int,
                       targets: Iterable[str] | str) -> Iterator[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of every tensor in a PEFT ``adapter_model.safetensors``."""
    _check_count("rank", rank)
    chosen = normalize_targets(targets)
    for i in range(shape.layers):
        for t in chosen:
            d_in, d_out = module_dims(shape, t)
            stem = f"base_model.model.model.layers.{i}.{HF_MODULE[t]}"
            yield f"{stem}.lora_A.weight", (rank, d_in)
            yield f"{stem}.lora_B.weight", (d_out, rank)


def numel(tensors: Iterable[tuple[str, tuple[int, ...]]]) -> int:
    return sum(math.prod(dims) for _, dims in tensors)


def base_params(shape: ModelShape) -> int:
    return numel(base_state_dict(shape))


def base_bytes(shape: ModelShape, dtype_bytes: int = 2) -> int:
    return _check_count("dtype_bytes", dtype_bytes) * base_params(shape)


def lora_params(shape: ModelShape, rank: int,
                targets: Iterable[str] | str = DEFAULT_TARGETS) -> int:
    return numel(adapter_state_dict(shape, rank, targets))


def adapter_bytes(shape: ModelShape, rank: int, targets: Iterable[str] | str = DEFAULT_TARGETS,
                  dtype_bytes: int = 2) -> int:
    return _check_count("dtype_bytes", dtype_bytes) * lora_params(shape, rank, targets)


def size_ratio(shape: ModelShape, rank: int, targets: Iterable[str] | str = DEFAULT_TARGETS,
               dtype_bytes: int = 2) -> float:
    # params over params: the dtype cancels exactly
    _check_count("dtype_bytes", dtype_bytes)
    return float(Fraction(base_params(shape), lora_params(shape, rank, targets)))


def adapters_per_gib(adapter_nbytes: int) -> int:
    return divmod(GiB, _check_count("adapter_nbytes", adapter_nbytes))[0]


# === audit ======================================================================================

AUDIT_RTOL = 0.02


@dataclass(frozen=True)
class RatioReading:
    name: str
    ratio: float
    division: str
    why: str


@dataclass(frozen=True)
class RatioAudit:
    claimed: float
    consistent: float
    reading: RatioReading | None
    sentence: str


READINGS = (  # name, base unit, adapter unit, adapter bytes per param, why
    ("consistent", "GiB", "GiB", 2, "same unit, same dtype"),
    ("gb_over_gib", "GB", "GiB", 2, "a unit mix, decimal base over binary adapter"),
    ("gib_over_gb", "GiB", "GB", 2, "a unit mix, binary base over decimal adapter"),
    ("fp32_adapter", "GiB", "GiB", 4, "a dtype mix, fp16 base over an adapter saved in fp32"),
)


def ratio_readings(shape: ModelShape = LLAMA2_7B, rank: int = 16,
                   targets: Iterable[str] | str = DEFAULT_TARGETS) -> list[RatioReading]:
    base, params = base_bytes(shape), lora_params(shape, rank, targets)
    out = []
    for name, base_unit, adapter_unit, adapter_dtype, why in READINGS:
        num, den = in_unit(base, base_unit), in_unit(params * adapter_dtype, adapter_unit)
        out.append(RatioReading(name, num / den,
                                f"{num:.4g} {base_unit} / {den:.4g} {adapter_unit}", why))
    return out


def audit_ratio_claim(claimed: float, shape: ModelShape = LLAMA2_7B, rank: int = 16,
                      targets: Iterable[str] | str = DEFAULT_TARGETS,
                      rtol: float = AUDIT_RTOL) -> RatioAudit:
    if isinstance(claimed, bool) or not isinstance(claimed, numbers.Real):
        raise TypeError(f"claimed: expected a number, got {claimed!r}")
    if not (claimed > 0 and math.isfinite(claimed)):  # NaN and inf too
        raise ValueError(f"claimed: expected a positive finite ratio, got {claimed!r}")
    readings = ratio_readings(shape, rank, targets)
    truth = readings[0]
    close = sorted((abs(r.ratio - claimed) / claimed, i) for i, r in enumerate(readings))
    within = [readings[i] for err, i in close if err <= rtol]
    consistent = f"the base is {truth.ratio:.1f}x the adapter ({truth.division})"
    if not within:
        return RatioAudit(claimed, truth.ratio, None,
                          f"No reading gives {claimed:g}x; consistently, {consistent}.")
    best = within[0]
    sentence = f"{claimed:g}x is {best.division} = {best.ratio:.1f}x ({best.why})."
    if best.name != "consistent":
        sentence += f" Consistently, {consistent}."
    return RatioAudit(claimed, truth.ratio, best, sentence)


# === engines ====================================================================================


def engine_buffers(shape: ModelShape, max_loras: int, max_lora_rank: int,
                   targets: Iterable[str] | str) -> Iterator[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of vLLM's per-layer ``lora_a_stacked`` / ``lora_b_stacked`` slices."""
    _check_count("max_loras", max_loras)
    _check_count("max_lora_rank", max_lora_rank)
    chosen = normalize_targets(targets)
    for i in range(shape.layers):
        for t in chosen:
            d_in, d_out = module_dims(shape, t)
            yield f"layers.{i}.{t}.lora_a_stacked", (max_loras, 1, max_lora_rank, d_in)
            yield f"layers.{i}.{t}.lora_b_stacked", (max_loras, 1, d_out, max_lora_rank)


def slot_reservation_bytes(shape: ModelShape, max_loras: int, max_lora_rank: int,
                           targets: Iterable[str] | str = ENGINE_TARGETS,
                           dtype_bytes: int = 2) -> int:
    dtype_bytes = _check_count("dtype_bytes", dtype_bytes)
    return dtype_bytes * numel(engine_buffers(shape, max_loras, max_lora_rank, targets))


def rank_blast_radius(shape: ModelShape, engines: int, max_loras: int, old_rank: int,
                      new_rank: int, targets: Iterable[str] | str = ENGINE_TARGETS,
                      dtype_bytes: int = 2) -> int:
    _check_count("engines", engines, minimum=0)
    before, after = (engines * slot_reservation_bytes(shape, max_loras, r, targets, dtype_bytes)
                     for r in (old_rank, new_rank))
    return after - before


def engines_needed(tenants: int, max_loras: int) -> int:
    _check_count("tenants", tenants, minimum=0)
    full, partial = divmod(tenants, _check_count("max_loras", max_loras))
    return full + (partial > 0)


def gpus_saved(tenants: int, max_loras: int) -> int:
    return tenants - engines_needed(tenants, max_loras)
