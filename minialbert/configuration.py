"""MiniAlbertConfig: the hyperparameters of a recursive MiniALBERT student."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# activations the model builds itself (torch.nn); any other transformers ACT2FN name also works
COMMON_ACTIVATIONS = ("gelu", "relu", "silu", "swish", "gelu_pytorch_tanh", "tanh")


@strict
class MiniAlbertConfig(PreTrainedConfig):
    """Configuration of a MiniALBERT model (REFERENCE section 1).

    One transformer layer of width `hidden_size` is applied `num_hidden_layers` times
    ("recursions"). Embeddings have width `embedding_size` (E) and are projected to H when
    E != H. With `use_adapter`, every recursion owns two bottleneck adapters of width
    `hidden_size // reduction_factor`, placed before the attention and the FFN blocks.

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
        for field in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"):
            value = getattr(self, field)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"MiniAlbertConfig.{field} must be in [0, 1), got {value!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"MiniAlbertConfig.layer_norm_eps must be positive, got {self.layer_norm_eps!r}")
