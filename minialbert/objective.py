"""The MiniALBERT distillation objective (REFERENCE section 3), computed only as far as needed.

    total = w_mlm MLM + w_att ATT + w_hid HID + w_out OUT + w_emb EMB + w_rel REL
    (paper: 1, 3, 3, 5, 0, 0; student recursion i matched to teacher layer (i+1)*T/S - 1)

The terms and their default weights are declared in `minialbert.loss_terms` (one table); this
module resolves an objective once (`Objective.resolve`: weights, layer map, each term's own
settings), runs the teacher and the student for exactly what the computed terms read, and
walks the table. The numerics of the paper's terms sit with their declarations.

With the authors' exact normalisations (these set the effective weights):
- MLM: cross-entropy of the student's MLM logits, mean over labelled (masked) positions.
- ATT: per matched layer, KL(t_row || s_row) summed over keys, summed over the (batch, head,
  query) rows whose query is not padding, divided by (rows x padded sequence length), i.e.
  KLDivLoss(reduction="mean") on log(s + 1e-12) against t + 1e-12; summed over layers.
- HID: per matched layer, mean over non-padding tokens of 1 - cos(student, teacher); summed.
- OUT: KL(softmax(t/T) || softmax(s/T)) of the MLM logits summed over the vocabulary,
  averaged over labelled positions, times T^2.
- EMB: like HID, between student hidden state 0 (projected embeddings) and the teacher's
  embedding output.
- REL (MiniLMv2, beyond the paper): for X in {Q, K, V} of one teacher layer and one student
  recursion (projected, before the head split), split into R relation heads of width H/R
  (R divides both widths, so the sizes and head counts may differ), the relation
  softmax(X_r X_r^T / sqrt(H/R)) over non-padding keys; KL(teacher || student) summed over
  keys, averaged over the (batch, relation head, non-padding query) rows; the mean over Q, K, V.
  Computed only when weighted (it needs the two layers' Q/K/V, captured for it alone).

How it is made fast (REFERENCE sections 6 and 7), without changing a single value:
- The teacher runs in eval mode under no_grad with its default (SDPA) attention. Attention
  probabilities are produced only for the matched teacher layers: forward hooks keep those
  layers' query/key projections, and softmax(QK^T / sqrt(d) + mask) is recomputed from them
  (transformers 5.x silently returns *no* attentions from SDPA, so asking for them would make
  ATT zero; the tests compare against eager attention).
- MLM heads (the H x V projection dominates the cost at BERT vocabularies) run only at the
  labelled positions: the encoders' last hidden states are gathered at those positions and
  the heads applied there. MLM and OUT only ever read those positions, so values are equal.
- No masked_select / boolean indexing: padding and unlabelled positions are excluded by
  masked sums over static-shape tensors. The labelled positions come as a fixed-length index
  vector padded with -1 (`masked_positions`, built on the CPU by the training collator; if a
  batch lacks it, it is derived from `labels` here).

Students that differ from the paper:
- hidden size != teacher's: HID and EMB compare `Linear(H_s, H_t)(student)` with the teacher;
  these projections are trained with the student (see `DistillationModule`) and are not part
  of the saved student.
- head count != teacher's: ATT compares head-averaged attention maps (one map per layer;
  rows are then counted once per query, not per head).

The no-distillation baseline is `weights` with only `mlm > 0` (no weighted term reads the
teacher): the teacher is not run at all and the returned dict holds only the terms that need
none (`mlm`) and `total`. Otherwise every component is returned;
those with weight 0 are computed without gradient (reported, not trained), except that a
term needing a projection that was not created (weight 0, sizes differ) is left out.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from minialbert.data.mlm import masked_positions_from_labels
from minialbert.loss_terms import LOSS_TERMS, LossTerm, default_weights, needs_teacher, resolve_terms
from minialbert.modeling import MiniAlbertForMaskedLM, MiniAlbertModel
from minialbert.recursions import hidden_size, num_layers_and_heads


STUDENT_ATTENTION = ("auto", "eager", "recompute")

# ----------------------------------------------------------------------------------------
# configuration helpers


def resolve_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """Every term's default weight (`minialbert.loss_terms`) overridden by `weights`; unknown
    names or negative values are refused."""
    out = default_weights()
    for name, value in (weights or {}).items():
        if name not in out:
            raise ValueError(f"loss weight {name!r}: unknown component (known: {', '.join(out)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"loss weight {name}: expected a finite number >= 0, got {value!r}")
        out[name] = float(value)
    if not any(v > 0 for v in out.values()):
        raise ValueError("loss weights: at least one component must have a weight > 0")
    return out


# ----------------------------------------------------------------------------------------
# model plumbing: encoder + MLM head split, teacher attention capture


def _split_mlm_model(model: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]] | None:
    """(encoder, head) of a masked-LM model so the head can run on selected positions only;
    None for an architecture we do not know (then the full forward is used)."""
    if isinstance(model, MiniAlbertForMaskedLM):
        return model.minialbert, model.head
    base = getattr(model, "base_model", None)
    if base is not None and base is not model:
        for name in ("cls", "lm_head"):  # BERT-style, RoBERTa-style heads
            if isinstance(getattr(model, name, None), nn.Module):
                return base, getattr(model, name)
    return None


def _self_attention_modules(teacher: nn.Module) -> list[nn.Module] | None:
    """The teacher's per-layer self-attention modules exposing `query`/`key` Linear layers (BERT family)."""
    base = getattr(teacher, "base_model", teacher)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        return None
    mods = [getattr(getattr(layer, "attention", None), "self", None) for layer in layers]
    if all(m is not None and isinstance(getattr(m, "query", None), nn.Linear)
           and isinstance(getattr(m, "key", None), nn.Linear) for m in mods):
        return mods
    return None


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, T) 1/0 mask -> (B, 1, 1, T) additive mask, as BERT's eager attention builds it."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def teacher_attention_probs(q: torch.Tensor, k: torch.Tensor, num_heads: int, mask_add: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(d) + mask) from projected (B, T, H) queries/keys -> (B, nh, T, T), float32
    (outside autocast, which would run the matmul in bf16/fp16 again)."""
    B, T, H = q.shape
    hs = H // num_heads
    with torch.autocast(q.device.type, enabled=False):
        q = q.float().view(B, T, num_heads, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.float().view(B, T, num_heads, hs).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * hs**-0.5  # (B, nh, T, T)
        return torch.softmax(scores + mask_add.float(), dim=-1)


@torch.no_grad()
def run_teacher(teacher: nn.Module, inputs: Mapping[str, torch.Tensor], layers: Sequence[int],
                positions: torch.Tensor, *, need_attentions: bool = True,
                qkv_layer: int | None = None) -> dict[str, Any]:
    """One teacher pass (eval, no_grad): hidden states, MLM logits at `positions` (flat indices,
    -1 = padding), attention probabilities for `layers` only (dict layer -> (B, nh, T, T)), and
    layer `qkv_layer`'s projected (queries, keys, values) (B, T, H) as "qkv" when asked."""
    if teacher.training:
        teacher.eval()  # the authors left dropout on in the teacher (REFERENCE section 6); we do not
    attn_mods = _self_attention_modules(teacher) if need_attentions or qkv_layer is not None else None
    wanted = sorted(set(layers)) if need_attentions else []
    if qkv_layer is not None and attn_mods is None:
        raise ValueError(f"relation distillation needs a BERT-family teacher (query/key/value projections per "
                         f"layer); {type(teacher).__name__} has none")
    eager_attentions = None
    parts = {j: ("query", "key") for j in wanted} if attn_mods is not None else {}
    if qkv_layer is not None:
        parts[qkv_layer] = ("query", "key", "value")
    projections = _capture_projections(attn_mods, parts)
    split = _split_mlm_model(teacher)
    try:
        if wanted and attn_mods is None:
            # Unknown architecture: fall back to eager attention for the whole teacher.
            teacher.set_attn_implementation("eager")
            out = teacher(**inputs, output_hidden_states=True, output_attentions=True)
            eager_attentions = out.attentions
            logits_all = out.logits
            hidden = out.hidden_states
        elif split is not None:
            base, head = split
            out = base(**inputs, output_hidden_states=True)
            hidden = out.hidden_states
            logits_all = None
        else:
            out = teacher(**inputs, output_hidden_states=True)
            hidden = out.hidden_states
            logits_all = out.logits
    finally:
        captured = {}
        for key, module in projections.items():
            captured[key] = module.__dict__.pop("_minialbert_output", None)  # nothing outlives the step
    if logits_all is None:
        logits = head(_gather_positions(hidden[-1], positions))
    else:
        logits = _gather_positions(logits_all, positions)
    probs = {}
    if wanted:
        _, heads = num_layers_and_heads(teacher)
        if eager_attentions is not None:
            probs = {j: eager_attentions[j].float() for j in wanted}
        else:
            mask_add = additive_mask(inputs["attention_mask"])
            probs = {j: teacher_attention_probs(captured[(j, "query")], captured[(j, "key")], heads, mask_add)
                     for j in wanted}
    qkv = None if qkv_layer is None else tuple(captured[(qkv_layer, part)] for part in ("query", "key", "value"))
    return {"hidden_states": hidden, "logits": logits, "attentions": probs, "qkv": qkv}


