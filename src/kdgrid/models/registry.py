"""Model kinds by name. A kind is one class with a `config_class` dataclass."""

from __future__ import annotations

import dataclasses

from kdgrid.errors import KdgridError
from kdgrid.models.cmlm import CMLM
from kdgrid.models.ctc import CTC
from kdgrid.models.dat import DAT
from kdgrid.models.ensemble import Ensemble
from kdgrid.models.flowseq import FlowSeq
from kdgrid.models.inat import INAT
from kdgrid.models.inst import InsertionTransformer
from kdgrid.models.levt import LevT
from kdgrid.models.moe import MoE
from kdgrid.models.nat import NAT
from kdgrid.models.transformer import Transformer

MODELS = {cls.kind: cls for cls in (Transformer, MoE, NAT, INAT, CMLM, LevT, InsertionTransformer, FlowSeq, CTC, DAT,
                                    Ensemble)}


def build(kind: str, config: dict):
    """Instantiate model `kind` from a config dict; unknown keys are an error, not ignored."""
    if kind not in MODELS:
        raise KdgridError(f"unknown model kind {kind!r}; known: {', '.join(sorted(MODELS))}")
    cls = MODELS[kind]
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise KdgridError(f"model kind {kind!r} has no option(s) {', '.join(unknown)}; "
                          f"its options are {', '.join(sorted(fields))}")
    try:
        return cls(cls.config_class(**config))
    except (TypeError, ValueError) as e:
        raise KdgridError(f"model kind {kind!r}: {e}") from None
