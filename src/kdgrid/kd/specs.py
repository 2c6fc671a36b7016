"""The `--wrap` settings of a student: what each key means and its default, in one place.

`--wrap` is a JSON object with three optional parts:

    {"init":   {"from": "<teacher name>", "layers": "every_other"},   (or first | last | even)
     "kd":     {"teacher": "<teacher name>", "loss": "fkl", "alpha": 0.5, "temperature": 1.0,
                "mix_weight": 0.5,
                "online": {"rank": 8, "lr": 0.001, "lambda": 1.0}},
     "glance": {"p_start": 0.5, "p_end": 0.3, "anneal_updates": 0}}    (GLAT; 0: the run's max_updates)

This module imports no torch: the workflow's config check fills a student's --wrap from
`wrap_defaults` and checks its kind against KD_KINDS / INIT_KINDS from here. The outside names
are the keys above. Two of them are Python keywords, so the dataclass fields differ:
init's "from" is the field `teacher`, online's "lambda" is the field `weight` (`outside_key`).
The teacher names are labels for the record only: the files come from --init-teacher/--kd-teacher.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from kdgrid.errors import KdgridError

LAYER_MAPS = ("every_other", "first", "last", "even")  # kdgrid.kd.init_copy.layer_map says each
KD_LOSSES = ("fkl", "rkl", "mix")
# Word-level KD matches the teacher's distribution over the token at each target position: kinds
# whose positions align 1:1 with the target tokens, i.e. whose model class has `loss_terms`
# (kdgrid.models.terms; its `distilled_positions` says how they align with the teacher's). Kept here
# for planning without torch; tests/test_kd_terms.py checks it against the model classes.
KD_KINDS = ("cmlm", "nat", "transformer")
# init copies the Transformer body every one of these kinds builds on (kdgrid.models.layers.
# EncoderDecoder: embeddings, encoder and decoder stacks); a kind's own parts (length head,
# FlowSeq's flows, ...) start fresh. tests/test_student_kd_workflow.py checks the models against it.
INIT_KINDS = ("cmlm", "ctc", "dat", "flowseq", "inat", "inst", "levt", "nat", "transformer")
# Glancing training (GLAT, kdgrid.kd.glance) takes kinds whose model class sets glance_sampling and
# offers glance_start / glance_first and a loss with a `glance` argument: one parallel pass whose
# decoder inputs can take gold embeddings. tests/test_glance.py checks the model classes against it.
GLANCE_KINDS = ("ctc", "dat", "nat")


@dataclass(frozen=True)
class InitSpec:
    """Copy-weight initialization (Wibowo et al.): which teacher layers a shallower student takes."""

    teacher: str | None = field(default=None, metadata={"key": "from"})
    layers: str = "every_other"

    def __post_init__(self):
        _check(self.teacher is None or isinstance(self.teacher, str), "init.from", "a teacher name",
               self.teacher)
        _check(self.layers in LAYER_MAPS, "init.layers", " | ".join(LAYER_MAPS), self.layers)


@dataclass(frozen=True)
class OnlineSpec:
    """Online KD (Rao et al.): a zero-initialized low-rank adapter on the frozen teacher."""

    rank: int = 8
    lr: float = 0.001  # the adapter's own peak learning rate (same warmup/inverse-sqrt schedule)
    weight: float = field(default=1.0, metadata={"key": "lambda"})  # pull towards the student

    def __post_init__(self):
        _check(_is_int(self.rank) and self.rank >= 1, "kd.online.rank", "a positive integer", self.rank)
        _check(_is_number(self.lr) and self.lr > 0, "kd.online.lr", "a positive number", self.lr)
        _check(_is_number(self.weight) and self.weight >= 0, "kd.online.lambda", "a number >= 0",
               self.weight)


@dataclass(frozen=True)
class KDSpec:
    """Word-level KD: loss = (1 - alpha) * word CE + alpha * T^2 * divergence(teacher, student)."""

    teacher: str | None = None
    loss: str = "fkl"  # fkl: KL(p_teacher || q_student); rkl: KL(q_student || p_teacher); mix
    alpha: float = 0.5
    temperature: float = 1.0
    mix_weight: float = 0.5  # mix = mix_weight * fkl + (1 - mix_weight) * rkl
    online: OnlineSpec | None = None

    def __post_init__(self):
        _check(self.teacher is None or isinstance(self.teacher, str), "kd.teacher", "a teacher name",
               self.teacher)
        _check(self.loss in KD_LOSSES, "kd.loss", " | ".join(KD_LOSSES), self.loss)
        _check(_is_number(self.alpha) and 0 <= self.alpha <= 1, "kd.alpha", "a number in [0, 1]",
               self.alpha)
        _check(_is_number(self.temperature) and self.temperature > 0, "kd.temperature",
               "a positive number", self.temperature)
        _check(_is_number(self.mix_weight) and 0 <= self.mix_weight <= 1, "kd.mix_weight",
               "a number in [0, 1]", self.mix_weight)


@dataclass(frozen=True)
class GlanceSpec:
    """Glancing training (Qian et al. 2021): the glancing ratio p falls linearly from p_start to
    p_end over anneal_updates updates (0: the run's max_updates), then stays at p_end."""

    p_start: float = 0.5
    p_end: float = 0.3
    anneal_updates: int = 0

    def __post_init__(self):
        for key in ("p_start", "p_end"):
            value = getattr(self, key)
            _check(_is_number(value) and 0 <= value <= 1, f"glance.{key}", "a number in [0, 1]", value)
        _check(_is_int(self.anneal_updates) and self.anneal_updates >= 0, "glance.anneal_updates",
               "an integer >= 0 (0: the run's max_updates)", self.anneal_updates)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check(ok: bool, key: str, wanted: str, got) -> None:
    if not ok:
        raise KdgridError(f"--wrap: {key} must be {wanted}, got {got!r}")


def outside_key(f: dataclasses.Field) -> str:
    """The outside (JSON) name of a spec field."""
    return f.metadata.get("key", f.name)


def _from_dict(cls, value, where: str):
    if not isinstance(value, dict):
        raise KdgridError(f"--wrap: {where} must be a JSON object, got {value!r}")
    by_key = {outside_key(f): f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(by_key))
    if unknown:
        raise KdgridError(f"--wrap: unknown key {where}.{unknown[0]}; known: {', '.join(sorted(by_key))}")
    return {by_key[k]: v for k, v in value.items()}


def parse_wrap(wrap: dict | None) -> tuple[InitSpec | None, KDSpec | None, GlanceSpec | None]:
    """The validated specs of a `--wrap` object (each part may be absent)."""
    wrap = wrap or {}
    if not isinstance(wrap, dict):
        raise KdgridError(f"--wrap must be a JSON object with keys init, kd and/or glance, got {type(wrap).__name__}")
    unknown = sorted(set(wrap) - {"init", "kd", "glance"})
    if unknown:
        raise KdgridError(f"--wrap: unknown key {unknown[0]}; known: glance, init, kd")
    init = InitSpec(**_from_dict(InitSpec, wrap["init"], "init")) if "init" in wrap else None
    kd = None
    if "kd" in wrap:
        fields = _from_dict(KDSpec, wrap["kd"], "kd")
        if fields.get("online") is not None:
            fields["online"] = OnlineSpec(**_from_dict(OnlineSpec, fields["online"], "kd.online"))
        kd = KDSpec(**fields)
    glance = GlanceSpec(**_from_dict(GlanceSpec, wrap["glance"], "glance")) if "glance" in wrap else None
    return init, kd, glance


def as_dict(spec) -> dict:
    """A spec with its outside key names (as --wrap spells them), nested specs included."""
    out = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        out[outside_key(f)] = as_dict(value) if dataclasses.is_dataclass(value) else value
    return out


def defaults() -> dict:
    """Every default under its outside name: {"init": {...}, "kd": {...}, "online": {...},
    "glance": {...}} ("online" is what kd.online: {} resolves to)."""
    return {"init": as_dict(InitSpec()), "kd": as_dict(KDSpec()), "online": as_dict(OnlineSpec()),
            "glance": as_dict(GlanceSpec())}


def wrap_defaults() -> dict:
    """The defaults the workflow spells out in a student's --wrap (so that its job's command says
    exactly how it learned): `defaults` less the teacher labels and kd's absent online part."""
    return {part: {k: v for k, v in settings.items() if v is not None} for part, settings in defaults().items()}