def _keep_output(module: nn.Module, args, output) -> None:  # noqa: ARG001
    module._minialbert_output = output


def _capture_projections(attn_mods, parts: Mapping[int, Sequence[str]]) -> dict[tuple[int, str], nn.Module]:
    """{(j, part): layer j's `part` projection} for every (j, part) in `parts`, each with a
    forward hook that keeps its last output as `_minialbert_output`. The hooks are registered
    once and kept (registering and removing them at every step would break a compiled step's
    graph); they travel with a deep copy of the teacher and write to the module they run on."""
    out = {}
    for j, names in parts.items():
        for part in names:
            module = getattr(attn_mods[j], part)
            if not getattr(module, "_minialbert_keeps_output", False):
                module.register_forward_hook(_keep_output)
                module._minialbert_keeps_output = True
            out[(j, part)] = module
    return out


def prepare_teacher(teacher: nn.Module, layers: Sequence[int], qkv_layer: int | None = None) -> None:
    """Install, once and before any step runs, every forward hook a teacher pass uses: ours on
    the projections of `layers` (query, key) and of `qkv_layer` (query, key, value), and
    transformers' own output-capturing hooks. A compiled step then traces through them and never
    meets a hook being registered (a graph break that leaves the whole teacher pass eager)."""
    attn_mods = _self_attention_modules(teacher)
    if attn_mods is not None:
        parts = {j: ("query", "key") for j in layers}
        if qkv_layer is not None:
            parts[qkv_layer] = ("query", "key", "value")
        _capture_projections(attn_mods, parts)
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # another transformers version: it installs them at the first call
        return
    from transformers import PreTrainedModel

    for module in teacher.modules():
        if isinstance(module, PreTrainedModel) and hasattr(module, "config"):
            with contextlib.suppress(Exception):  # a model without recordable outputs
                maybe_install_capturing_hooks(module)


