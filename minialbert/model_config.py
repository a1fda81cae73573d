"""MiniAlbertConfig: the hyperparameters of a recursive MiniALBERT student."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from minialbert.recursions import RELAXATION_TARGETS, sharing_pattern

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
