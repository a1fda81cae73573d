"""MiniALBERT: one shared transformer layer applied N times, with per-recursion bottleneck
adapters and factorised embeddings (REFERENCE section 1), as Hugging Face models: its config
(`MiniAlbertConfig`) and its modules, in one file.

Shapes in comments: B batch, T sequence length, E embedding size, H hidden size,
nh heads, hs head size (H / nh), V vocabulary, L labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

from .blocks import BottleneckAdapter, RecursionRelaxation, RelaxedLinear
from .dropout import Dropout, counter_dropout, uses_counter_dropout
from .recursions import RELAXATION_TARGETS, sharing_pattern

# activations the model builds itself (torch.nn); any other transformers ACT2FN name also works
COMMON_ACTIVATIONS = ("gelu", "relu", "silu", "swish", "gelu_pytorch_tanh", "tanh")


@strict
class MiniAlbertConfig(PreTrainedConfig):
    """Configuration of a MiniALBERT model (REFERENCE section 1).

    One transformer layer of width `hidden_size` is applied `num_hidden_layers` times
    ("recursions"). Embeddings have width `embedding_size` (E) and are projected to H when
    E != H. With `use_adapter`, every recursion owns two bottleneck adapters of width
    `hidden_size // reduction_factor`, placed before the attention and the FFN blocks.

    Beyond the paper (all off by default, which is the paper's student):
    - `unique_layers` M distinct layers shared over the N recursions by the `sharing` pattern
      (`sharing_pattern`); M = 1 is MiniALBERT.
    - Relaxed recursion (Bae et al. 2025): every recursion i may own a LoRA delta of rank
      `lora_rank` on the `lora_targets` linears (W_shared + lora_alpha / lora_rank * B_i A_i),
      its own LayerNorms (`relax_norms`) and its own biases of the target linears
      (`relax_biases`); the shared layers then hold no norms / no such biases.

    Example (the paper's general-domain student):
        MiniAlbertConfig(embedding_size=128, num_hidden_layers=6, use_adapter=True)
    """

    model_type = "minialbert"

    vocab_size: int = 30522
    embedding_size: int = 128
    hidden_size: int = 768
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    classifier_dropout_prob: float | int | None = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    use_adapter: bool = True
    reduction_factor: int = 16
    unique_layers: int = 1
    sharing: str = "cycle"
    lora_rank: int = 0
    lora_alpha: float | int | None = None
    lora_targets: list[str] | None = None
    relax_norms: bool = False
    relax_biases: bool = False
    # Adaptive depth (minialbert.exits; fine-tuned task heads only): the task head is applied
    # after every recursion from `exit_min_recursion` (1-based) on, one head for all recursions
    # ("shared") or one per recursion ("per_recursion"); None: the head reads the last recursion
    # only. `exit_thresholds`: {epsilon: confidence threshold} calibrated by the fine-tuning run.
    exit_heads: str | None = None
    exit_min_recursion: int = 1
    exit_thresholds: dict | None = None
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    # The MLM output layer is never tied to the (E-wide) input embeddings, as in the authors' model.
    tie_word_embeddings: bool = False

    @property
    def num_recursions(self) -> int:
        """The number of times the shared layer is applied (stored as `num_hidden_layers`,
        the name the rest of transformers reads)."""
        return self.num_hidden_layers

    @property
    def adapter_size(self) -> int:
        return self.hidden_size // self.reduction_factor

    @property
    def recursion_layers(self) -> list[int]:
        """The unique layer each recursion applies (`sharing_pattern`)."""
        return sharing_pattern(self.num_hidden_layers, self.unique_layers, self.sharing)

    @property
    def relaxation_targets(self) -> tuple[str, ...]:
        """The linears that own per-recursion LoRA deltas and biases (default: all six)."""
        return tuple(RELAXATION_TARGETS if self.lora_targets is None else self.lora_targets)

    @property
    def lora_scale(self) -> float:
        """alpha / rank (alpha defaults to the rank: scale 1)."""
        if not self.lora_rank:
            return 0.0
        return (self.lora_rank if self.lora_alpha is None else self.lora_alpha) / self.lora_rank

    @property
    def is_relaxed(self) -> bool:
        """Whether recursions own anything besides adapters (then `relaxations` holds it)."""
        return bool(self.lora_rank) or self.relax_norms or self.relax_biases

    def __post_init__(self, **kwargs):
        # Checked here rather than in a @strict validator so that callers get a plain
        # ValueError (strict wraps validator errors in its own exception type).
        self._check_fields()
        super().__post_init__(**kwargs)

    def _check_fields(self):
        """Refuse impossible shapes with a ValueError naming the field."""
        for field in (
            "vocab_size",
            "embedding_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "reduction_factor",
            "unique_layers",
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"MiniAlbertConfig.{field} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"MiniAlbertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.use_adapter and self.hidden_size % self.reduction_factor:
            raise ValueError(
                f"MiniAlbertConfig.reduction_factor ({self.reduction_factor}) must divide "
                f"hidden_size ({self.hidden_size})"
            )
        if self.hidden_act not in COMMON_ACTIVATIONS:
            from transformers.activations import ACT2FN  # seconds to import: only for unusual names

            if self.hidden_act not in ACT2FN:
                raise ValueError(
                    f"MiniAlbertConfig.hidden_act {self.hidden_act!r} is not a known activation; "
                    f"expected one of {sorted(ACT2FN)}"
                )
        try:
            sharing_pattern(self.num_hidden_layers, self.unique_layers, self.sharing)
        except ValueError as e:
            raise ValueError(f"MiniAlbertConfig: {e}") from None
        self._check_relaxation()
        if self.exit_heads not in (None, "shared", "per_recursion"):
            raise ValueError(f"MiniAlbertConfig.exit_heads must be null, 'shared' or 'per_recursion', "
                             f"got {self.exit_heads!r}")
        m = self.exit_min_recursion
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= self.num_hidden_layers:
            raise ValueError(f"MiniAlbertConfig.exit_min_recursion must be an integer in [1, num_hidden_layers = "
                             f"{self.num_hidden_layers}], got {m!r}")
        for field in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"):
            value = getattr(self, field)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"MiniAlbertConfig.{field} must be in [0, 1), got {value!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"MiniAlbertConfig.layer_norm_eps must be positive, got {self.layer_norm_eps!r}")

    def _check_relaxation(self):
        rank = self.lora_rank
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank <= self.hidden_size:
            raise ValueError(f"MiniAlbertConfig.lora_rank must be an integer in [0, hidden_size = "
                             f"{self.hidden_size}], got {rank!r}")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ValueError(f"MiniAlbertConfig.lora_alpha must be positive (or null: the rank), got {self.lora_alpha!r}")
        targets = self.relaxation_targets
        unknown = [t for t in targets if t not in RELAXATION_TARGETS]
        if unknown or not targets or len(set(targets)) != len(targets):
            raise ValueError(f"MiniAlbertConfig.lora_targets must be distinct names from "
                             f"{', '.join(RELAXATION_TARGETS)}, got {self.lora_targets!r}")


# A relaxed recursion's parameters for one block: {name in the block: (weight, bias)}.
Overrides = dict[str, tuple[torch.Tensor, torch.Tensor | None]]


def _linear(block: nn.Module, name: str, x: torch.Tensor, params: Overrides | None) -> torch.Tensor:
    """block.<name>(x), with the recursion's own weight/bias when it has them."""
    if params is not None and name in params:
        return F.linear(x, *params[name])
    return getattr(block, name)(x)


def _norm(block: nn.Module, name: str, x: torch.Tensor, params: Overrides | None, eps: float) -> torch.Tensor:
    """block.<name>(x) (a LayerNorm), with the recursion's own LayerNorm when it has one."""
    if params is not None and name in params:
        return F.layer_norm(x, x.shape[-1:], *params[name], eps=eps)
    return getattr(block, name)(x)


@dataclass
class MiniAlbertModelOutput(BaseModelOutput):
    """BaseModelOutput plus `qkv`: one recursion's projected (queries, keys, values), each
    (B, T, H), when asked for with `output_qkv`."""

    qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


class MiniAlbertEmbeddings(nn.Module):
    """ALBERT-style embeddings of width E: word + position + token type, LayerNorm, dropout."""

    def __init__(self, config: MiniAlbertConfig):
        super().__init__()
        E = config.embedding_size
        self.word_embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, E)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, E)
        self.LayerNorm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None):
        B, T = input_ids.shape
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"sequence length {T} exceeds max_position_embeddings ({self.position_embeddings.num_embeddings})"
            )
        position_ids = torch.arange(T, device=input_ids.device)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)[None]
            + self.token_type_embeddings(token_type_ids)
        )  # (B, T, E)
        return self.dropout(self.LayerNorm(x))


