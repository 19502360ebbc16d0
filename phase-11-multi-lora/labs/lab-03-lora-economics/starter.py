"""Lab 03: the multi-tenant arithmetic of LoRA serving, as tested functions.

Every figure a multi-LoRA pitch quotes (base size, adapter size, the "400x smaller" ratio, slot
memory, GPUs saved) follows from a handful of integers in a model's ``config.json``. This module
derives them, in bytes, and keeps decimal (GB = 1e9) and binary (GiB = 2**30) units apart.

Conventions:
- every function leaves its inputs unchanged (a list of targets is read, never edited);
- sizes are ``int`` bytes; convert only for display, with ``to_gib`` / ``to_mib`` / ``to_gb``;
- LoRA targets use Llama module names ``q,k,v,o,gate,up,down``; ``normalize_targets`` also
  accepts PEFT names (``q_proj`` ...), vLLM's packed names (``qkv_proj``, ``gate_up_proj``) and
  PEFT's ``"all-linear"``;
- a LoRA on a ``d_in -> d_out`` linear stores ``A: (r, d_in)`` and ``B: (d_out, r)``;
- ranks are any int >= 1: the arithmetic holds for every rank, so do not restrict it to the
  values vLLM accepts for ``max_lora_rank`` (1, 8, 16, 32, ...; see README section 4);
- bad input is refused, naming the argument as the signature spells it: a wrong type raises
  ``TypeError`` (a non-int or bool count, size or rank, a non-number claim, a bare string of
  targets other than ``"all-linear"``), a wrong value ``ValueError`` (unknown, repeated or no
  targets, rank <= 0, negative tenants or engines, max_loras <= 0, a claim <= 0, NaN or inf);
  ``_check_count`` does both for a count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

# === units: one name per unit, so 1e9 and 2**30 never meet by accident =========================

GB = 10**9  # decimal gigabyte: disk labels, cloud price sheets
MB = 10**6
GiB = 2**30  # binary gibibyte: what vLLM and nvidia-smi print as "GiB"
MiB = 2**20


def to_gib(n_bytes: int | float) -> float:
    """Bytes -> GiB (2**30 bytes)."""
    raise NotImplementedError("TODO(lab-03): divide bytes by GiB (2**30)")


def to_mib(n_bytes: int | float) -> float:
    """Bytes -> MiB (2**20 bytes)."""
    raise NotImplementedError("TODO(lab-03): divide bytes by MiB (2**20)")


def to_gb(n_bytes: int | float) -> float:
    """Bytes -> GB (10**9 bytes)."""
    raise NotImplementedError("TODO(lab-03): divide bytes by GB (10**9)")


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
        A ``model_type`` other than llama or mistral raises ``ValueError``; a config without one
        is read as Llama. Pass ``json.loads(path.read_text())`` or ``PretrainedConfig.to_dict()``.
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

# === LoRA targets ===============================================================================

TARGETS = ("q", "k", "v", "o", "gate", "up", "down")  # canonical order: attention, then MLP
ALL_LINEAR = TARGETS
DEFAULT_TARGETS = ("q", "k", "v", "o")  # the phase's reference adapter
TARGET_ALIASES: dict[str, tuple[str, ...]] = {
    **{t: (t,) for t in TARGETS},  # Llama short names
    **{f"{t}_proj": (t,) for t in TARGETS},  # PEFT / Hugging Face module names
    "qkv_proj": ("q", "k", "v"),  # vLLM's packed modules (LoRAConfig.target_modules)
    "gate_up_proj": ("gate", "up"),
}


def normalize_targets(targets: Iterable[str] | str) -> tuple[str, ...]:
    """Canonical short names, in ``TARGETS`` order, for a LoRA target list.

    Accepts ``q,k,v,o,gate,up,down``, their PEFT names ``q_proj ... down_proj``, vLLM's packed
    ``qkv_proj`` / ``gate_up_proj``, or the string ``"all-linear"`` (PEFT's shorthand), so
    ``normalize_targets(adapter_config["target_modules"])`` works on a PEFT adapter. The names
    may come in any iterable, walked once: a list, a tuple, a set (PEFT stores
    ``target_modules`` as one), a generator; every function taking ``targets`` takes the same.
    Unknown, repeated or no names raise ``ValueError``; a bare string other than
    ``"all-linear"`` raises ``TypeError`` (``"q_proj"`` would otherwise read as letters).
    """
    raise NotImplementedError("TODO(lab-03): map names through TARGET_ALIASES; reject unknown, "
                              "repeated or no names; return them in TARGETS order")


def module_dims(shape: ModelShape, target: str) -> tuple[int, int]:
    """``(d_in, d_out)`` of one decoder layer's linear ``target`` (a short name).

    Under grouped-query attention k and v project to ``kv_heads * head_dim``, not ``hidden``.
    """
    raise NotImplementedError("TODO(lab-03): (d_in, d_out) of the target's linear; k and v "
                              "project to kv_heads * head_dim")


# === base and adapter sizes =====================================================================


def base_params(shape: ModelShape) -> int:
    """Parameters of the base model: embeddings, per-layer projections and norms, lm_head.

    Per layer: q,k,v,o and gate,up,down (no biases) plus two RMSNorm weights of ``hidden``;
    then one final norm, and an lm_head of ``vocab x hidden`` unless tied to the embedding.
    """
    raise NotImplementedError("TODO(lab-03): embeddings + layers * (7 projections + 2 norms) + "
                              "final norm + lm_head unless tied")


def base_bytes(shape: ModelShape, dtype_bytes: int = 2) -> int:
    """Bytes of one copy of the base weights (fp16/bf16: ``dtype_bytes=2``)."""
    raise NotImplementedError("TODO(lab-03): base_params times dtype_bytes")


def lora_params(shape: ModelShape, rank: int,
                targets: Iterable[str] | str = DEFAULT_TARGETS) -> int:
    """Parameters of one rank-``rank`` adapter: sum over layers and targets of r*(d_in+d_out).

    ``rank``: any int >= 1 (``TypeError`` for a non-int, ``ValueError`` below 1, naming ``rank``).
    """
    raise NotImplementedError("TODO(lab-03): layers * sum over targets of rank * (d_in + d_out)")


def adapter_bytes(shape: ModelShape, rank: int, targets: Iterable[str] | str = DEFAULT_TARGETS,
                  dtype_bytes: int = 2) -> int:
    """Bytes of one adapter's A and B matrices at ``dtype_bytes`` per parameter."""
    raise NotImplementedError("TODO(lab-03): lora_params times dtype_bytes")


def size_ratio(shape: ModelShape, rank: int, targets: Iterable[str] | str = DEFAULT_TARGETS,
               dtype_bytes: int = 2) -> float:
    """Base bytes / adapter bytes, both in the same unit and dtype (401.6 for 7B, r=16, qkvo).

    Any consistent unit gives the same ratio up to float rounding: the tests compare it with
    ``base_bytes / adapter_bytes`` at a relative tolerance of 1e-12.
    """
    raise NotImplementedError("TODO(lab-03): base bytes / adapter bytes, same unit and dtype")


def adapters_per_gib(adapter_nbytes: int) -> int:
    """Whole adapters of ``adapter_nbytes`` bytes that fit in one GiB (floor)."""
    raise NotImplementedError("TODO(lab-03): whole adapters per GiB: GiB // adapter_nbytes")


# === auditing a pitch's ratio ===================================================================

AUDIT_RTOL = 0.02  # a pitch rounds to two or three significant figures: "~430x"


@dataclass(frozen=True)
class RatioReading:
    """One way to divide base size by adapter size.

    name: a short key; ratio: the quotient; division: the two figures as a pitch would print
    them ("13.48 GB / 0.03125 GiB"); why: what, if anything, is inconsistent about it.
    """

    name: str
    ratio: float
    division: str
    why: str


@dataclass(frozen=True)
class RatioAudit:
    """The verdict on a claimed base/adapter ratio.

    consistent: the ratio in one unit and dtype; reading: the reading that matches the claim
    (``None`` when none is within ``rtol``); sentence: the verdict in one or two sentences.
    """

    claimed: float
    consistent: float
    reading: RatioReading | None
    sentence: str


def ratio_readings(shape: ModelShape = LLAMA2_7B, rank: int = 16,
                   targets: Iterable[str] | str = DEFAULT_TARGETS) -> list[RatioReading]:
    """The consistent ratio first, then the classic inconsistent ones.

    consistent: same unit, same dtype; gb_over_gib: base in GB / adapter in GiB (decimal over
    binary); gib_over_gb: the reverse; fp32_adapter: fp16 base / adapter saved in fp32.
    ``division`` prints each figure to four significant figures: "13.48 GB / 0.03125 GiB".
    """
    raise NotImplementedError("TODO(lab-03): the consistent reading, then gb_over_gib, "
                              "gib_over_gb and fp32_adapter")


def audit_ratio_claim(claimed: float, shape: ModelShape = LLAMA2_7B, rank: int = 16,
                      targets: Iterable[str] | str = DEFAULT_TARGETS,
                      rtol: float = AUDIT_RTOL) -> RatioAudit:
    """Explain a pitch's "base is N times the adapter" by the reading that reproduces it.

    The closest reading from ``ratio_readings`` within relative tolerance ``rtol`` explains the
    claim; ``audit_ratio_claim(430)`` finds 13.48 GB / 0.03125 GiB = 431.3x (a unit mix) and
    states the consistent 401.6x. The sentence quotes the matched reading's ``division`` and,
    unless the claim is the consistent one, the consistent ratio to one decimal. A claim no
    reading explains gets ``reading`` None, and its sentence still states the consistent ratio
    to one decimal (``401.6`` for the defaults).
    ``claimed`` must be a real number, a numpy one included (else ``TypeError``), above 0 and
    finite (else ``ValueError``: 0, negative, NaN or inf), each error naming ``claimed``.
    """
    raise NotImplementedError("TODO(lab-03): the reading closest to the claim within rtol, and "
                              "the verdict sentence")


# === engines and fleets =========================================================================

ENGINE_TARGETS = ALL_LINEAR  # vLLM wraps every LoRA-capable linear unless target_modules narrows


def slot_reservation_bytes(shape: ModelShape, max_loras: int, max_lora_rank: int,
                           targets: Iterable[str] | str = ENGINE_TARGETS,
                           dtype_bytes: int = 2) -> int:
    """Bytes an engine pre-allocates for ``max_loras`` adapter slots of rank ``max_lora_rank``.

    Every slot holds A: (max_lora_rank, d_in) and B: (d_out, max_lora_rank) per layer and
    target, whatever rank the resident adapter has: linear in slots and in rank.
    ``max_loras`` and ``max_lora_rank``: ints >= 1, checked like ``rank``.
    """
    raise NotImplementedError("TODO(lab-03): max_loras slots, each an adapter of rank "
                              "max_lora_rank over targets")


def rank_blast_radius(shape: ModelShape, engines: int, max_loras: int, old_rank: int,
                      new_rank: int, targets: Iterable[str] | str = ENGINE_TARGETS,
                      dtype_bytes: int = 2) -> int:
    """Extra bytes fleet-wide when ``max_lora_rank`` goes from ``old_rank`` to ``new_rank``.

    Every slot of every engine grows, whether or not its adapter needs the rank; negative when
    the rank goes down.
    """
    raise NotImplementedError("TODO(lab-03): engines * (reservation at new_rank - reservation at "
                              "old_rank)")


def engines_needed(tenants: int, max_loras: int) -> int:
    """Engines (one GPU each) that keep every tenant's adapter hot: ceil(tenants / max_loras)."""
    raise NotImplementedError("TODO(lab-03): ceil(tenants / max_loras) with integers")


def gpus_saved(tenants: int, max_loras: int) -> int:
    """GPUs saved versus one dedicated GPU per tenant: tenants - engines_needed."""
    raise NotImplementedError("TODO(lab-03): tenants minus engines_needed")


# === exercise: LoRA on a mixture-of-experts model, at a tensor-parallel degree ==================
#
# README section 6. Every rule below is checked against vLLM 0.32's own code:
# vllm/lora/layers/fused_moe.py (FusedMoEWithLoRA._create_lora_a_weights / _b_weights),
# vllm/lora/layers/column_parallel_linear.py and row_parallel_linear.py / base_linear.py.

MOE_MODEL_TYPES = ("qwen3_moe",)  # attention as Llama's, every layer's MLP a set of experts
ATTENTION_TARGETS = ("q", "k", "v", "o")
EXPERT_TARGETS = ("gate", "up", "down")  # one of each per expert in an MoE layer
COLUMN_PARALLEL = ("q", "k", "v", "gate", "up")  # tensor parallelism splits their d_out
ROW_PARALLEL = ("o", "down")  # tensor parallelism splits their d_in
LAYOUTS = ("default", "fully_sharded")  # vLLM's fully_sharded_loras off / on


@dataclass(frozen=True)
class MoEShape(ModelShape):
    """A Llama-style decoder whose every MLP is ``num_experts`` experts plus a router (Qwen3-MoE).

    ``intermediate`` is one expert's MLP width (``moe_intermediate_size``): each layer holds
    ``num_experts`` gate/up/down triples of that width and a router ``hidden -> num_experts``.
    ``experts_per_token`` (top-k) sets the compute per token, not the memory.
    """

    num_experts: int = 1
    experts_per_token: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_count("num_experts", self.num_experts)
        _check_count("experts_per_token", self.experts_per_token)
        if self.experts_per_token > self.num_experts:
            raise ValueError(f"experts_per_token: expected at most num_experts="
                             f"{self.num_experts}, got {self.experts_per_token}")

    @classmethod
    def from_hf_config(cls, cfg: Mapping) -> MoEShape:
        """Read a Hugging Face ``qwen3_moe`` config (the dict in ``config.json``).

        Uses hidden_size, moe_intermediate_size (as ``intermediate``), num_hidden_layers,
        num_attention_heads, vocab_size, num_experts, num_experts_per_tok; num_key_value_heads,
        tie_word_embeddings and head_dim as ``ModelShape.from_hf_config`` does. A
        ``model_type`` other than qwen3_moe, a missing key, or a config whose layers are not all
        MoE (``decoder_sparse_step`` other than 1, or ``mlp_only_layers`` not empty) raises
        ``ValueError``.
        """
        if not isinstance(cfg, Mapping):
            raise TypeError(f"cfg: expected a config.json dict, got {type(cfg).__name__}")
        if cfg.get("model_type") not in MOE_MODEL_TYPES:
            raise ValueError(f"cfg['model_type']: expected one of {MOE_MODEL_TYPES}, "
                             f"got {cfg.get('model_type')!r}")
        required = ("hidden_size", "moe_intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "vocab_size", "num_experts", "num_experts_per_tok")
        missing = [key for key in required if key not in cfg]
        if missing:
            raise ValueError(f"cfg: missing required keys {missing}")
        if cfg.get("decoder_sparse_step", 1) != 1 or cfg.get("mlp_only_layers"):
            raise ValueError("cfg: expected every layer to be MoE (decoder_sparse_step 1, no "
                             f"mlp_only_layers), got decoder_sparse_step="
                             f"{cfg.get('decoder_sparse_step')!r}, mlp_only_layers="
                             f"{cfg.get('mlp_only_layers')!r}")
        # the attention and embeddings read as Llama's; one expert's width is the MLP's
        dense = ModelShape.from_hf_config({**cfg, "model_type": "llama",
                                           "intermediate_size": cfg["moe_intermediate_size"]})
        return cls(**{f.name: getattr(dense, f.name) for f in fields(ModelShape)},
                   num_experts=cfg["num_experts"], experts_per_token=cfg["num_experts_per_tok"])


# Qwen/Qwen3-30B-A3B's config.json (README section 6 says which fields were checked where)
QWEN3_30B_A3B = MoEShape(hidden=2048, intermediate=768, layers=48, heads=32, kv_heads=4,
                         vocab=151936, head_dim=128, num_experts=128, experts_per_token=8)


def _check_moe_shape(shape: object) -> MoEShape:
    """``shape`` itself if it is a ``MoEShape``; otherwise ``TypeError`` naming ``shape``."""
    if not isinstance(shape, MoEShape):
        raise TypeError(f"shape: expected a MoEShape, got {type(shape).__name__}")
    return shape


def moe_base_params(shape: MoEShape) -> int:
    """Parameters of an MoE base model: ``base_params`` with every expert counted.

    Per layer: q,k,v,o, two norms, ``num_experts`` gate/up/down triples of width
    ``intermediate`` and one router (``hidden x num_experts``, no bias); then embeddings, the
    final norm and the lm_head as in ``base_params``. ``shape`` must be a ``MoEShape``
    (``TypeError`` naming ``shape``).
    """
    raise NotImplementedError("TODO(lab-03): base_params plus, per layer, the other experts' "
                              "gate/up/down and the router")


def _split(what: str, size: int, tp: int) -> int:
    """``size / tp`` where vLLM splits a dimension across ranks; tp must divide it."""
    if size % tp:
        raise ValueError(f"tp: expected a divisor of {what}={size}, got {tp}")
    return size // tp


def sharded_slot_bytes(shape: ModelShape, max_loras: int, max_lora_rank: int, tp: int = 1,
                       layout: str = "default", targets: Iterable[str] | str = ENGINE_TARGETS,
                       dtype_bytes: int = 2) -> int:
    """Slot bytes one of ``tp`` tensor-parallel ranks holds: ``slot_reservation_bytes`` per rank.

    A slot holds, per layer and target, ``A: (max_lora_rank, d_in)`` and ``B: (d_out,
    max_lora_rank)``; on a ``MoEShape`` gate, up and down hold one A and one B per expert.
    What each rank keeps of them (README section 6):

    - column-parallel targets (q, k, v, gate, up; tp splits d_out): B by d_out on every layout;
      A whole under ``"default"``, split by rank under ``"fully_sharded"``;
    - row-parallel targets (o, down; tp splits d_in): A by d_in on every layout; B whole under
      ``"default"``, split by d_out under ``"fully_sharded"``.

    At ``tp=1`` this is ``slot_reservation_bytes`` (for a ``MoEShape``, with every expert).
    ``tp``: an int >= 1 that divides every dimension it splits (else ``ValueError`` naming
    ``tp``); ``layout``: ``"default"`` or ``"fully_sharded"`` (else ``ValueError`` naming
    ``layout``); the other arguments as in ``slot_reservation_bytes``.
    """
    raise NotImplementedError("TODO(lab-03): per layer and target, the rank's share of A and B "
                              "under the layout, times experts, slots and dtype_bytes")


def model_loading_bytes(shape: MoEShape, max_loras: int, max_lora_rank: int, tp: int = 1,
                        attention_layout: str = "default", expert_layout: str | None = None,
                        dtype_bytes: int = 2) -> int:
    """What one rank's "Model loading took" counts, by this lab's rules (README section 6).

    The rank's share of the base weights, ``moe_base_params * dtype_bytes // tp`` (as if tp
    split every weight evenly), plus its slots: q,k,v,o under ``attention_layout`` and the
    experts' gate, up and down under ``expert_layout``, each from ``sharded_slot_bytes``.
    ``expert_layout=None`` means the same as ``attention_layout`` (vLLM 0.32 has one flag,
    ``fully_sharded_loras``, for both). ``shape`` must be a ``MoEShape`` (``TypeError`` naming
    ``shape``); a layout other than the two raises ``ValueError`` naming ``attention_layout`` or
    ``expert_layout``; the rest is checked as in ``sharded_slot_bytes``.
    """
    raise NotImplementedError("TODO(lab-03): base bytes over tp, plus the attention slots and the "
                              "expert slots, each under its layout")


# === exercise: fleet sizing, where slots compete with the KV cache ==============================
#
# README section 7. Slots come from this lab, the hit rate from lab 04's simulate (through
# labkit.load_lab, so it follows LAB_IMPL), the bytes of one token's K and V from lab 02's
# kv_bytes_per_token (the caller passes the number).

VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank vLLM 0.32 takes


@dataclass(frozen=True)
class FleetChoice:
    """A fleet of identical engines, one GPU each, and why it meets the targets.

    ``engines``: how many; ``max_loras`` / ``max_lora_rank``: every engine's knobs;
    ``kv_tokens``: the KV-cache tokens each engine holds beside its weights and slots
    (``engine_kv_tokens``); ``hit_rate``: the fleet's slot hit rate on the trace
    (``fleet_hit_rate``).
    """

    engines: int
    max_loras: int
    max_lora_rank: int
    kv_tokens: int
    hit_rate: float


def engine_kv_tokens(shape: ModelShape, max_loras: int, max_lora_rank: int,
                     memory_budget_bytes: int, kv_bytes_per_token: int,
                     targets: Iterable[str] | str = ENGINE_TARGETS, dtype_bytes: int = 2) -> int:
    """KV-cache tokens one engine holds: what the budget leaves after weights and slots.

    ``(memory_budget_bytes - base_bytes - slot_reservation_bytes) // kv_bytes_per_token``, with
    the slots of ``max_loras`` at ``max_lora_rank`` over ``targets``; negative when the weights
    and slots alone exceed the budget. ``memory_budget_bytes``: an int >= 0 (the GPU memory the
    engine may use); ``kv_bytes_per_token``: an int >= 1 (lab 02's ``kv_bytes_per_token``).
    """
    raise NotImplementedError("TODO(lab-03): the budget minus base weights and slot reservation, "
                              "in whole tokens of KV cache")


def fleet_hit_rate(trace: Iterable[int | None], engines: int, max_loras: int) -> float:
    """The fleet's slot hit rate: tenant ``t`` is served by engine ``t % engines``.

    Each engine runs an LRU of ``max_loras`` slots over its share of ``trace`` (lab 04's
    ``simulate``, reached with ``labkit.load_lab("lab-04")``); the fleet's rate is the engines'
    hits over their lookups, 0.0 without lookups. Trace items are tenant ids, ints >= 0, or
    ``None`` for a base-model request (no slot, no lookup); anything else raises ``TypeError``
    or ``ValueError`` naming ``trace``. ``engines`` and ``max_loras``: ints >= 1.
    """
    raise NotImplementedError("TODO(lab-03): split the trace by engine (tenant % engines), "
                              "simulate each engine's LRU with lab 04's simulate, pool hits over "
                              "lookups")


def size_fleet(shape: ModelShape, tenant_ranks: Iterable[int], trace: Iterable[int | None],
               memory_budget_bytes: int, kv_bytes_per_token: int, min_kv_tokens: int,
               target_hit_rate: float, targets: Iterable[str] | str = ENGINE_TARGETS,
               dtype_bytes: int = 2) -> FleetChoice | None:
    """The fleet with the fewest engines that meets every target, or None if none does.

    Tenant ``t`` has an adapter of rank ``tenant_ranks[t]`` and is served by engine
    ``t % engines``; ``trace`` lists its requests (``None``: base model). The search space:
    ``engines`` and ``max_loras`` from 1 to the number of tenants, ``max_lora_rank`` in
    ``VLLM_MAX_LORA_RANKS``. A choice is legal when ``max_lora_rank`` is at least every
    tenant's rank, every engine keeps ``engine_kv_tokens >= min_kv_tokens``, and
    ``fleet_hit_rate >= target_hit_rate``. Among the legal choices with the fewest engines,
    the one whose engines keep the most KV tokens. ``tenant_ranks`` and ``trace`` may be any
    iterables (each is read once). ``tenant_ranks``: ints >= 1, at least one (``TypeError`` /
    ``ValueError`` naming ``tenant_ranks``); a trace item that is not a tenant's index raises
    ``ValueError`` naming ``trace``; ``target_hit_rate``: a number in (0, 1] (``TypeError`` /
    ``ValueError`` naming it); ``min_kv_tokens``: an int >= 0.
    """
    raise NotImplementedError("TODO(lab-03): search the space in an order that meets the fewest "
                              "engines first, then the most KV tokens")
