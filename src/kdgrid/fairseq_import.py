"""A fairseq Transformer checkpoint as a kdgrid Transformer, with a kdgrid vocabulary that segments
text as the fairseq setup did (its sentencepiece model) and numbers pieces as kdgrid does.

What is converted (and what is refused, by name): encoder-decoder `transformer` architectures with
shared embeddings (share_all_embeddings: one joined dictionary), pre- or post-norm (the same on
both sides), sinusoidal positions, ReLU feed-forward layers, scaled embeddings, no embedding layer
norm. Ids: fairseq numbers its dictionary <s> 0, <pad> 1, </s> 2, <unk> 3, then its symbols; kdgrid
pad 0, unk 1, <s> 2, eos 3, <mask> 4, then the same symbols, so the embedding rows are permuted.
kdgrid's extra <mask> row is masked out of the output layer (masked_outputs), so the converted
model's log-probabilities are fairseq's. fairseq's decoder starts from </s>: the converted model's
`bos` is eos (id 3). Its positions start at row padding_idx + 1 = 2 of the same sinusoidal table
(position_offset 2).

The vocabulary is a new sentencepiece model: fairseq's symbols in dictionary order after kdgrid's
five specials, each with its score and type from the fairseq setup's sentencepiece model, so text
is segmented as fairseq's setup did. A dictionary symbol the model lacks (a character outside its
coverage, which sentencepiece passes through as a piece and fairseq's dictionary numbers) is a
user-defined piece; fairseq's filler symbols (madeupword0000, ...) are unused pieces. Pieces the
model has but the dictionary lacks (in a BPE model, mostly merges no output keeps) follow as
unused pieces with their scores (sentencepiece's BPE merges through them), with zero embedding rows
masked out of the output layer. Byte-fallback models are refused.
"""

from __future__ import annotations

import re

import torch

from kdgrid.errors import KdgridError
from kdgrid.vocab import BOS, EOS, MASK, PAD, UNK

FAIRSEQ_SPECIALS = {"bos": 0, "pad": 1, "eos": 2, "unk": 3}
KDGRID_SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<mask>")
FILLER = re.compile(r"madeupword\d+")  # fairseq-preprocess --padding-factor's symbols
FIRST_SYMBOL = 4  # fairseq's first dictionary symbol; kdgrid's is 5 (after <mask>)
OFFSET = 2  # fairseq's sinusoidal positions start at padding_idx + 1


def read_dictionary(path) -> list[str]:
    """fairseq's dict.txt: one `symbol count [#fairseq:overwrite]` per line, in id order from 4."""
    from kdgrid.corpus import read_lines

    symbols = []
    for n, line in enumerate(read_lines(path), 1):
        parts = line.rstrip().split(" ")
        if len(parts) < 2:
            raise KdgridError(f"{path}:{n}: not a fairseq dictionary line (`symbol count`): {line[:60]!r}")
        if parts[0] in KDGRID_SPECIALS:
            raise KdgridError(f"{path}:{n}: the symbol {parts[0]!r} is one of kdgrid's specials; a dictionary "
                              "that numbers it again is not converted")
        symbols.append(parts[0])
    return symbols


def _setting(cfg, key, default=None):
    return cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)


def model_settings(checkpoint: dict, where: str) -> dict:
    """The architecture a checkpoint was trained with (cfg.model of fairseq >= 0.10, else args)."""
    cfg = (checkpoint.get("cfg") or {}).get("model") or checkpoint.get("args")
    if cfg is None:
        raise KdgridError(f"{where}: no model settings (cfg.model or args) in the checkpoint")
    get = lambda k, d=None: _setting(cfg, k, d)  # noqa: E731
    refused = [(get("share_all_embeddings") is not True, "share_all_embeddings (one joined dictionary)"),
               (get("encoder_learned_pos") or get("decoder_learned_pos"), "sinusoidal positions (not learned)"),
               (get("no_token_positional_embeddings"), "positional embeddings"),
               (get("no_scale_embedding"), "scaled embeddings"),
               (get("layernorm_embedding"), "no embedding layer norm"),
               (get("activation_fn", "relu") != "relu", "ReLU feed-forward layers"),
               (bool(get("encoder_normalize_before")) != bool(get("decoder_normalize_before")),
                "the same norm placement in encoder and decoder"),
               (get("encoder_embed_dim") != get("decoder_embed_dim"), "one model width"),
               (get("encoder_attention_heads") != get("decoder_attention_heads"), "one head count"),
               (get("encoder_ffn_embed_dim") != get("decoder_ffn_embed_dim"), "one feed-forward width"),
               (get("adaptive_softmax_cutoff") is not None, "a plain output layer"),
               (get("decoder_output_dim", get("decoder_embed_dim")) != get("decoder_embed_dim")
                or get("decoder_input_dim", get("decoder_embed_dim")) != get("decoder_embed_dim"),
                "decoder input and output dimensions equal to the embeddings'"),
               (get("cross_self_attention"), "plain cross-attention (no cross_self_attention)"),
               (get("encoder_normalize_before") and (get("no_decoder_final_norm") or get("no_encoder_final_norm")),
                "final layer norms (pre-norm)")]
    missing = [need for bad, need in refused if bad]
    if missing:
        raise KdgridError(f"{where}: kdgrid converts fairseq Transformers with {'; '.join(missing)}; this "
                          f"checkpoint ({get('arch', get('_name'))}) has other settings")
    return {"d_model": get("encoder_embed_dim"), "ffn": get("encoder_ffn_embed_dim"),
            "heads": get("encoder_attention_heads"), "encoder_layers": get("encoder_layers"),
            "decoder_layers": get("decoder_layers"), "dropout": float(get("dropout", 0.1)),
            "attention_dropout": float(get("attention_dropout", 0.0)),
            "pre_norm": bool(get("encoder_normalize_before")), "position_offset": OFFSET}