def _shared_parts(config: MiniAlbertConfig, names: tuple[str, ...]) -> dict[str, bool]:
    """{linear name: has a bias} for a shared layer's linears; relaxed biases live per recursion."""
    relaxed = set(config.relaxation_targets) if config.relax_biases else set()
    return {name: name not in relaxed for name in names}


class MiniAlbertAttention(nn.Module):
    """Post-LN multi-head self-attention block: LayerNorm(x + Dropout(Dense(MHSA(x)))).
    `params` (a relaxed recursion's overrides) replaces any of its weights, biases and norm."""

    def __init__(self, config: MiniAlbertConfig):
        super().__init__()
        H = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_size = H // self.num_heads
        for name, bias in _shared_parts(config, ("query", "key", "value", "dense")).items():
            setattr(self, name, nn.Linear(H, H, bias=bias))
        self.eps = config.layer_norm_eps
        self.LayerNorm = None if config.relax_norms else nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.output_dropout = Dropout(config.hidden_dropout_prob)

    def _heads(self, x):  # (B, T, H) -> (B, nh, T, hs)
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_size).transpose(1, 2)

    def _probs(self, q, k, additive_mask):  # (B, nh, T, T) attention probabilities
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_size) + additive_mask, dim=-1)

    def forward(self, x, additive_mask, output_attentions: bool = False, params: Overrides | None = None,
                output_qkv: bool = False, recompute_attentions: bool = False):
        """-> (output, attention probabilities or None, the projected (q, k, v) (B, T, H) or None).
        `recompute_attentions`: the probabilities asked for are recomputed from q and k beside
        the fused context (what the teacher side does) instead of running the reference path."""
        qkv = tuple(_linear(self, name, x, params) for name in ("query", "key", "value"))
        q, k, v = (self._heads(t) for t in qkv)
        p_drop = self.attention_dropout if self.training else 0.0
        if p_drop > 0 and uses_counter_dropout(x):
            # A compiled CPU step: the probabilities dropped by a counter-based mask
            # (minialbert.dropout), which inductor fuses with the softmax.
            probs = self._probs(q, k, additive_mask)
            context = counter_dropout(probs, p_drop) @ v
            probs = probs if output_attentions else None
        elif output_attentions and not recompute_attentions:
            # Reference path: the probabilities are materialised because the caller wants them.
            probs = self._probs(q, k, additive_mask)
            context = F.dropout(probs, p_drop, self.training) @ v  # (B, nh, T, hs)
        else:
            # Fast path: fused kernel, same computation (tested against the reference path).
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask, dropout_p=p_drop)
            probs = None
            if output_attentions:
                # Only the loss reads these: the context above never materialises them, and on a
                # GPU the fused kernel's memory-bound chain stays fused. Dropout draws differ from
                # the reference path's (another kernel), the probabilities are the same.
                probs = self._probs(q, k, additive_mask)
        B, _, T, _ = context.shape
        context = context.transpose(1, 2).reshape(B, T, -1)  # (B, T, H)
        out = _norm(self, "LayerNorm", x + self.output_dropout(_linear(self, "dense", context, params)), params,
                    self.eps)
        return out, probs, (qkv if output_qkv else None)


