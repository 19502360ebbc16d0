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
from dataclasses import dataclass, fields
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


# === mixture of experts, one tensor-parallel rank ===============================================
# The same inventory idea: list the Hugging Face Qwen3-MoE checkpoint's tensors for the base, and
# the stacked LoRA tensors vLLM allocates on one rank (the shapes its create_lora_weights pass to
# torch.zeros) for the slots, then sum numel.

MOE_MODEL_TYPES = ("qwen3_moe",)
ATTENTION_TARGETS = ("q", "k", "v", "o")
EXPERT_TARGETS = ("gate", "up", "down")
COLUMN_PARALLEL = ("q", "k", "v", "gate", "up")
ROW_PARALLEL = ("o", "down")
LAYOUTS = ("default", "fully_sharded")


@dataclass(frozen=True)
class MoEShape(ModelShape):
    num_experts: int = 1
    experts_per_token: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_count("num_experts", self.num_experts)
        _check_count("experts_per_token", self.experts_per_token)
        if self.experts_per_token > self.num_experts:
            raise ValueError(f"experts_per_token: at most num_experts={self.num_experts}, got "
                             f"{self.experts_per_token}")

    @classmethod
    def from_hf_config(cls, cfg: Mapping) -> MoEShape:
        if not isinstance(cfg, Mapping):
            raise TypeError(f"cfg: expected a config.json dict, got {type(cfg).__name__}")
        if cfg.get("model_type") not in MOE_MODEL_TYPES:
            raise ValueError(f"cfg['model_type']: expected one of {MOE_MODEL_TYPES}, "
                             f"got {cfg.get('model_type')!r}")
        missing = [k for k in ("moe_intermediate_size", "num_experts", "num_experts_per_tok")
                   if k not in cfg]
        if missing:
            raise ValueError(f"cfg: missing required keys {missing}")
        if cfg.get("decoder_sparse_step", 1) != 1 or cfg.get("mlp_only_layers"):
            raise ValueError("cfg: every layer must be MoE: decoder_sparse_step 1 and no "
                             "mlp_only_layers")
        dense = ModelShape.from_hf_config({**cfg, "model_type": "llama",
                                           "intermediate_size": cfg["moe_intermediate_size"]})
        return cls(**{f.name: getattr(dense, f.name) for f in fields(ModelShape)},
                   num_experts=cfg["num_experts"], experts_per_token=cfg["num_experts_per_tok"])


QWEN3_30B_A3B = MoEShape(hidden=2048, intermediate=768, layers=48, heads=32, kv_heads=4,
                         vocab=151936, head_dim=128, num_experts=128, experts_per_token=8)


def _moe(shape: object) -> MoEShape:
    if not isinstance(shape, MoEShape):
        raise TypeError(f"shape: a MoEShape is required, got {type(shape).__name__}")
    return shape


