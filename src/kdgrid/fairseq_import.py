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
five specials, each with its score and type from the fairseq setup's sentencepiece model. Pieces
that model has but the dictionary lacks are left out (fairseq maps them to <unk>; sentencepiece
then segments such text further): their number is in the record.
"""

from __future__ import annotations

import torch

from kdgrid.errors import KdgridError
from kdgrid.vocab import BOS, EOS, MASK, PAD, UNK

FAIRSEQ_SPECIALS = {"bos": 0, "pad": 1, "eos": 2, "unk": 3}
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
               (get("adaptive_softmax_cutoff") is not None, "a plain output layer")]
    missing = [need for bad, need in refused if bad]
    if missing:
        raise KdgridError(f"{where}: kdgrid converts fairseq Transformers with {'; '.join(missing)}; this "
                          f"checkpoint ({get('arch', get('_name'))}) has other settings")
    return {"d_model": get("encoder_embed_dim"), "ffn": get("encoder_ffn_embed_dim"),
            "heads": get("encoder_attention_heads"), "encoder_layers": get("encoder_layers"),
            "decoder_layers": get("decoder_layers"), "dropout": float(get("dropout", 0.1)),
            "attention_dropout": float(get("attention_dropout", 0.0)),
            "pre_norm": bool(get("encoder_normalize_before")), "position_offset": OFFSET}


def _attention(out: dict, w: dict, mine: str, theirs: str) -> None:
    out[f"{mine}.q.weight"], out[f"{mine}.q.bias"] = w[f"{theirs}.q_proj.weight"], w[f"{theirs}.q_proj.bias"]
    out[f"{mine}.kv.weight"] = torch.cat([w[f"{theirs}.k_proj.weight"], w[f"{theirs}.v_proj.weight"]])
    out[f"{mine}.kv.bias"] = torch.cat([w[f"{theirs}.k_proj.bias"], w[f"{theirs}.v_proj.bias"]])
    out[f"{mine}.out.weight"], out[f"{mine}.out.bias"] = w[f"{theirs}.out_proj.weight"], w[f"{theirs}.out_proj.bias"]


def _norm(out: dict, w: dict, mine: str, theirs: str) -> None:
    out[f"{mine}.weight"], out[f"{mine}.bias"] = w[f"{theirs}.weight"], w[f"{theirs}.bias"]


def state_dict(w: dict, settings: dict, symbols: int) -> dict:
    """kdgrid's Transformer weights from fairseq's (names as in kdgrid.models.layers)."""
    table = w["encoder.embed_tokens.weight"]
    if table.size(0) != FIRST_SYMBOL + symbols:
        raise KdgridError(f"the checkpoint's embedding table has {table.size(0)} rows but the dictionary "
                          f"{FIRST_SYMBOL} specials and {symbols} symbols")
    rows = torch.zeros(FIRST_SYMBOL + 1 + symbols, table.size(1), dtype=table.dtype)
    for mine, theirs in ((PAD, "pad"), (UNK, "unk"), (BOS, "bos"), (EOS, "eos")):
        rows[mine] = table[FAIRSEQ_SPECIALS[theirs]]
    rows[MASK + 1:] = table[FIRST_SYMBOL:]  # <mask>: a zero row, masked out of the output layer
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
    """A kdgrid sentencepiece model: the five specials, then the dictionary's symbols in order,
    each with the fairseq setup's score and type (a symbol its sentencepiece model lacks: unused,
    never produced by segmentation); the model's other pieces are dropped (counted)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    theirs = pb.ModelProto()
    theirs.ParseFromString(spm_bytes)
    known = {p.piece: p for p in theirs.pieces}
    mine = pb.ModelProto()
    mine.CopyFrom(theirs)
    del mine.pieces[:]
    specials = (("<pad>", pb.ModelProto.SentencePiece.CONTROL), ("<unk>", pb.ModelProto.SentencePiece.UNKNOWN),
                ("<s>", pb.ModelProto.SentencePiece.CONTROL), ("</s>", pb.ModelProto.SentencePiece.CONTROL),
                ("<mask>", pb.ModelProto.SentencePiece.CONTROL))
    for piece, kind in specials:
        mine.pieces.add(piece=piece, score=0.0, type=kind)
    unused, piece_types = 0, (pb.ModelProto.SentencePiece.NORMAL, pb.ModelProto.SentencePiece.USER_DEFINED)
    for symbol in symbols:
        p = known.get(symbol)
        normal = p is not None and p.type in piece_types
        unused += not normal
        mine.pieces.add(piece=symbol, score=p.score if normal else 0.0,
                        type=p.type if normal else pb.ModelProto.SentencePiece.UNUSED)
    spec = mine.trainer_spec
    spec.pad_id, spec.unk_id, spec.bos_id, spec.eos_id = PAD, UNK, BOS, EOS
    spec.pad_piece, spec.unk_piece, spec.bos_piece, spec.eos_piece = "<pad>", "<unk>", "<s>", "</s>"
    spec.vocab_size = len(mine.pieces)
    listed = set(symbols)
    dropped = sum(1 for p in theirs.pieces if p.type in piece_types and p.piece not in listed)
    return mine.SerializeToString(), {"symbols": len(symbols), "symbols_not_in_sentencepiece": unused,
                                      "sentencepiece_pieces_not_in_dictionary": dropped}


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
    # decoding starts from eos, as fairseq's decoder does; <mask> is out of the output layer
    model = build("transformer", {**settings, **vocab.model_ids(), "bos": EOS, "masked_outputs": [MASK]})
    weights = state_dict({k: v.float() for k, v in checkpoint["model"].items()}, settings, len(symbols))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise KdgridError(f"{checkpoint_path}: weights do not map onto kdgrid's Transformer (missing "
                          f"{missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), vocab_bytes, {**record, "settings": settings}
