"""The distillation loss terms, each declared once: its name, its paper default weight, what it
reads from the teacher and the student, and the function that computes it.

    total = sum over terms of weight[term] * term(outputs)
    (paper: mlm 1, attention 3, hidden 3, output 5; embedding and relation 0)

Everything else is derived from this table: the `loss.weights` keys of the distill config and
their defaults (`minialbert.configs.LossWeights`), which outputs the objective asks the teacher
and the student for (`minialbert.objective`), whether the teacher runs at all (not when no
weighted term reads it: the MLM-only baseline and teacher pretraining), and the panels of the
loss-curve figure.

Adding a term is one `register_loss_term(LossTerm(...))` call (here, or from your own code
before the config is read): its function receives a `minialbert.objective.LossInputs` and
returns a scalar tensor. A term with its own settings (like `relation`) also gets a section in
`minialbert.configs.LossConfig` and a `resolve` function that checks them against the models.

This module imports no torch: the config is validated when the workflow's DAG is built. The
functions below import the numerics (`minialbert.objective`) when they first run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

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


# --------------------------------------------------------------------------------------------
# The terms (REFERENCE section 3, with the authors' normalisations; see minialbert.objective)
# --------------------------------------------------------------------------------------------
def _mlm(x):
    from minialbert.objective import masked_lm_loss

    return masked_lm_loss(x.student_logits, x.labels)


def _attention(x):
    from minialbert.objective import attention_kl

    return sum(attention_kl(x.teacher["attentions"][j], x.student["attentions"][i], x.attention_mask)
               for i, j in enumerate(x.layer_map))


def _hidden(x):
    from minialbert.objective import cosine_distance

    return sum(cosine_distance(x.projection(x.student["hidden_states"][i + 1]), x.teacher["hidden_states"][j + 1],
                               x.attention_mask) for i, j in enumerate(x.layer_map))


def _output(x):
    from minialbert.objective import output_kl

    return output_kl(x.student_logits, x.teacher["logits"], x.valid, x.temperature)


def _embedding(x):
    from minialbert.objective import cosine_distance

    return cosine_distance(x.projection(x.student["hidden_states"][0]), x.teacher["hidden_states"][0],
                           x.attention_mask)


def _relation(x):
    from minialbert.objective import relation_loss

    return relation_loss(x.teacher["qkv"], x.student["qkv"], x.attention_mask, x.settings["heads"])


def _resolve_relation(options: Mapping[str, Any], student, teacher) -> dict[str, int]:
    from minialbert.objective import resolve_relation

    return resolve_relation(options, student, teacher)


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
             resolve=_resolve_relation),
):
    register_loss_term(_term)
del _term
