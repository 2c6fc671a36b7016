"""Config `decoding`'s backend keys (backend, compute_type, ct2_search): their values, defaults and
how they reach the verbs, torch-free. kdgrid.ct2 decodes with them; the workflow (common.smk)
plans the jobs' --params with `verb_params` without importing torch."""

from __future__ import annotations

BACKENDS = ("torch", "ctranslate2")
COMPUTE_TYPES = ("default", "auto", "float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16",
                 "int16", "float16", "bfloat16")
SEARCHES = ("exact", "fast")  # decoding.ct2_search (kdgrid.ct2 says what each does)
# config `decoding` keys that choose the decoder, not options of its generate(), and their defaults
BACKEND_DEFAULTS = {"backend": "torch", "compute_type": "default", "ct2_search": "exact"}


def split_options(params: dict) -> tuple[dict, dict]:
    """(backend options with their defaults, the rest) of a verb's decoding --params."""
    backend = {k: params.get(k, v) for k, v in BACKEND_DEFAULTS.items()}
    return backend, {k: v for k, v in params.items() if k not in BACKEND_DEFAULTS}


def verb_params(decoding: dict, autoregressive: bool = True) -> dict:
    """Config `decoding` as the verbs' --params take it: the backend keys only where they differ
    from their defaults (a grid finished before the CTranslate2 backend keeps its jobs), only for
    the models CTranslate2 decodes (a NAT's or the MoE teacher's jobs ignore the backend), and
    CTranslate2's own keys only when it is the backend."""
    ct2 = autoregressive and decoding.get("backend", BACKEND_DEFAULTS["backend"]) == "ctranslate2"
    keep = lambda k, v: ct2 and BACKEND_DEFAULTS[k] != v if k in BACKEND_DEFAULTS else True  # noqa: E731
    return {k: v for k, v in decoding.items() if keep(k, v)}