def _gather_positions(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (K, D) rows at flat positions (padding entries -1 read row 0; they are masked later)."""
    return x.reshape(-1, x.shape[-1]).index_select(0, positions.clamp(min=0))


# ----------------------------------------------------------------------------------------
# the objective


@dataclass
class LossInputs:
    """What a loss term's function reads (`minialbert.loss_terms.LossTerm.compute`).

    `student_logits` (K, V) and `labels` (K,) at the K gathered masked positions (`valid`
    False on padding entries, whose label is -100); `attention_mask` (B, T); `student` /
    `teacher`: the outputs the computed terms asked for (`hidden_states`: embeddings output
    then one per recursion / layer; `attentions`: the student's per recursion, the teacher's
    {layer: probs} for the layer map's layers; `logits`: the teacher's at the same positions;
    `qkv`: the projected (queries, keys, values) of the layer the term's settings name);
    `projection`: this term's Linear(H_s, H_t), or the identity when the widths are equal;
    `settings`: this term's resolved options; `positions` (K,) the flat masked positions (-1:
    padding) and `student_head` the student's MLM head (None for an architecture without a
    separable one), for terms that read other recursions through the head."""

    student_logits: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor
    attention_mask: torch.Tensor
    student: dict[str, Any]
    teacher: dict[str, Any] | None
    layer_map: list[int] | None
    temperature: float
    projection: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda x: x)
    settings: dict[str, Any] = field(default_factory=dict)
    positions: torch.Tensor | None = None
    student_head: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class Objective:
    """An objective resolved once against its student and teacher: every term's weight, the
    checked layer map (the teacher layer of each recursion), the temperature, each term's own
    settings, and whether the student's and teacher's hidden sizes differ."""

    weights: dict[str, float]
    layer_map: list[int] | None
    temperature: float
    settings: dict[str, dict[str, Any]]
    widths_differ: bool
    # How the student hands out attention probabilities (`run_student`): "recompute" (every
    # recursion on the fused SDPA path, the probabilities recomputed from its queries and keys),
    # "eager" (the reference path where they are wanted), "auto" (recompute on a GPU, eager on
    # the CPU, where no fused kernel is worth the extra QK^T and the dropout draws stay today's;
    # the values agree).
    student_attention: str = "auto"

    def __post_init__(self):
        if self.student_attention not in STUDENT_ATTENTION:
            raise ValueError(f"student_attention: expected one of {', '.join(STUDENT_ATTENTION)}, "
                             f"got {self.student_attention!r}")

    @classmethod
    def resolve(cls, student, teacher, *, layer_map: Sequence[int] | None = None,
                weights: Mapping[str, float] | None = None, temperature: float = 1.0,
                options: Mapping[str, Any] | None = None) -> Objective:
        """`student` / `teacher`: models or their configs (the teacher may be None when no weighted
        term reads it); `options`: the terms' own sections by name (e.g. {"relation": {...}}).
        ValueError names what is wrong (the layer map and the terms' settings: `resolve_terms`)."""
        w = resolve_weights(weights)
        if not temperature > 0:
            raise ValueError(f"temperature: expected a number > 0, got {temperature!r}")
        if needs_teacher(w) and teacher is None:
            raise ValueError("a teacher is required unless only terms that need none (mlm) have a weight > 0")
        if teacher is None:
            return cls(w, None, float(temperature), {}, False)
        layer_map, settings = resolve_terms(w, student, teacher, layer_map, options)
        return cls(w, layer_map, float(temperature), settings, hidden_size(student) != hidden_size(teacher))

    @property
    def uses_teacher(self) -> bool:
        return needs_teacher(self.weights)

    def projected_terms(self) -> list[str]:
        """The weighted terms that compare hidden states through a trained Linear(H_s, H_t)."""
        return [n for n, t in LOSS_TERMS.items() if t.projection and self.widths_differ and self.weights[n] > 0]

    def computed_terms(self, projections: Mapping[str, nn.Module]) -> list[tuple[str, LossTerm]]:
        """The terms computed, in table order: the weighted ones, and the others that are reported
        at weight 0 (not those that need a teacher when it is not run, nor a projection that
        does not exist)."""
        out = []
        for name, term in LOSS_TERMS.items():
            if self.weights[name] > 0 or (term.reported_unweighted and (self.uses_teacher or not term.needs_teacher)):
                if term.projection and self.widths_differ and name not in projections:
                    if self.weights[name] > 0:
                        raise ValueError(
                            f"student hidden size != teacher's: the {name} term needs a projection (pass "
                            f"projections={{'{name}': Linear(H_s, H_t)}} trained with the student, or use "
                            f"DistillationModule, which owns it as {name}_projection)")
                    continue
                out.append((name, term))
        return out

    def losses(self, student: nn.Module, teacher: nn.Module | None, batch: Mapping[str, torch.Tensor],
               projections: Mapping[str, nn.Module] | None = None) -> dict[str, torch.Tensor]:
        """Every computed term (weight 0: without gradient) and the weighted `total` (scalar tensors).

        `batch`: input_ids, attention_mask, labels (-100 where not masked), optional
        token_type_ids and masked_positions (flat indices, -1 padding; derived from labels
        when absent). The teacher runs in eval mode without gradient, and not at all when no
        weighted term reads it."""
        projections = {n: p for n, p in (projections or {}).items() if p is not None}
        terms = self.computed_terms(projections)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if batch.get(k) is not None}
        labels = batch["labels"]
        positions = batch.get("masked_positions")
        if positions is None:
            positions = masked_positions_from_labels(labels)
        valid = positions >= 0
        gathered_labels = labels.reshape(-1).index_select(0, positions.clamp(min=0)).masked_fill(~valid, -100)
        wants_student = {o for _, t in terms for o in t.student}
        wants_teacher = {o for _, t in terms for o in t.teacher}
        qkv = next((self.settings[n] for n, t in terms if "qkv" in t.teacher + t.student), None)
        t_out = None
        if self.uses_teacher:
            t_out = run_teacher(teacher, inputs, self.layer_map, positions,
                                need_attentions="attentions" in wants_teacher,
                                qkv_layer=qkv["teacher_layer"] if qkv and "qkv" in wants_teacher else None)
        s_logits, s_out = run_student(student, inputs, positions, wants_student,
                                      qkv_recursion=qkv["student_recursion"] if qkv else None,
                                      attention=self.student_attention)
        split = _split_mlm_model(student)
        shared = LossInputs(s_logits, gathered_labels, valid, batch["attention_mask"], s_out, t_out,
                            self.layer_map, self.temperature, positions=positions,
                            student_head=split[1] if split is not None else None)
        losses: dict[str, torch.Tensor] = {}
        for name, term in terms:
            x = replace(shared, settings=self.settings.get(name, {}),
                        projection=projections.get(name, shared.projection) if self.widths_differ
                        else shared.projection)
            if self.weights[name] > 0:
                losses[name] = term.compute(x)
            else:
                with torch.no_grad():
                    losses[name] = term.compute(x)
        losses["total"] = sum(self.weights[name] * value for name, value in losses.items() if self.weights[name] > 0)
        return losses


