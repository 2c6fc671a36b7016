"""Copy-weight initialization (Wibowo et al.): a student starts from its teacher's weights.

What is copied: the shared embedding table (vocab_size rows; an MoE keeps its expert start vectors apart),
each student encoder/decoder layer from one teacher layer, and the final norms of both stacks.
Everything the teacher does not have (an NAT's length head) keeps its random initialization.
Teacher-only parts (an MoE's expert start vectors and gate) are not copied.

Layer maps, for a teacher of T layers and a student of S <= T (encoder and decoder separately):
  every_other  student layer i <- teacher layer floor(i * T / S): evenly spaced, always starting
               at the layer that reads the embeddings (6 -> 3: 0, 2, 4; 4 -> 2: 0, 2; 6 -> 4: 0, 1, 3, 4)
  first        0 .. S-1
  last         T-S .. T-1
  even         student layer i <- teacher layer round(i * (T-1) / (S-1)), halves rounded up: evenly
               spaced with both ends kept, the layer that reads the embeddings and the one whose
               output the copied final norm reads (6 -> 3: 0, 3, 5; 6 -> 4: 0, 2, 3, 5; 4 -> 2: 0, 3).
               S == 1 has room for one end only: the last layer (T-1), whose output the copied
               final norm was trained on.
With S == T every mode copies every layer.
"""

from __future__ import annotations

from torch import nn

from kdgrid.errors import KdgridError
from kdgrid.kd.specs import LAYER_MAPS
from kdgrid.models.layers import Stack


def layer_map(teacher_layers: int, student_layers: int, mode: str) -> list[int]:
    """The teacher layer each student layer is copied from."""
    t, s = teacher_layers, student_layers
    if mode not in LAYER_MAPS:
        raise KdgridError(f"init layers must be one of {', '.join(LAYER_MAPS)}, got {mode!r}")
    if s == t:
        return list(range(t))
    if mode == "every_other":
        return [i * t // s for i in range(s)]
    if mode == "first":
        return list(range(s))
    if mode == "even":
        if s == 1:
            return [t - 1]
        # integer round-half-up of i * (t-1) / (s-1): no float error, no banker's rounding
        return [(2 * i * (t - 1) + (s - 1)) // (2 * (s - 1)) for i in range(s)]
    return list(range(t - s, t))


def _check_compatible(student, teacher) -> None:
    for who, m in (("student", student), ("teacher", teacher)):
        if not all(isinstance(getattr(m, part, None), Stack) for part in ("encoder", "decoder")) \
                or not hasattr(m, "embed"):
            raise KdgridError(f"init from teacher: the {who} (kind {m.kind!r}) has no shared "
                              "embedding + encoder/decoder stacks to copy")
    s, t = student.cfg, teacher.cfg
    for name, fix in (("d_model", "give the student the teacher's d_model"),
                      ("ffn", "give the student the teacher's ffn"),
                      ("heads", "give the student the teacher's heads"),
                      ("pre_norm", "give the student the teacher's pre_norm"),
                      ("vocab_size", "train both with the same vocabulary")):
        if getattr(s, name) != getattr(t, name):
            raise KdgridError(f"init from teacher: the student's {name} is {getattr(s, name)} but the "
                              f"teacher's is {getattr(t, name)}; {fix}, or drop students.<name>.init")
    for name in ("pad", "bos", "eos"):
        if getattr(s, name) != getattr(t, name):
            raise KdgridError(f"init from teacher: special id {name} is {getattr(s, name)} in the student "
                              f"but {getattr(t, name)} in the teacher; train both with the same vocabulary")
    for side in ("encoder", "decoder"):
        sl, tl = getattr(s, f"{side}_layers"), getattr(t, f"{side}_layers")
        if sl > tl:
            raise KdgridError(f"init from teacher: the student has {sl} {side} layers but the teacher "
                              f"only {tl}; give the student at most {tl}, or drop students.<name>.init")


def _copy(dst: nn.Module, src: nn.Module) -> None:
    """Parameters and buffers of `src` into the same-shaped `dst`, in place (dst keeps its device)."""
    try:
        dst.load_state_dict(src.state_dict())
    except RuntimeError as e:
        first = (str(e).splitlines() or [""])[0]
        raise KdgridError(f"init from teacher: a layer of the teacher does not fit the student ({first})") from None


def copy_from_teacher(student, teacher, layers: str, source: str | None = None) -> dict:
    """Copy the teacher's embedding table, mapped layers and final norms into `student` in place.
    Returns the record of what was copied: {"from", "layers", "map", "copied", "kept"}."""
    _check_compatible(student, teacher)
    vocab = student.cfg.vocab_size
    before = set(student.state_dict())
    copied: set[str] = set()
    emb = student.embed.table.weight
    emb.data.copy_(teacher.embed.table.weight.data[:vocab].to(emb.device, emb.dtype))
    copied.add("embed.table.weight")
    maps = {}
    for side in ("encoder", "decoder"):
        s_stack, t_stack = getattr(student, side), getattr(teacher, side)
        maps[side] = layer_map(len(t_stack.layers), len(s_stack.layers), layers)
        for i, j in enumerate(maps[side]):
            _copy(s_stack.layers[i], t_stack.layers[j])
            copied |= {f"{side}.layers.{i}.{k}" for k in s_stack.layers[i].state_dict()}
        _copy(s_stack.norm, t_stack.norm)
        copied |= {f"{side}.norm.{k}" for k in s_stack.norm.state_dict()}
    return {"from": source, "layers": layers, "map": maps, "copied": sorted(copied),
            "kept": sorted(before - copied)}
