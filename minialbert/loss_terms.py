"""The distillation loss terms, each declared once: its name, its paper default weight, what it
reads from the teacher and the student, and the function that computes it.

    total = sum over terms of weight[term] * term(outputs)
    (paper: mlm 1, attention 3, hidden 3, output 5; embedding and relation 0)

Everything else is derived from this table: the `loss.weights` keys of the distill config and
their defaults (`minialbert.command_configs.LossWeights`), which outputs the objective asks the teacher
and the student for (`minialbert.objective`), whether the teacher runs at all (not when no
weighted term reads it: the MLM-only baseline and teacher pretraining), and the panels of the
loss-curve figure.

Adding a term is its function and one `register_loss_term(LossTerm(...))` call (here, or from
your own code before the config is read): the function receives a `minialbert.objective.LossInputs`
and returns a scalar tensor. A term with its own settings (like `relation`) also gets a section in
`minialbert.command_configs.LossConfig` and a `resolve` function that checks them against the models.

This module imports no torch at import time (the config is validated when the workflow's DAG
is built): the numerics below import it when they first run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from minialbert.recursions import check_layer_map, hidden_size, num_layers_and_heads
from minialbert.utils import ConfigError

if TYPE_CHECKING:
    import torch

# what a term may read (LossInputs fields): from the teacher and from the student, beyond the
# student's MLM logits at the masked positions, which every term may read
TEACHER_OUTPUTS = ("logits", "hidden_states", "attentions", "qkv")
STUDENT_OUTPUTS = ("hidden_states", "attentions", "qkv")


@dataclass(frozen=True)
class LossTerm:
    """One distillation term.

    - `compute(inputs) -> scalar tensor` (`inputs`: `minialbert.objective.LossInputs`);
    - `weight`: its default weight (the paper's); `doc`: one line for the config's help;
    - `teacher` / `student`: the outputs it reads (`TEACHER_OUTPUTS` / `STUDENT_OUTPUTS`); a
      term that reads nothing of the teacher trains without one;
    - `projection`: it compares student and teacher hidden states, so a student of another
      width goes through a trained Linear(H_s, H_t) (`inputs.projection`); unweighted, such a
      term is left out rather than compared through an untrained one;
    - `reported_unweighted`: computed (without gradient) for the log even at weight 0;
    - `options` / `resolve`: the name of its own section of the `loss:` config and a function
      (options mapping, student, teacher) -> settings (`inputs.settings`), raising ValueError;
      its settings may name `teacher_layer` and `student_recursion` whose Q/K/V it reads.
    """

    name: str
    compute: Callable[[Any], Any]
    weight: float = 0.0
    doc: str = ""
    teacher: tuple[str, ...] = ()
    student: tuple[str, ...] = ()
    projection: bool = False
    reported_unweighted: bool = True
    options: str | None = None
    resolve: Callable[[Mapping[str, Any], Any, Any], dict[str, Any]] | None = field(default=None, repr=False)

    def __post_init__(self):
        unknown = [o for o in self.teacher if o not in TEACHER_OUTPUTS] + \
                  [o for o in self.student if o not in STUDENT_OUTPUTS]
        if unknown:
            raise ValueError(f"loss term {self.name!r}: unknown outputs {unknown}; a term reads the teacher's "
                             f"{', '.join(TEACHER_OUTPUTS)} and the student's {', '.join(STUDENT_OUTPUTS)}")

    @property
    def needs_teacher(self) -> bool:
        return bool(self.teacher)


LOSS_TERMS: dict[str, LossTerm] = {}


def register_loss_term(term: LossTerm, *, replace: bool = False) -> LossTerm:
    """Add `term` to the table (after the terms already there); returns it."""
    if term.name in LOSS_TERMS and not replace:
        raise ValueError(f"loss term {term.name!r} is already registered")
    if not term.name.isidentifier() or term.name == "total":
        raise ValueError(f"loss term name {term.name!r}: expected an identifier other than 'total'")
    LOSS_TERMS[term.name] = term
    return term


def unregister_loss_term(name: str) -> None:
    LOSS_TERMS.pop(name, None)


def default_weights() -> dict[str, float]:
    """Every term's default weight (the paper's objective)."""
    return {name: term.weight for name, term in LOSS_TERMS.items()}


def teacher_free_weights() -> dict[str, float]:
    """The objective of the terms that need no teacher, at their default weights (teacher
    pretraining: masked-LM only)."""
    return {name: (0.0 if term.needs_teacher else term.weight) for name, term in LOSS_TERMS.items()}


def needs_teacher(weights: Mapping[str, float]) -> bool:
    """Whether any weighted term reads the teacher (False: the teacher is not run at all)."""
    return any(LOSS_TERMS[name].needs_teacher for name, w in weights.items() if w > 0)


def resolve_terms(weights: Mapping[str, float], student, teacher, layer_map: Sequence[int] | None = None,
                  options: Mapping[str, Any] | None = None) -> tuple[list[int], dict[str, dict[str, Any]]]:
    """(the checked layer map, each weighted term's settings) of an objective for a student and
    teacher (models or their configs: only their sizes are read). The one place both are
    resolved, by the distill job (`Objective.resolve`) and by the workflow's plan before
    anything runs; ValueError says what is wrong (`loss_config_error` names the key)."""
    layer_map = check_layer_map(layer_map, num_layers_and_heads(student)[0], num_layers_and_heads(teacher)[0])
    settings = {name: term.resolve(dict((options or {}).get(term.options) or {}), student, teacher)
                for name, term in LOSS_TERMS.items() if term.resolve is not None and weights.get(name, 0) > 0}
    return layer_map, settings


def loss_config_error(error: ValueError) -> ConfigError:
    """`resolve_terms`' error as a ConfigError at its key of the `loss:` section."""
    message = str(error)
    if message.startswith("layer map"):
        return ConfigError(f"loss.layer_map: {message}")
    if any(message.startswith(f"{term.options}.") for term in LOSS_TERMS.values() if term.options):
        return ConfigError(f"loss.{message}")
    return ConfigError(f"loss: {message}")


# --------------------------------------------------------------------------------------------
# The numerics (REFERENCE section 3, the authors' normalisations): static shapes, masked sums.
# torch is imported where a function first runs, so that reading the table stays cheap.
# --------------------------------------------------------------------------------------------
KL_EPS = 1e-12  # the authors' smoothing of both attention distributions


def attention_kl(teacher_probs: torch.Tensor, student_probs: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
    """The authors' ATT for one layer: sum over non-padding (b, h, q) rows and keys of
    KL(t + eps || s + eps), divided by (rows x T). Head counts that differ -> head-averaged maps."""
    import torch

    t, s = teacher_probs.float(), student_probs.float()
    if t.shape[1] != s.shape[1]:
        t, s = t.mean(1, keepdim=True), s.mean(1, keepdim=True)
    with torch.no_grad():  # the teacher's side is a constant: keep it out of the autograd graph
        t = t + KL_EPS
        neg_entropy = (t * t.log()).sum(-1)  # (B, nh, T)
    kl_rows = neg_entropy - (t * (s + KL_EPS).log()).sum(-1)  # (B, nh, T)
    qm = query_mask.to(kl_rows.dtype)[:, None, :]  # (B, 1, T)
    rows = qm.sum() * kl_rows.shape[1]
    return (kl_rows * qm).sum() / (rows * kl_rows.shape[-1]).clamp(min=1)


def cosine_distance(student_h: torch.Tensor, teacher_h: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Mean over non-padding tokens of 1 - cos(student, teacher); (B, T, H) inputs."""
    import torch.nn.functional as F

    cos = F.cosine_similarity(student_h.float(), teacher_h.float(), dim=-1)  # (B, T)
    m = token_mask.to(cos.dtype)
    return ((1.0 - cos) * m).sum() / m.sum().clamp(min=1)


def relation_kl(teacher_x: torch.Tensor, student_x: torch.Tensor, attention_mask: torch.Tensor,
                heads: int) -> torch.Tensor:
    """MiniLMv2's relation KL for one of Q, K, V: (B, T, H_t) and (B, T, H_s) projections, each
    split into `heads` relation heads; softmax(X_r X_r^T / sqrt(d_r)) over non-padding keys;
    KL(teacher || student) summed over keys, mean over (batch, head, non-padding query) rows."""
    import torch

    keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)

    def log_relation(x: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, R, T, T)
        B, T, H = x.shape
        d = H // heads
        with torch.autocast(x.device.type, enabled=False):  # fp32: autocast would run X X^T in bf16/fp16 again
            x = x.float().view(B, T, heads, d).transpose(1, 2)
            scores = (x @ x.transpose(-1, -2)) * d**-0.5
            return torch.log_softmax(scores.masked_fill(~keys, torch.finfo(scores.dtype).min), dim=-1)

    with torch.no_grad():  # the teacher's side is a constant
        log_t = log_relation(teacher_x)
    log_s = log_relation(student_x)
    kl_rows = torch.where(keys, log_t.exp() * (log_t - log_s), 0.0).sum(-1)  # (B, R, T)
    queries = attention_mask.to(kl_rows.dtype)[:, None, :]  # (B, 1, T)
    return (kl_rows * queries).sum() / (queries.sum() * heads).clamp(min=1)


def relation_loss(teacher_qkv, student_qkv, attention_mask: torch.Tensor, heads: int) -> torch.Tensor:
    """The mean of the Q-Q, K-K and V-V relation KLs (`relation_kl`)."""
    return sum(relation_kl(t, s, attention_mask, heads) for t, s in zip(teacher_qkv, student_qkv)) / 3


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over (K, V) logits at gathered positions, mean over those with a label (-100 = none)."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.float(), labels, ignore_index=-100)


def output_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, valid: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) summed over the vocabulary, mean over valid positions, times T^2."""
    import torch.nn.functional as F

    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(-1)  # (K,)
    v = valid.to(kl.dtype)
    return (kl * v).sum() / v.sum().clamp(min=1) * temperature**2


def resolve_relation(relation: Mapping[str, Any] | None, student, teacher) -> dict[str, int]:
    """{teacher_layer, student_recursion (both 0-based, non-negative), heads} of the relation
    term (student and teacher: models or their configs); ValueError when an index is out of
    range or the heads divide not both widths."""
    relation = dict(relation or {})
    T, teacher_heads = num_layers_and_heads(teacher)
    S, _ = num_layers_and_heads(student)
    out = {}
    for key, count, what in (("teacher_layer", T, "teacher layers"), ("student_recursion", S, "student recursions")):
        index = relation.get(key, -1)
        if not -count <= index < count:
            raise ValueError(f"relation.{key}: {index} is out of range ({count} {what})")
        out[key] = index % count
    heads = relation.get("heads") or teacher_heads
    widths = (hidden_size(teacher), hidden_size(student))
    if any(width % heads for width in widths):
        raise ValueError(f"relation.heads: {heads} relation heads must divide both the teacher's width ({widths[0]}) "
                         f"and the student's ({widths[1]})")
    out["heads"] = heads
    return out


# --------------------------------------------------------------------------------------------
# The terms
# --------------------------------------------------------------------------------------------
def _mlm(x):
    return masked_lm_loss(x.student_logits, x.labels)


def _attention(x):
    return sum(attention_kl(x.teacher["attentions"][j], x.student["attentions"][i], x.attention_mask)
               for i, j in enumerate(x.layer_map))


def _hidden(x):
    return sum(cosine_distance(x.projection(x.student["hidden_states"][i + 1]), x.teacher["hidden_states"][j + 1],
                               x.attention_mask) for i, j in enumerate(x.layer_map))


def _output(x):
    return output_kl(x.student_logits, x.teacher["logits"], x.valid, x.temperature)


def _embedding(x):
    return cosine_distance(x.projection(x.student["hidden_states"][0]), x.teacher["hidden_states"][0],
                           x.attention_mask)


def _exit_output(x):
    """Every earlier recursion's output through the MLM head at the masked positions, distilled
    from the teacher's final output (the `output` term's KL), mean over those recursions: each
    recursion learns to be a usable last one (adaptive depth, `minialbert.exits`)."""
    if x.student_head is None:
        raise ValueError("the exit_output term needs a student whose MLM head can be applied to any recursion "
                         "(a MiniALBERT student)")
    earlier = x.student["hidden_states"][1:-1]  # recursions 1 .. N-1 (index 0: the embeddings)
    if not earlier:
        return x.student_logits.sum() * 0.0
    rows = x.positions.clamp(min=0)
    return sum(output_kl(x.student_head(h.reshape(-1, h.shape[-1]).index_select(0, rows)), x.teacher["logits"],
                         x.valid, x.temperature) for h in earlier) / len(earlier)


def _relation(x):
    return relation_loss(x.teacher["qkv"], x.student["qkv"], x.attention_mask, x.settings["heads"])


for _term in (
    LossTerm("mlm", _mlm, 1.0, "masked-LM cross-entropy"),
    LossTerm("attention", _attention, 3.0, "attention KL of matched layers",
             teacher=("attentions",), student=("attentions",)),
    LossTerm("hidden", _hidden, 3.0, "hidden-state cosine of matched layers",
             teacher=("hidden_states",), student=("hidden_states",), projection=True),
    LossTerm("output", _output, 5.0, "MLM-logit KL at masked positions", teacher=("logits",)),
    LossTerm("embedding", _embedding, 0.0, "embedding-output cosine",
             teacher=("hidden_states",), student=("hidden_states",), projection=True),
    LossTerm("relation", _relation, 0.0, "MiniLMv2 Q/K/V self-attention relation KL (see loss.relation)",
             teacher=("qkv",), student=("qkv",), reported_unweighted=False, options="relation",
             resolve=resolve_relation),
    LossTerm("exit_output", _exit_output, 0.0, "MLM-logit KL of every earlier recursion through the MLM head, "
             "from the teacher's final output (recursions that are good exits)",
             teacher=("logits",), student=("hidden_states",), reported_unweighted=False),
):
    register_loss_term(_term)
del _term
