"""Adaptive depth: a recursive student that stops after the recursion where it is sure enough.

Every recursion of a MiniALBERT model runs the same weights, so any recursion can be the last.
With exits (`finetune.exits`, `minialbert finetune --exits`), the task head reads every
recursion from `min_recursion` on (one head for all, or one per recursion: `exit_heads` in the
model config), and the fine-tuning loss trains every exit (`training_loss`). At inference:

- an exit rule says when a row stops (`ExitRule`): `confidence` (stop score >= a threshold),
  `patience` (the answer unchanged for p recursions) or `full` (never early). The stop score
  and the answer come from the task type (`TaskType.exit_answers`): the top class probability
  (token tasks: of the least sure scored token, so a sentence stops when all its tokens pass);
  regression has no confidence and scores how little the answer moved since the recursion
  before (-|y_i - y_{i-1}|), so a threshold there is a tolerance;
- `calibrate` picks the confidence threshold for a target disagreement rate epsilon with the
  full-depth prediction and a risk delta, by Learn-then-Test fixed-sequence testing (Angelopoulos
  et al. 2021): thresholds from strict to loose, each tested with an exact binomial tail bound,
  stopping at the first that fails. Agreement needs no labels, so it is calibrated on a split
  that is never reported;
- `run_exits` is the batch-shrinking executor: after each recursion the rows that stopped leave
  the batch (and trailing padding no remaining row needs is cut), so a batch costs what its
  rows need. With `shrink=False` it is the naive batched executor (every row runs until the
  slowest stops). Its predictions and exit recursions equal one-example-at-a-time inference.

Recursions are 0-based in code (`MiniAlbertModel.recursion(i)`) and 1-based in outputs
(exit recursion 3 = the third application of the shared layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from minialbert.utils import ConfigError

EXIT_LOSSES = ("weighted", "distill")


# --------------------------------------------------------------------------------------------
# The model side
# --------------------------------------------------------------------------------------------
def check_exit_model(model, where: str) -> None:
    """Refuse a model that cannot exit early (not a MiniALBERT head model with exits)."""
    if not (hasattr(model, "minialbert") and hasattr(model.minialbert, "recursion")):
        raise ConfigError(f"{where}: adaptive depth needs a MiniALBERT student (a recursive model), "
                          f"got {type(model).__name__}")
    if getattr(model.config, "exit_heads", None) is None:
        raise ConfigError(f"{where}: the model has no exits (fine-tune it with exits first)")


def exit_recursions(model) -> range:
    """The recursions (0-based) whose output the task head reads (a model without exits: the last)."""
    N = model.config.num_hidden_layers
    return range(model.config.exit_min_recursion - 1 if model.config.exit_heads else N - 1, N)


def exit_logits(model, batch: dict) -> list[torch.Tensor]:
    """The head's logits after every exit recursion, in order (the last one is the full depth)."""
    base = model.minialbert
    h, mask = base.embed(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
    first, logits = exit_recursions(model)[0], []
    for i in range(model.config.num_hidden_layers):
        h = base.recursion(i, h, mask)[0]
        if i >= first:
            logits.append(model.head(h, recursion=i))
    return logits


def fixed_depth_logits(model, batch: dict, k: int) -> torch.Tensor:
    """The student cut to its first k recursions (1-based k), read by recursion k's head."""
    base = model.minialbert
    h, mask = base.embed(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
    for i in range(k):
        h = base.recursion(i, h, mask)[0]
    return model.head(h, recursion=k - 1)


def training_loss(model, kind, batch: dict, loss: str) -> torch.Tensor:
    """The fine-tuning loss of a model with exits.
    weighted: sum_i i * L_i / sum_i i over the exit recursions i (1-based; PABEE);
    distill: L at full depth + each earlier exit distilled from the final one (KL; MSE for
    regression), the final output detached (it is the target, not pulled towards the exits)."""
    labels = batch["labels"]
    logits = exit_logits(model, batch)
    if loss == "weighted":
        depths = [i + 1 for i in exit_recursions(model)]
        total = sum(d * model.compute_loss(z, labels) for d, z in zip(depths, logits))
        return total / sum(depths)
    if loss == "distill":
        final = logits[-1]
        return model.compute_loss(final, labels) + sum(kind.exit_distill_loss(z, final, labels) for z in logits[:-1])
    raise ValueError(f"unknown exit loss {loss!r}; expected one of {EXIT_LOSSES}")


def token_mask(features: Sequence[dict], length: int) -> torch.Tensor | None:
    """(B, T) True at the scored positions of token-task features (a word's first sub-word);
    None for sequence tasks."""
    if not features or "word_positions" not in features[0]:
        return None
    mask = torch.zeros(len(features), length, dtype=torch.bool)
    for row, feature in enumerate(features):
        positions = [p for p in feature["word_positions"] if 0 <= p < length]
        mask[row, positions] = True
    return mask


# --------------------------------------------------------------------------------------------
# Exit rules and the batch-shrinking executor
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExitRule:
    """When a row stops. `confidence`: its stop score >= `threshold`; `patience`: its answer
    moved by at most `tolerance` for `patience` consecutive recursions; `full`: never early.
    `tolerance` also says when two answers agree (classification: equal)."""

    kind: str = "full"
    threshold: float = math.inf
    patience: int = 1
    tolerance: float = 0.0

    def __post_init__(self):
        if self.kind not in ("full", "confidence", "patience"):
            raise ValueError(f"unknown exit rule {self.kind!r}; expected full, confidence or patience")
        if self.kind == "patience" and self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")


def stop_scores(kind, logits: torch.Tensor, mask: torch.Tensor | None, target_scale: Any,
                previous: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(stop score, answer, moved) of one exit's logits: `moved` is how far the answer went since
    the previous exit (inf at the first). A type without confidence scores -moved."""
    score, answer = kind.exit_answers(logits, mask, target_scale)
    if previous is None:
        moved = torch.full((logits.shape[0],), math.inf)
    else:
        moved = kind.answer_distance(answer, previous).float()
    if score is None:
        score = -moved
    return score.float(), answer, moved


@torch.no_grad()
def run_exits(model, kind, batch: dict, mask: torch.Tensor | None, rule: ExitRule, target_scale: Any = None,
              shrink: bool = True) -> tuple[list[torch.Tensor], list[int]]:
    """Adaptive inference of one batch -> (each row's logits at its exit, its exit recursion,
    1-based). With `shrink`, rows that stop leave the batch and padding that no remaining row
    needs is cut; without, the whole batch runs until its slowest row stops. The batch must be
    right-padded (the tokenizers are set to pad on the right)."""
    base = model.minialbert
    ids, attention = batch["input_ids"], batch.get("attention_mask")
    if attention is None:
        attention = torch.ones_like(ids)
    h, additive = base.embed(ids, attention, batch.get("token_type_ids"))
    B, N = ids.shape[0], model.config.num_hidden_layers
    lengths = attention.sum(-1)
    rows = torch.arange(B)  # original row of each row still in the batch
    done = torch.zeros(B, dtype=torch.bool)  # naive executor: rows that stopped but still run
    out: list[torch.Tensor | None] = [None] * B
    exits = [N] * B
    previous, streak = None, torch.zeros(B, dtype=torch.long)
    first = exit_recursions(model)[0]
    for i in range(N):
        h = base.recursion(i, h, additive)[0]
        if i < first:
            continue
        logits = model.head(h, recursion=i)
        score, answer, moved = stop_scores(kind, logits, None if mask is None else mask[rows, :h.shape[1]],
                                           target_scale, previous)
        streak = torch.where(moved <= rule.tolerance, streak + 1, torch.zeros_like(streak))
        if i == N - 1:
            stop = torch.ones_like(done)
        elif rule.kind == "confidence":
            stop = score >= rule.threshold
        elif rule.kind == "patience":
            stop = streak >= rule.patience
        else:
            stop = torch.zeros_like(done)
        new = stop & ~done
        for r in new.nonzero().flatten().tolist():
            row = int(rows[r])
            out[row] = logits[r, :int(lengths[row])] if logits.dim() == 3 else logits[r]
            exits[row] = i + 1
        if not shrink:
            done |= stop
            if bool(done.all()):
                break
            previous = answer
            continue
        keep = ~stop
        if not bool(keep.any()):
            break
        rows, h, additive, streak, answer = rows[keep], h[keep], additive[keep], streak[keep], answer[keep]
        done = done[keep]
        width = int(lengths[rows].max())  # trailing padding of every remaining row
        if width < h.shape[1]:
            h, additive = h[:, :width], additive[..., :width]
            answer = answer[:, :width] if answer.dim() == 2 else answer
        previous = answer
    return out, exits  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Calibration: Learn-then-Test with an exact binomial tail
# --------------------------------------------------------------------------------------------
def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k), summed in log space."""
    if k >= n:
        return 1.0
    if p <= 0:
        return 1.0
    if p >= 1:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_p + (n - j) * log_q
             for j in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def first_exit(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """(n,) index of the first exit whose score is >= threshold, else the last exit."""
    passed = scores >= threshold
    passed[:, -1] = True
    return passed.float().argmax(-1)


def calibrate(scores: torch.Tensor, disagree: torch.Tensor, epsilon: float, delta: float) -> dict:
    """The loosest confidence threshold certified by fixed-sequence testing.

    `scores` (n, R): each calibration example's stop score at each exit; `disagree` (n, R): its
    answer there differs from its full-depth answer. Candidate thresholds are the observed scores,
    strict to loose; threshold t is certified when the binomial tail P(Bin(n, epsilon) <= k_t)
    <= delta, where k_t counts the disagreements of stopping at the first exit scoring >= t
    (the null hypothesis "disagreement rate > epsilon" is rejected). Testing stops at the first
    threshold that fails, so the family-wise error is at most delta: with probability >= 1 - delta
    over the calibration draw, the chosen threshold disagrees on at most a fraction epsilon of new
    examples from the same distribution. No certified threshold: inf (always full depth)."""
    n = scores.shape[0]
    candidates = torch.unique(scores[:, :-1][torch.isfinite(scores[:, :-1])]).flip(0).tolist()
    chosen, tested = math.inf, 0
    for t in candidates:
        exit_at = first_exit(scores, t)
        k = int(disagree.gather(1, exit_at[:, None]).sum())
        tested += 1
        if binomial_cdf(k, n, epsilon) > delta:
            break
        chosen = t
    exit_at = first_exit(scores, chosen)
    agreement = 1.0 - float(disagree.gather(1, exit_at[:, None]).float().mean()) if n else 1.0
    return {"threshold": chosen, "calibration_agreement": agreement, "calibration_examples": n,
            "thresholds_tested": tested}


# --------------------------------------------------------------------------------------------
# A split's per-exit outputs, and what a threshold makes of them
# --------------------------------------------------------------------------------------------
@dataclass
class Trace:
    """Every exit's view of a split's examples (in the split's order): `scores` (n, R) stop
    scores, `disagree` (n, R) whether the answer there differs from the full-depth one (by more
    than the tolerance), `outputs[r]` the task type's predictions at exit r."""

    scores: torch.Tensor
    disagree: torch.Tensor
    outputs: list[list]
    first_recursion: int  # 1-based recursion of exit 0

    def exits_at(self, threshold: float) -> torch.Tensor:
        """(n,) exit index of each example under a confidence threshold."""
        return first_exit(self.scores, threshold)

    def predictions(self, exit_at: torch.Tensor) -> list:
        return [self.outputs[r][i] for i, r in enumerate(exit_at.tolist())]

    def summary(self, exit_at: torch.Tensor, num_recursions: int) -> dict:
        """Agreement with the full depth, mean recursions and the histogram of exit recursions
        (index j: examples that stopped after recursion j + 1)."""
        depth = exit_at + self.first_recursion
        histogram = torch.bincount(depth - 1, minlength=num_recursions).tolist()
        agree = 1.0 - float(self.disagree.gather(1, exit_at[:, None]).float().mean())
        return {"agreement": agree, "mean_recursions": float(depth.float().mean()), "exit_histogram": histogram}


@torch.no_grad()
def trace(model, kind, batches, size: int, target_scale: Any, tolerance: float) -> Trace:
    """Run every exit on a split. `batches` yields (indices, model inputs, features) covering the
    split's `size` examples."""
    model.eval()
    R = len(exit_recursions(model))
    scores = torch.empty(size, R)
    disagree = torch.zeros(size, R, dtype=torch.bool)
    outputs: list[list] = [[None] * size for _ in range(R)]
    for indices, batch, features in batches:
        logits = [z.float() for z in exit_logits(model, batch)]
        mask = token_mask(features, batch["input_ids"].shape[1])
        answers, previous = [], None
        for r, z in enumerate(logits):
            score, answer, _ = stop_scores(kind, z, mask, target_scale, previous)
            previous = answer
            answers.append(answer)
            scores[indices, r] = score
            for i, value in zip(indices, kind.predictions(z, features, target_scale)):
                outputs[r][i] = value
        for r, answer in enumerate(answers):
            disagree[indices, r] = kind.answer_distance(answer, answers[-1]) > tolerance
    return Trace(scores, disagree, outputs, exit_recursions(model)[0] + 1)