class _Reads(dict):
    """fairseq's weights, noting each one read (every weight must find its place); a weight the
    conversion needs but the checkpoint lacks is an error that names it."""

    def __init__(self, weights: dict, used: set):
        super().__init__(weights)
        self.used = used

    def __getitem__(self, key):
        if key not in self:
            raise KdgridError(f"the checkpoint has no weight {key!r} (another architecture's checkpoint?)")
        self.used.add(key)
        return super().__getitem__(key)


def _attention(out: dict, w: dict, mine: str, theirs: str) -> None:
    out[f"{mine}.q.weight"], out[f"{mine}.q.bias"] = w[f"{theirs}.q_proj.weight"], w[f"{theirs}.q_proj.bias"]
    out[f"{mine}.kv.weight"] = torch.cat([w[f"{theirs}.k_proj.weight"], w[f"{theirs}.v_proj.weight"]])
    out[f"{mine}.kv.bias"] = torch.cat([w[f"{theirs}.k_proj.bias"], w[f"{theirs}.v_proj.bias"]])
    out[f"{mine}.out.weight"], out[f"{mine}.out.bias"] = w[f"{theirs}.out_proj.weight"], w[f"{theirs}.out_proj.bias"]


def _norm(out: dict, w: dict, mine: str, theirs: str) -> None:
    out[f"{mine}.weight"], out[f"{mine}.bias"] = w[f"{theirs}.weight"], w[f"{theirs}.bias"]


def state_dict(w: dict, settings: dict, symbols: int, extra: int = 0) -> dict:
    """kdgrid's Transformer weights from fairseq's (names as in kdgrid.models.layers); `extra`
    zero rows after the symbols (the vocabulary's appended unused pieces)."""
    table = w["encoder.embed_tokens.weight"]
    if table.size(0) != FIRST_SYMBOL + symbols:
        raise KdgridError(f"the checkpoint's embedding table has {table.size(0)} rows but the dictionary "
                          f"{FIRST_SYMBOL} specials and {symbols} symbols")
    rows = torch.zeros(FIRST_SYMBOL + 1 + symbols + extra, table.size(1), dtype=table.dtype)
    for mine, theirs in ((PAD, "pad"), (UNK, "unk"), (BOS, "bos"), (EOS, "eos")):
        rows[mine] = table[FAIRSEQ_SPECIALS[theirs]]
    rows[MASK + 1: MASK + 1 + symbols] = table[FIRST_SYMBOL:]  # <mask> and `extra`: zero rows, masked
    out = {"embed.table.weight": rows}
    for side in ("encoder", "decoder"):
        for i in range(settings[f"{side}_layers"]):
            mine, theirs = f"{side}.layers.{i}", f"{side}.layers.{i}"
            _attention(out, w, f"{mine}.self_attn", f"{theirs}.self_attn")
            _norm(out, w, f"{mine}.norms.0", f"{theirs}.self_attn_layer_norm")
            if side == "decoder":
                _attention(out, w, f"{mine}.cross_attn", f"{theirs}.encoder_attn")
                _norm(out, w, f"{mine}.norms.1", f"{theirs}.encoder_attn_layer_norm")
            _norm(out, w, f"{mine}.norms.{2 if side == 'decoder' else 1}", f"{theirs}.final_layer_norm")
            for fc in ("fc1", "fc2"):
                out[f"{mine}.ffn.{fc}.weight"], out[f"{mine}.ffn.{fc}.bias"] = w[f"{theirs}.{fc}.weight"], \
                    w[f"{theirs}.{fc}.bias"]
        if settings["pre_norm"]:
            _norm(out, w, f"{side}.norm", f"{side}.layer_norm")
    return out


