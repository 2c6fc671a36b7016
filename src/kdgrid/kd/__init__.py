"""Training wrappers: how a student learns from its teacher, apart from the data it is given.

  init  copy-weight initialization from a teacher (kdgrid.kd.init_copy)
  kd    word-level KD against a frozen teacher (kdgrid.kd.word), optionally online: the teacher
        carries low-rank adapters trained with the student (kdgrid.kd.online)
  glance  glancing training, GLAT (kdgrid.kd.glance): no teacher, the gold target glanced at

`prepare` is the one entry: `kdgrid train` calls it after the seeded random initialization and
before the Trainer, and stores its record in the model file's meta["wrapper"] (`kdgrid evaluate`
copies it, less init's parameter lists, into the cell's scores.json: `cell_record`). Model files
stay free of KD flags: the output is always the plain student.

The settings (kdgrid.kd.specs) import no torch, so the workflow plans with them; the wrappers
(init_copy, losses, word, online) import torch and load on first use.
"""

from __future__ import annotations

import importlib

from kdgrid.errors import KdgridError
from kdgrid.kd.specs import GlanceSpec, InitSpec, KDSpec, OnlineSpec, as_dict, defaults, parse_wrap

__all__ = ["GlanceSpec", "Glancing", "InitSpec", "KDSpec", "OnlineSpec", "OnlineKD", "WordKD", "cell_record",
           "copy_from_teacher", "defaults", "layer_map", "parse_wrap", "prepare", "token_kl"]
# the names the torch-backed submodules give, by submodule (imported on first use)
LAZY = {"copy_from_teacher": "init_copy", "layer_map": "init_copy", "token_kl": "losses",
        "ADAPTER_TARGETS": "online", "OnlineKD": "online", "WordKD": "word", "choices": "word",
        "Glancing": "glance"}


def __getattr__(name: str):
    if name in LAZY:
        return getattr(importlib.import_module(f"{__name__}.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


LOSS_FORMULA = {"fkl": "T^2 * KL(p_teacher || q_student)",
                "rkl": "T^2 * KL(q_student || p_teacher)",
                "mix": "T^2 * (mix_weight * KL(p_teacher || q_student) "
                       "+ (1 - mix_weight) * KL(q_student || p_teacher))"}
TOTAL_FORMULA = "(1 - alpha) * word_ce + alpha * kd + the student's other terms (length loss)"
ADAPTER_OBJECTIVE = ("adapter loss = CE(adapted teacher) + lambda * T^2 * KL(p_teacher || q_student), "
                     "student detached (mode-seeking for the teacher)")


def _teacher(path, flag: str, device, vocab_sha256: str | None):
    from kdgrid.checkpoint import load_model
    from kdgrid.importers import sha256_of

    teacher, meta = load_model(path, device)
    if vocab_sha256 is not None and meta.get("vocab_sha256") != vocab_sha256:
        raise KdgridError(f"{flag} {path}: that teacher was trained with another vocabulary than this "
                          "student; train both with the same one")
    return teacher, {"file": str(path), "sha256": sha256_of(path), "kind": teacher.kind}


def prepare(model, wrap: dict | None, init_teacher: str | None, kd_teacher: str | None, device,
            vocab_sha256: str | None = None):
    """(the model the Trainer trains, the record for meta["wrapper"] ({} without wrappers)).

    wrap: the --wrap object ({"init": {...}, "kd": {...}, "glance": {...}}, each optional; see
    kdgrid.kd.specs). init_teacher / kd_teacher: model files (--init-teacher, --kd-teacher). The
    init copy happens in place on `model`; kd returns a WordKD/OnlineKD around it, glance a
    Glancing (kd and glance do not compose). vocab_sha256: the student's vocabulary, which each
    teacher file must have been trained with (None: not checked)."""
    from kdgrid.kd.init_copy import copy_from_teacher
    from kdgrid.kd.online import ADAPTER_TARGETS, OnlineKD
    from kdgrid.kd.word import WordKD, choices

    init, kd, glance = parse_wrap(wrap)
    if kd is not None and glance is not None:
        raise KdgridError("--wrap: kd and glance do not compose (word-level KD scores the plain model's "
                          "positions; glancing feeds some of them the gold tokens): choose one")
    for spec, path, flag, key in ((init, init_teacher, "--init-teacher", "init"),
                                  (kd, kd_teacher, "--kd-teacher", "kd")):
        if spec is not None and not path:
            raise KdgridError(f"--wrap has {key} but no {flag} PATH was given: pass the teacher's model file")
        if spec is None and path:
            raise KdgridError(f"{flag} {path} was given but --wrap has no {key} part")
    record = {}
    if init is not None:
        teacher, source = _teacher(init_teacher, "--init-teacher", device, vocab_sha256)
        copied = copy_from_teacher(model, teacher, init.layers, source=init.teacher or str(init_teacher))
        record["init"] = {**copied, "teacher_file": source["file"], "teacher_sha256": source["sha256"],
                          "teacher_kind": source["kind"]}
        del teacher
    if kd is not None:
        teacher, source = _teacher(kd_teacher, "--kd-teacher", device, vocab_sha256)
        model = (OnlineKD if kd.online is not None else WordKD)(model, teacher, kd)  # checks the kinds
        record["kd"] = {**as_dict(kd), "teacher_file": source["file"], "teacher_sha256": source["sha256"],
                        "teacher_kind": source["kind"], "kd_formula": LOSS_FORMULA[kd.loss],
                        "total_formula": TOTAL_FORMULA, **choices(model.kind, source["kind"]),
                        **({"adapter_objective": ADAPTER_OBJECTIVE, "adapter_targets": ADAPTER_TARGETS}
                           if kd.online is not None else {})}
    if glance is not None:
        from kdgrid.kd.glance import Glancing

        model = Glancing(model, glance)  # checks the kind
        record["glance"] = model.record()
    return model, record


def cell_record(wrapper: dict) -> dict:
    """meta["wrapper"] for a cell's scores.json: everything but init's lists of copied and kept
    parameter names (the model file keeps them), which would bury the settings."""
    out = dict(wrapper)
    if "init" in out:
        out["init"] = {k: v for k, v in out["init"].items() if k not in ("copied", "kept")}
    return out