def moe_state_dict(shape: MoEShape) -> Iterator[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of every tensor a Qwen3-MoE checkpoint holds (no q/k norms counted)."""
    for name, dims in base_state_dict(shape):
        if ".mlp." not in name:
            yield name, dims
    for i in range(shape.layers):
        yield f"model.layers.{i}.mlp.gate.weight", (shape.num_experts, shape.hidden)
        for j in range(shape.num_experts):
            for t in EXPERT_TARGETS:
                d_in, d_out = module_dims(shape, t)
                yield f"model.layers.{i}.mlp.experts.{j}.{t}_proj.weight", (d_out, d_in)


def moe_base_params(shape: MoEShape) -> int:
    return numel(moe_state_dict(_moe(shape)))


def _share(n: int, tp: int, what: str) -> int:
    if n % tp:
        raise ValueError(f"tp: {tp} does not divide {what} ({n})")
    return n // tp


def rank_buffers(shape: ModelShape, max_loras: int, max_lora_rank: int, tp: int, layout: str,
                 targets: Iterable[str] | str) -> Iterator[tuple[str, tuple[int, ...]]]:
    """vLLM 0.32's stacked LoRA tensors on one rank: ``(max_loras, experts, rows, cols)``."""
    _check_count("max_loras", max_loras)
    r = _check_count("max_lora_rank", max_lora_rank)
    _check_count("tp", tp)
    if layout not in LAYOUTS:
        raise ValueError(f"layout: {layout!r} is not one of {LAYOUTS}")
    full = layout == "fully_sharded"
    chosen = normalize_targets(targets)
    experts = shape.num_experts if isinstance(shape, MoEShape) else 1
    for i in range(shape.layers):
        for t in chosen:
            d_in, d_out = module_dims(shape, t)
            e = experts if t in EXPERT_TARGETS else 1
            if t in COLUMN_PARALLEL:  # MergedQKV / w13: A by rank when fully sharded, B by d_out
                a = (max_loras, e, _share(r, tp, "max_lora_rank") if full else r, d_in)
                b = (max_loras, e, _share(d_out, tp, f"{t} d_out"), r)
            else:  # RowParallel / w2: A by d_in, B by d_out when fully sharded
                a = (max_loras, e, r, _share(d_in, tp, f"{t} d_in"))
                b = (max_loras, e, _share(d_out, tp, f"{t} d_out") if full else d_out, r)
            yield f"layers.{i}.{t}.lora_a_stacked", a
            yield f"layers.{i}.{t}.lora_b_stacked", b


def sharded_slot_bytes(shape: ModelShape, max_loras: int, max_lora_rank: int, tp: int = 1,
                       layout: str = "default", targets: Iterable[str] | str = ENGINE_TARGETS,
                       dtype_bytes: int = 2) -> int:
    dtype_bytes = _check_count("dtype_bytes", dtype_bytes)
    return dtype_bytes * numel(rank_buffers(shape, max_loras, max_lora_rank, tp, layout, targets))


def model_loading_bytes(shape: MoEShape, max_loras: int, max_lora_rank: int, tp: int = 1,
                        attention_layout: str = "default", expert_layout: str | None = None,
                        dtype_bytes: int = 2) -> int:
    _moe(shape)
    layouts = {"attention_layout": attention_layout,
               "expert_layout": attention_layout if expert_layout is None else expert_layout}
    for name, layout in layouts.items():
        if layout not in LAYOUTS:
            raise ValueError(f"{name}: {layout!r} is not one of {LAYOUTS}")
    tp = _check_count("tp", tp)
    weights = Fraction(_check_count("dtype_bytes", dtype_bytes) * moe_base_params(shape), tp)
    slots = sum(sharded_slot_bytes(shape, max_loras, max_lora_rank, tp, layouts[key], targets,
                                   dtype_bytes)
                for key, targets in (("attention_layout", ATTENTION_TARGETS),
                                     ("expert_layout", EXPERT_TARGETS)))
    return math.floor(weights) + slots


# === fleet sizing ==============================================================================
# Hits counted from lab 04's per-request labels (replay) instead of its stats, and the fewest
# slots found by bisection (LRU's hit rate never falls as slots grow) instead of a scan.

VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class FleetChoice:
    engines: int
    max_loras: int
    max_lora_rank: int
    kv_tokens: int
    hit_rate: float


def engine_kv_tokens(shape: ModelShape, max_loras: int, max_lora_rank: int,
                     memory_budget_bytes: int, kv_bytes_per_token: int,
                     targets: Iterable[str] | str = ENGINE_TARGETS, dtype_bytes: int = 2) -> int:
    free = (_check_count("memory_budget_bytes", memory_budget_bytes, minimum=0)
            - base_bytes(shape, dtype_bytes)
            - slot_reservation_bytes(shape, max_loras, max_lora_rank, targets, dtype_bytes))
    return math.floor(Fraction(free, _check_count("kv_bytes_per_token", kv_bytes_per_token)))


def fleet_hit_rate(trace: Iterable[int | None], engines: int, max_loras: int) -> float:
    from labkit import load_lab

    engines, max_loras = _check_count("engines", engines), _check_count("max_loras", max_loras)
    tenants = list(trace)
    for i, t in enumerate(tenants):
        if t is not None and (isinstance(t, bool) or not isinstance(t, int)):
            raise TypeError(f"trace: item {i} is {t!r}, not a tenant id")
        if t is not None and t < 0:
            raise ValueError(f"trace: item {i} is {t}, a negative tenant id")
    replay = load_lab("lab-04").replay
    hits = lookups = 0
    for e in range(engines):
        share = [t for t in tenants if t is not None and t % engines == e]
        hits += sum(replay(share, max_loras))
        lookups += len(share)
    return hits / lookups if lookups else 0.0


def size_fleet(shape: ModelShape, tenant_ranks: Iterable[int], trace: Iterable[int | None],
               memory_budget_bytes: int, kv_bytes_per_token: int, min_kv_tokens: int,
               target_hit_rate: float, targets: Iterable[str] | str = ENGINE_TARGETS,
               dtype_bytes: int = 2) -> FleetChoice | None:
    ranks = tuple(_check_count("tenant_ranks", r) for r in tenant_ranks)
    if not ranks:
        raise ValueError("tenant_ranks: no tenants")
    _check_count("min_kv_tokens", min_kv_tokens, minimum=0)
    if isinstance(target_hit_rate, bool) or not isinstance(target_hit_rate, int | float):
        raise TypeError(f"target_hit_rate: {target_hit_rate!r} is not a number")
    if not 0 < target_hit_rate <= 1:
        raise ValueError(f"target_hit_rate: {target_hit_rate!r} is outside (0, 1]")
    trace = list(trace)
    if any(t is not None and t not in range(len(ranks)) for t in trace):
        raise ValueError(f"trace: every item must be a tenant index below {len(ranks)} or None")
    fits = [r for r in VLLM_MAX_LORA_RANKS if r >= max(ranks)]
    if not fits:
        return None
    rank = fits[0]
    kv = {n: engine_kv_tokens(shape, n, rank, memory_budget_bytes, kv_bytes_per_token, targets,
                              dtype_bytes) for n in range(1, len(ranks) + 1)}
    affordable = [n for n, tokens in kv.items() if tokens >= min_kv_tokens]
    if not affordable:
        return None
    most = max(affordable)  # kv falls as slots grow, so the affordable counts are 1..most
    for engines in range(1, len(ranks) + 1):
        if fleet_hit_rate(trace, engines, most) < target_hit_rate:
            continue
        lo, hi = 1, most
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fleet_hit_rate(trace, engines, mid) >= target_hit_rate \
                else (mid + 1, hi)
        return FleetChoice(engines, lo, rank, kv[lo], fleet_hit_rate(trace, engines, lo))
    return None