def run_student(student: nn.Module, inputs: Mapping[str, torch.Tensor], positions: torch.Tensor,
                outputs: set[str], qkv_recursion: int | None = None, attention: str = "auto"
                ) -> tuple[torch.Tensor, dict[str, Any]]:
    """The student's MLM logits at `positions` (the head runs there only) and the `outputs`
    asked for (hidden_states, attentions, qkv of recursion `qkv_recursion`). Without
    attentions the fast (SDPA) path runs; with them, a MiniALBERT student recomputes them
    beside it (`attention`: see `Objective.student_attention`)."""
    kwargs: dict[str, Any] = {}
    if "hidden_states" in outputs:
        kwargs["output_hidden_states"] = True
    if "attentions" in outputs:
        kwargs["output_attentions"] = True
    if "qkv" in outputs:
        kwargs["output_qkv"] = qkv_recursion
    split = _split_mlm_model(student)
    if split is not None:
        enc, head = split
        if "attentions" in outputs and isinstance(enc, MiniAlbertModel):
            device = next(enc.parameters()).device
            kwargs["recompute_attentions"] = attention == "recompute" or (attention == "auto" and
                                                                          device.type != "cpu")
        out = enc(**inputs, **kwargs)
        logits = head(_gather_positions(out.last_hidden_state, positions))
    else:
        out = student(**inputs, **kwargs)
        logits = _gather_positions(out.logits, positions)
    if "attentions" in outputs and (not out.attentions or any(a is None for a in out.attentions)):
        raise RuntimeError("the student returned no attention probabilities; it must support output_attentions=True")
    return logits, {name: getattr(out, name) for name in outputs}