def activation(name: str) -> nn.Module:
    """The FFN activation: torch modules for the common names (exactly transformers' functions),
    transformers' ACT2FN for the rest (importing it costs seconds, once per process)."""
    common = {"gelu": lambda: nn.GELU(), "relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU, "tanh": nn.Tanh,
              "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh")}
    if name in common:
        return common[name]()
    from transformers.activations import ACT2FN

    return ACT2FN[name]


class MiniAlbertFeedForward(nn.Module):
    """Post-LN feed-forward block: LayerNorm(x + Dropout(W2 act(W1 x)))."""

    def __init__(self, config: MiniAlbertConfig):
        super().__init__()
        bias = _shared_parts(config, ("ffn", "ffn_output"))
        self.ffn = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias["ffn"])
        self.ffn_output = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias["ffn_output"])
        self.activation = activation(config.hidden_act)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.eps = config.layer_norm_eps
        self.full_layer_layer_norm = (
            None if config.relax_norms else nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        )

    def forward(self, x, params: Overrides | None = None):
        h = _linear(self, "ffn_output", self.activation(_linear(self, "ffn", x, params)), params)
        return _norm(self, "full_layer_layer_norm", x + self.dropout(h), params, self.eps)


class MiniAlbertLayer(nn.Module):
    """A transformer layer shared by recursions (MiniALBERT: one, applied by all of them)."""

    def __init__(self, config: MiniAlbertConfig):
        super().__init__()
        self.attention = MiniAlbertAttention(config)
        self.feed_forward = MiniAlbertFeedForward(config)


