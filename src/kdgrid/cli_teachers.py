"""Teachers made from other models (issue: teachers from anywhere): `ensemble` joins trained
teachers into one decoder whose model file holds them all (kdgrid.models.ensemble)."""

from __future__ import annotations

from kdgrid.errors import KdgridError, json_option

VERBS = ("ensemble",)


def cmd_ensemble(a) -> None:
    from kdgrid.checkpoint import load_model, save_model
    from kdgrid.importers import sha256_of
    from kdgrid.models.configs import ENSEMBLE_COMBINES, ENSEMBLE_MEMBER_KINDS
    from kdgrid.models.ensemble import Ensemble
    from kdgrid.vocab import Vocab

    params = json_option(a.params, "--params")
    unknown = sorted(set(params) - {"combine"})
    if unknown:
        raise KdgridError(f"--params: unknown key(s) {', '.join(unknown)}; an ensemble takes combine "
                          f"({' | '.join(ENSEMBLE_COMBINES)})")
    combine = params.get("combine", ENSEMBLE_COMBINES[0])
    vocab = Vocab.load(a.vocab)
    members, record = [], []
    for path in a.members:
        model, meta = load_model(path)
        if model.kind not in ENSEMBLE_MEMBER_KINDS:
            raise KdgridError(f"{path}: a model of kind {model.kind!r}; an ensemble takes "
                              f"{', '.join(ENSEMBLE_MEMBER_KINDS)} members")
        if meta.get("vocab_sha256") != vocab.sha256:
            raise KdgridError(f"{path} was trained with another vocabulary than {a.vocab}; the members of an "
                              "ensemble share the grid's vocabulary (rerun its training rule)")
        members.append(model)
        record.append({"model": str(path), "sha256": sha256_of(path), "teacher": meta.get("teacher"),
                       "updates": meta.get("updates"), "seed": meta.get("seed")})
    try:
        ensemble = Ensemble.of(members, combine)
    except ValueError as e:
        raise KdgridError(f"--params / --members: {e}") from None
    meta = {**json_option(a.labels, "--labels"), "vocab_sha256": vocab.sha256, "vocab_model": vocab.proto,
            "members": record, "combine": combine}
    save_model(a.out, ensemble, meta)


def add_verbs(verb) -> None:
    """Register the verbs with kdgrid.cli's `verb(name, fn, help)`."""
    p = verb("ensemble", cmd_ensemble, "one teacher from trained ones: their next-token distributions combined")
    p.add_argument("--members", nargs="+", required=True, help="the members' model files (kind transformer)")
    p.add_argument("--vocab", required=True, help="the vocabulary every member was trained with")
    p.add_argument("--params", default="{}", help='{"combine": "logprob_mean" | "prob_mean"}')
    p.add_argument("--labels", default="{}")
    p.add_argument("--out", required=True)
