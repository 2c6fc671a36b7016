"""Self-describing model files: kind, config, vocabulary and provenance travel with the weights.

A trained model file can be loaded (and used to translate) with nothing else: it holds the
sentencepiece model bytes it was trained with, and records the seed and training settings.
"""

from __future__ import annotations

import dataclasses

import torch

from kdgrid.errors import KdgridError, atomic_output
from kdgrid.models import build

FORMAT = "kdgrid-model/1"


def save_model(path, model, meta: dict) -> None:
    payload = {"format": FORMAT, "kind": model.kind, "config": dataclasses.asdict(model.cfg),
               "state_dict": model.state_dict(), "meta": meta}
    with atomic_output(path, "path") as tmp:
        torch.save(payload, tmp)


def read_payload(path, fmt: str, what: str, device: str = "cpu") -> dict:
    """A saved dict of format `fmt`, or an error that names the file and says how to recover
    (`what` names the kind of file in messages)."""
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except FileNotFoundError:
        raise KdgridError(f"{path}: {what} not found") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise KdgridError(f"{path}: not a readable {what} ({type(e).__name__}: {e}); "
                          "retrain it (rerun its rule)") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise KdgridError(f"{path}: not a kdgrid {what} (format {fmt} expected)")
    return payload


def load_model(path, device: str = "cpu"):
    payload = read_payload(path, FORMAT, "model file", device)
    try:
        model = build(payload["kind"], payload["config"])
        model.load_state_dict(_renamed(payload["state_dict"]))
        meta = payload["meta"]
    except (KeyError, TypeError, RuntimeError) as e:  # a missing field, or weights of another shape
        first = (str(e).splitlines() or [""])[0]  # load_state_dict lists every tensor: keep one line
        raise KdgridError(f"{path}: damaged kdgrid model file ({type(e).__name__}: {first}); "
                          "retrain it (rerun its rule)") from None
    model.eval()
    return model.to(device), meta


# Weights renamed since kdgrid-model/1 files were first written: old name prefix -> new. Files of
# any kdgrid version keep loading (the NAT's length classifier moved into the shared LengthHead).
RENAMED = {"length_head.": "length.proj."}


def _renamed(state_dict: dict) -> dict:
    out = {}
    for key, value in state_dict.items():
        for old, new in RENAMED.items():
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out


def load_for_decoding(model_path, vocab_path, device="cpu"):
    """(model, meta, vocab), after checking the model was trained with this vocabulary."""
    from kdgrid.vocab import Vocab

    model, meta = load_model(model_path, device)
    v = Vocab.load(vocab_path)
    if meta.get("vocab_sha256") != v.sha256:
        raise KdgridError(f"{model_path} was trained with a different vocabulary than {vocab_path}; "
                          "rerun its training rule")
    return model, meta, v