def vocabulary(spm_bytes: bytes, symbols: list[str]) -> tuple[bytes, dict]:
    """A kdgrid sentencepiece model (see the module's docstring) and a record of what it holds:
    the ids after the dictionary's symbols (`appended`) are the model's own pieces the dictionary
    lacks, which the output layer masks out."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    theirs = pb.ModelProto()
    theirs.ParseFromString(spm_bytes)
    if theirs.trainer_spec.byte_fallback:
        raise KdgridError("the sentencepiece model uses byte_fallback; kdgrid does not convert byte-fallback "
                          "vocabularies (their 256 byte pieces would need fairseq's ids)")
    known = {p.piece: p for p in theirs.pieces}
    mine = pb.ModelProto()
    mine.CopyFrom(theirs)
    del mine.pieces[:]
    specials = (("<pad>", pb.ModelProto.SentencePiece.CONTROL), ("<unk>", pb.ModelProto.SentencePiece.UNKNOWN),
                ("<s>", pb.ModelProto.SentencePiece.CONTROL), ("</s>", pb.ModelProto.SentencePiece.CONTROL),
                ("<mask>", pb.ModelProto.SentencePiece.CONTROL))
    for piece, kind in specials:
        mine.pieces.add(piece=piece, score=0.0, type=kind)
    piece = pb.ModelProto.SentencePiece
    piece_types, counts = (piece.NORMAL, piece.USER_DEFINED), {"user_defined": 0, "fillers": 0}
    for symbol in symbols:
        p = known.get(symbol)
        if p is not None and p.type in piece_types:
            mine.pieces.add(piece=symbol, score=p.score, type=p.type)
        elif FILLER.fullmatch(symbol):  # never in text, never produced
            counts["fillers"] += 1
            mine.pieces.add(piece=symbol, score=0.0, type=piece.UNUSED)
        else:  # text sentencepiece passes through (outside its coverage): fairseq numbers it
            counts["user_defined"] += 1
            mine.pieces.add(piece=symbol, score=0.0, type=piece.USER_DEFINED)
    listed = set(symbols)
    appended = [p for p in theirs.pieces if p.type in piece_types and p.piece not in listed]
    for p in appended:  # BPE merges through them; unused: never an output piece
        mine.pieces.add(piece=p.piece, score=p.score, type=piece.UNUSED)
    spec = mine.trainer_spec
    spec.pad_id, spec.unk_id, spec.bos_id, spec.eos_id = PAD, UNK, BOS, EOS
    spec.pad_piece, spec.unk_piece, spec.bos_piece, spec.eos_piece = "<pad>", "<unk>", "<s>", "</s>"
    spec.vocab_size = len(mine.pieces)
    return mine.SerializeToString(), {"symbols": len(symbols), "symbols_user_defined": counts["user_defined"],
                                      "filler_symbols": counts["fillers"],
                                      "sentencepiece_pieces_not_in_dictionary": len(appended)}


def convert(checkpoint_path, dict_path, spm_path):
    """(kdgrid Transformer, its vocabulary's sentencepiece bytes, a record of the conversion)."""
    from pathlib import Path

    from kdgrid.models import build
    from kdgrid.vocab import Vocab

    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure: not a readable checkpoint
        raise KdgridError(f"{checkpoint_path}: not a readable fairseq checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise KdgridError(f"{checkpoint_path}: not a fairseq checkpoint (no `model` weights)")
    settings = model_settings(checkpoint, str(checkpoint_path))
    symbols = read_dictionary(dict_path)
    vocab_bytes, record = vocabulary(Path(spm_path).read_bytes(), symbols)
    vocab = Vocab(vocab_bytes, f"{spm_path} + {dict_path}")
    extra = record["sentencepiece_pieces_not_in_dictionary"]
    first_extra = MASK + 1 + len(symbols)
    # decoding starts from eos, as fairseq's decoder does; <mask> and the appended pieces are out of
    # the output layer (fairseq's has no such rows)
    masked = [MASK, *range(first_extra, first_extra + extra)]
    model = build("transformer", {**settings, **vocab.model_ids(), "bos": EOS, "masked_outputs": masked})
    used: set = set()
    theirs = {k: v.float() for k, v in checkpoint["model"].items()}
    weights = state_dict(_Reads(theirs, used), settings, len(symbols), extra)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    unread = sorted(k for k in theirs if k not in used and not k.endswith((".version", "_float_tensor"))
                    and k not in ("decoder.embed_tokens.weight", "decoder.output_projection.weight"))  # tied
    if missing or unexpected or unread:
        raise KdgridError(f"{checkpoint_path}: weights do not map onto kdgrid's Transformer (missing "
                          f"{missing[:3]}, unexpected {unexpected[:3]}, fairseq weights not converted {unread[:3]})")
    return model.eval(), vocab_bytes, {**record, "settings": settings}