def distillation_losses(student: nn.Module, teacher: nn.Module | None, batch: Mapping[str, torch.Tensor], *,
                        layer_map: Sequence[int] | None = None, weights: Mapping[str, float] | None = None,
                        temperature: float = 1.0, projections: Mapping[str, nn.Module] | None = None,
                        relation: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The loss components and their weighted `total` for one batch, the objective resolved on
    the spot (`Objective`; a training loop holds a `DistillationModule` instead). Defaults are
    the paper's; `projections`: {term: Linear(H_s, H_t)} for the hidden-state terms of a
    student of another width; `relation`: the relation term's settings."""
    objective = Objective.resolve(student, teacher, layer_map=layer_map, weights=weights, temperature=temperature,
                                  options={"relation": relation})
    return objective.losses(student, teacher, batch, projections)


class DistillationModule(nn.Module):
    """The trainable side of distillation: the student, plus a Linear(H_s, H_t) per weighted
    hidden-state term (`<term>_projection`) when hidden sizes differ (trained, never saved with
    the student). The teacher is held outside the parameter tree: not trained, not
    checkpointed, not synced by DDP, always in eval mode. `forward(batch)` returns the losses.

    Give a resolved `objective`, or the settings to resolve one from (`Objective.resolve`)."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, objective: Objective | None = None, *,
                 layer_map: Sequence[int] | None = None, weights: Mapping[str, float] | None = None,
                 temperature: float = 1.0, relation: Mapping[str, Any] | None = None):
        super().__init__()
        if objective is None:
            w = resolve_weights(weights)
            objective = Objective.resolve(student, teacher if needs_teacher(w) else None, layer_map=layer_map,
                                          weights=w, temperature=temperature, options={"relation": relation})
        self.student = student
        self.objective = objective
        object.__setattr__(self, "_teacher", teacher if objective.uses_teacher else None)
        if self._teacher is not None:
            self._teacher.eval().requires_grad_(False)
            relation = objective.settings.get("relation")
            prepare_teacher(self._teacher, objective.layer_map, relation["teacher_layer"] if relation else None)
        self.projection_names = objective.projected_terms()
        for name in self.projection_names:
            setattr(self, f"{name}_projection", nn.Linear(hidden_size(student), hidden_size(teacher)))

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher

    @property
    def layer_map(self) -> list[int] | None:
        return self.objective.layer_map

    def to(self, *args, **kwargs):  # move the (unregistered) teacher along
        super().to(*args, **kwargs)
        if self._teacher is not None:
            self._teacher.to(*args, **kwargs)
        return self

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        projections = {name: getattr(self, f"{name}_projection") for name in self.projection_names}
        return self.objective.losses(self.student, self._teacher, batch, projections)
