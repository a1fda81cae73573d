"""The recursion schedule of a recursive student: which shared layer each recursion applies
(`sharing_pattern`), which teacher layer it stands for (`check_layer_map`), and which of the
shared layer's linears a recursion may own a relaxation of (`RELAXATION_TARGETS`).

Pure Python (no torch): the typed configs, the model config and the objective all read it.
"""

from __future__ import annotations

from typing import Sequence

# the linears of a shared layer that relaxation (per-recursion LoRA and biases) can target
RELAXATION_TARGETS = ("query", "key", "value", "dense", "ffn", "ffn_output")

SHARING_PATTERNS = ("cycle", "sequence", "cycle_rev")


def sharing_pattern(num_recursions: int, unique_layers: int, sharing: str = "cycle") -> list[int]:
    """Which unique layer (0-based) each of the N recursions applies (Takase & Kiyono 2021).

    With N recursions over M unique layers (1 <= M <= N):
    - `cycle`:     recursion i applies layer i mod M                    N=6, M=3: ABCABC
    - `sequence`:  floor(i * M / N): each layer applied for a contiguous run of recursions,
                   the runs as equal as N allows                        N=6, M=3: AABBCC
    - `cycle_rev`: `cycle` for the first M * max(1, ceil(N/M) - 1) recursions, then the
                   layers in reverse order, M-1 - (i mod M)             N=6, M=3: ABCCBA
    Every pattern uses each of the M layers at least once; with M = 1 all are [0] * N and with
    M = N all are [0, 1, ..., N-1] (an unshared stack).
    """
    N, M = num_recursions, unique_layers
    if not 1 <= M <= N:
        raise ValueError(f"unique_layers must be between 1 and num_recursions ({N}), got {M}")
    if sharing == "cycle":
        return [i % M for i in range(N)]
    if sharing == "sequence":
        return [i * M // N for i in range(N)]
    if sharing == "cycle_rev":
        cycled = M * max(1, -(-N // M) - 1)
        return [i % M if i < cycled else M - 1 - i % M for i in range(N)]
    raise ValueError(f"sharing must be one of {', '.join(SHARING_PATTERNS)}, got {sharing!r}")


def uniform_layer_map(num_student: int, num_teacher: int) -> list[int]:
    """Student recursion i -> teacher layer (i+1)*T/S - 1 (0-based, rounded down): 2i+1 for 6 of 12."""
    if num_student > num_teacher:
        raise ValueError(
            f"layer map: the student has more recursions ({num_student}) than the teacher has layers "
            f"({num_teacher}); give an explicit loss.layer_map"
        )
    return [(i + 1) * num_teacher // num_student - 1 for i in range(num_student)]


def check_layer_map(layer_map: Sequence[int] | None, num_student: int, num_teacher: int) -> list[int]:
    """Validate (or default) a layer map: one 0-based teacher layer index per student recursion."""
    if layer_map is None:
        return uniform_layer_map(num_student, num_teacher)
    if isinstance(layer_map, (str, bytes)) or not isinstance(layer_map, Sequence):
        raise ValueError(f"layer map: expected a list of {num_student} teacher layer indices, got {layer_map!r}")
    layer_map = list(layer_map)
    if len(layer_map) != num_student:
        raise ValueError(
            f"layer map {layer_map}: has {len(layer_map)} entries but the student has {num_student} recursions "
            "(one 0-based teacher layer per recursion expected)"
        )
    for j in layer_map:
        if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < num_teacher:
            raise ValueError(
                f"layer map {layer_map}: entry {j!r} is not a teacher layer index in 0..{num_teacher - 1}"
            )
    return layer_map


def num_layers_and_heads(model) -> tuple[int, int]:
    """(layers or recursions, attention heads) of a model or a model config."""
    cfg = getattr(model, "config", model)
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)


def hidden_size(model) -> int:
    """H of a model or a model config."""
    return int(getattr(model, "config", model).hidden_size)