class MiniAlbertPreTrainedModel(PreTrainedModel):
    config_class = MiniAlbertConfig
    config: MiniAlbertConfig
    base_model_prefix = "minialbert"
    supports_gradient_checkpointing = True  # per recursion: MiniAlbertModel.recursion
    _supports_sdpa = True
    _no_split_modules = ["MiniAlbertLayer"]

    @torch.no_grad()
    def _init_weights(self, module):
        """normal(0, initializer_range) for Linear/Embedding, LayerNorm weight 1 / bias 0; a
        relaxation's LoRA delta starts at zero (A normal, B = 0), its biases at 0."""
        super()._init_weights(module)
        if isinstance(module, RelaxedLinear):
            for param, zero in ((module.lora_A, False), (module.lora_B, True), (module.bias, True)):
                if param is not None:
                    init.zeros_(param) if zero else init.normal_(param, mean=0.0, std=self.config.initializer_range)


class MiniAlbertModel(MiniAlbertPreTrainedModel):
    """The recursive encoder: embeddings -> (projector) -> N recursions, recursion i applying
    shared layer `config.recursion_layers[i]` with its own adapters and relaxation.

    Checkpoint layout: one unique layer is `layer` (the paper's student and the authors'
    checkpoints); M > 1 unique layers are `layers.0` ... `layers.{M-1}`. Per-recursion parts:
    `att_adapters.{i}`, `ffn_adapters.{i}`, `relaxations.{i}`.
    """

    def __init__(self, config: MiniAlbertConfig):
        super().__init__(config)
        self.embeddings = MiniAlbertEmbeddings(config)
        self.projector = (
            nn.Linear(config.embedding_size, config.hidden_size)
            if config.embedding_size != config.hidden_size
            else None
        )
        if config.unique_layers == 1:
            self.layer = MiniAlbertLayer(config)
        else:
            self.layers = nn.ModuleList(MiniAlbertLayer(config) for _ in range(config.unique_layers))
        self.relaxations = None
        if config.is_relaxed:
            self.relaxations = nn.ModuleList(RecursionRelaxation(config) for _ in range(config.num_hidden_layers))
        self.att_adapters = self.ffn_adapters = None
        if config.use_adapter:
            self.att_adapters, self.ffn_adapters = self._new_adapters(config)
        # Set by `activation_checkpointing_enable()` (with `_gradient_checkpointing_func`): each
        # recursion's activations are recomputed in the backward pass instead of being stored.
        self.gradient_checkpointing = False
        self.post_init()

    @property
    def shared_layers(self) -> list[MiniAlbertLayer]:
        """The M unique layers, in order."""
        return [self.layer] if self.config.unique_layers == 1 else list(self.layers)

    @staticmethod
    def _new_adapters(config):
        """(att_adapters, ffn_adapters): one B(x) = LayerNorm(x + Up(GELU(Down(x)))) per recursion each."""

        def adapters():
            return nn.ModuleList(
                BottleneckAdapter(config.hidden_size, config.adapter_size, config.layer_norm_eps)
                for _ in range(config.num_hidden_layers)
            )

        return adapters(), adapters()

    def add_adapters(self):
        """Give every recursion a fresh adapter pair, initialised near the identity
        (Up = 0, so B(x) = LayerNorm(x)), for adapter tuning a model distilled without them."""
        if self.att_adapters is not None:
            return
        self.config.use_adapter = True
        att, ffn = self._new_adapters(self.config)
        ref = next(self.parameters())
        for adapter in (*att, *ffn):
            adapter.init_near_identity(self.config.initializer_range)
        self.att_adapters, self.ffn_adapters = att.to(ref.device, ref.dtype), ffn.to(ref.device, ref.dtype)

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def embed(self, input_ids, attention_mask=None, token_type_ids=None):
        """-> (the first recursion's input (B, T, H), the additive attention mask (B, 1, 1, T)):
        padding keys get the most negative finite value, broadcast over heads and queries."""
        h = self.embeddings(input_ids, token_type_ids)  # (B, T, E)
        if self.projector is not None:
            h = self.projector(h)  # (B, T, H)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        additive_mask = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
        return h, additive_mask

    def recursion(self, i: int, h, additive_mask, output_attentions: bool = False, output_qkv: bool = False,
                  recompute_attentions: bool = False):
        """Recursion i on its input h (B, T, H): shared layer `config.recursion_layers[i]` with
        recursion i's adapters and relaxation -> (h, attention probabilities or None, (q, k, v) or None).
        Any recursion's output is a valid input of the next: adaptive depth steps through these.
        With activation checkpointing on (training, grad enabled), the step is one checkpoint."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            # positional arguments: the reentrant variant of torch's checkpoint takes no keywords
            return self._gradient_checkpointing_func(self._recursion, i, h, additive_mask, output_attentions,
                                                     output_qkv, recompute_attentions)
        return self._recursion(i, h, additive_mask, output_attentions, output_qkv, recompute_attentions)

    def _recursion(self, i: int, h, additive_mask, output_attentions: bool, output_qkv: bool,
                   recompute_attentions: bool):
        layer = self.shared_layers[self.config.recursion_layers[i]]
        att_params = ffn_params = None
        if self.relaxations is not None:
            params = self.relaxations[i].overrides(layer)
            att_params = {k.removeprefix("attention."): v for k, v in params.items() if k.startswith("attention.")}
            ffn_params = {k.removeprefix("feed_forward."): v for k, v in params.items()
                          if k.startswith("feed_forward.")}
        if self.att_adapters is not None:
            h = self.att_adapters[i](h)
        h, probs, qkv = layer.attention(h, additive_mask, output_attentions, att_params, output_qkv,
                                        recompute_attentions)
        if self.ffn_adapters is not None:
            h = self.ffn_adapters[i](h)
        return layer.feed_forward(h, ffn_params), probs, qkv

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_qkv: int | None = None,
        recompute_attentions: bool = False,
        **kwargs,
    ):
        """`output_qkv=i` also returns recursion i's projected queries, keys and values
        (B, T, H) as `qkv` (what relation distillation compares); negative i counts from the end.
        `recompute_attentions`: every recursion runs the fused (SDPA) path and the attentions
        asked for are recomputed from its queries and keys (same values; see MiniAlbertAttention)."""
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        h, additive_mask = self.embed(input_ids, attention_mask, token_type_ids)
        hidden_states = [h] if output_hidden_states else None
        attentions = [] if output_attentions else None
        N, qkv = self.config.num_hidden_layers, None
        qkv_at = None if output_qkv is None else range(N)[output_qkv]
        for i in range(N):
            h, probs, captured = self.recursion(i, h, additive_mask, output_attentions, i == qkv_at,
                                                recompute_attentions)
            qkv = captured if i == qkv_at else qkv
            if output_hidden_states:
                hidden_states.append(h)
            if output_attentions:
                attentions.append(probs)

        hidden_states = tuple(hidden_states) if output_hidden_states else None
        attentions = tuple(attentions) if output_attentions else None
        if not return_dict:
            return tuple(v for v in (h, hidden_states, attentions, qkv) if v is not None)
        return MiniAlbertModelOutput(last_hidden_state=h, hidden_states=hidden_states, attentions=attentions, qkv=qkv)


class MiniAlbertWithHead(MiniAlbertPreTrainedModel):
    """The encoder plus a task head: subclasses define `head` (last hidden state -> logits),
    `compute_loss` and `output_class`; the forward pass around them is shared."""

    output_class = None

    def head(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.minialbert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.head(out.last_hidden_state)
        loss = None if labels is None else self.compute_loss(logits, labels)
        if not return_dict:
            rest = tuple(v for v in (out.hidden_states, out.attentions) if v is not None)
            return ((loss,) if loss is not None else ()) + (logits,) + rest
        return self.output_class(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)


class MiniAlbertForMaskedLM(MiniAlbertWithHead):
    """MiniALBERT with the DistilBERT-style MLM head: Linear(H,H) -> GELU -> LayerNorm -> Linear(H,V)."""

    output_class = MaskedLMOutput

    def __init__(self, config: MiniAlbertConfig):
        super().__init__(config)
        self.minialbert = MiniAlbertModel(config)
        self.vocab_transform = nn.Linear(config.hidden_size, config.hidden_size)
        # Exact GELU whatever `hidden_act` says: the authors' head (and their checkpoints) use it.
        self.activation = nn.GELU()
        self.vocab_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.vocab_projector = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self):
        return self.vocab_projector

    def set_output_embeddings(self, value):
        self.vocab_projector = value

    def head(self, last_hidden_state):
        x = self.vocab_layer_norm(self.activation(self.vocab_transform(last_hidden_state)))
        return self.vocab_projector(x)  # (B, T, V)

    def compute_loss(self, logits, labels):
        return F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100)


class MiniAlbertWithClassifier(MiniAlbertWithHead):
    """The encoder, dropout and a Linear(H, num_labels) classifier."""

    def __init__(self, config: MiniAlbertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.minialbert = MiniAlbertModel(config)
        p = config.classifier_dropout_prob
        self.dropout = Dropout(config.hidden_dropout_prob if p is None else p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        # per-recursion exit heads: recursion i (0-based) < N - 1 reads exit_classifiers[str(i)];
        # the last recursion reads `classifier`, so a model without exits has the same layout
        self.exit_classifiers = None
        if config.exit_heads == "per_recursion":
            self.exit_classifiers = nn.ModuleDict(
                {str(i): nn.Linear(config.hidden_size, config.num_labels)
                 for i in range(config.exit_min_recursion - 1, config.num_hidden_layers - 1)})
        self.post_init()

    def classifier_at(self, recursion: int | None) -> nn.Linear:
        """The linear head that reads recursion `recursion` (0-based; None: the last)."""
        if recursion is None or self.exit_classifiers is None or recursion == self.config.num_hidden_layers - 1:
            return self.classifier
        return self.exit_classifiers[str(recursion)]


class MiniAlbertForSequenceClassification(MiniAlbertWithClassifier):
    """[CLS] hidden state of the last recursion -> dropout -> Linear(H, L). No pooler.
    The loss follows `config.problem_type` (regression, single- or multi-label), as in BERT."""

    output_class = SequenceClassifierOutput

    def head(self, last_hidden_state, recursion: int | None = None):
        """Logits (B, L) from a recursion's output (default: the last recursion's head)."""
        return self.classifier_at(recursion)(self.dropout(last_hidden_state[:, 0]))

    def compute_loss(self, logits, labels):
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return MSELoss()(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
        if self.config.problem_type == "single_label_classification":
            return CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        return BCEWithLogitsLoss()(logits, labels.to(logits.dtype))


class MiniAlbertForTokenClassification(MiniAlbertWithClassifier):
    """Every token's last hidden state -> dropout -> Linear(H, L); labels -100 are ignored."""

    output_class = TokenClassifierOutput

    def head(self, last_hidden_state, recursion: int | None = None):
        """Logits (B, T, L) from a recursion's output (default: the last recursion's head)."""
        return self.classifier_at(recursion)(self.dropout(last_hidden_state))

    def compute_loss(self, logits, labels):
        return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1), ignore_index=-100)


# The transformers Auto class of each model class: after `import minialbert`, e.g.
# AutoModelForTokenClassification.from_pretrained(dir) loads a minialbert dir (a new head is
# one class above and one line here).
AUTO_CLASSES = {
    "AutoModel": MiniAlbertModel,
    "AutoModelForMaskedLM": MiniAlbertForMaskedLM,
    "AutoModelForSequenceClassification": MiniAlbertForSequenceClassification,
    "AutoModelForTokenClassification": MiniAlbertForTokenClassification,
}
