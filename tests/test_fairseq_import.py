"""A fairseq Transformer as a kdgrid teacher (kdgrid.fairseq_import): on tiny checkpoints made by
fairseq's own classes (tests/data/fairseq_tiny/make.py, pre- and post-norm), the converted model's
teacher-forced log-probabilities and greedy outputs are fairseq's (reference.json, computed by
fairseq), with torch and with the CTranslate2 backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdgrid.errors import KdgridError
from kdgrid.fairseq_import import convert, read_dictionary, vocabulary
from kdgrid.vocab import EOS, MASK, PAD, UNK, Vocab

DATA = Path(__file__).parent / "data" / "fairseq_tiny"
REFERENCE = json.loads((DATA / "reference.json").read_text())
NAMES = ["pre_norm", "post_norm"]


def converted(name):
    model, vocab_bytes, record = convert(DATA / f"{name}.pt", DATA / "dict.txt", DATA / "spm.model")
    return model, Vocab(vocab_bytes, "converted"), record


@pytest.mark.parametrize("name", NAMES)
def test_teacher_forced_log_probabilities_are_fairseqs(name):
    model, vocab, _ = converted(name)
    assert model.cfg.pre_norm == (name == "pre_norm") and model.cfg.position_offset == 2
    for case in REFERENCE[name]:
        src = torch.tensor([vocab.encode([case["src"]])[0] + [EOS]])
        y = vocab.encode([case["tgt"]])[0]
        memory, src_pad = model.encode(src)
        lp = torch.log_softmax(model.decode(torch.tensor([[model.cfg.bos] + y]), memory, src_pad), -1)[0]
        mine = lp.gather(-1, torch.tensor(y + [EOS])[:, None]).squeeze(-1)
        assert torch.allclose(mine, torch.tensor(case["logprobs"]), atol=1e-5), case["src"]


@pytest.mark.parametrize("name", NAMES)
def test_greedy_outputs_are_fairseqs_with_torch_and_ctranslate2(name):
    from kdgrid.ct2 import for_decoding
    from kdgrid.translate import translate

    model, vocab, _ = converted(name)
    srcs = [case["src"] for case in REFERENCE[name]]
    expected = [case["greedy"] for case in REFERENCE[name]]
    assert len({" ".join(e) for e in expected}) == len(expected)  # varied outputs, not one repeated piece
    for src, want in zip(srcs, expected):
        ids = model.generate(torch.tensor([vocab.encode([src])[0] + [EOS]]), "greedy")[0]
        assert [vocab.sp.id_to_piece(i) for i in ids] == want, src
    ct2 = for_decoding(model, vocab, "ctranslate2", "cpu", threads=1)
    options = {"method": "greedy", "max_len_a": 1.2, "max_len_b": 10}
    assert translate(ct2, vocab, srcs, options)[0] == translate(model, vocab, srcs, options)[0]


def test_the_vocabulary_numbers_fairseqs_symbols_after_kdgrids_specials(tmp_path):
    _, vocab, record = converted("pre_norm")
    symbols = read_dictionary(DATA / "dict.txt")
    assert [vocab.sp.id_to_piece(i) for i in (PAD, UNK, MASK)] == ["<pad>", "<unk>", "<mask>"]
    assert [vocab.sp.id_to_piece(i) for i in range(5, len(vocab))] == symbols  # dictionary order
    assert record["symbols"] == len(symbols) and record["filler_symbols"] == 1  # madeupword0000
    assert record["symbols_user_defined"] == 0 and record["sentencepiece_pieces_not_in_dictionary"] == 0
    # a dictionary without one of the model's pieces: that piece is appended (unused), and counted
    data, counts = vocabulary((DATA / "spm.model").read_bytes(), [s for s in symbols if s != "▁dog"])
    assert counts["sentencepiece_pieces_not_in_dictionary"] == 1
    assert Vocab(data).sp.id_to_piece(len(Vocab(data)) - 1) == "▁dog"
    # a character outside the model's coverage, numbered by fairseq: a user-defined piece, encoded as itself
    data, counts = vocabulary((DATA / "spm.model").read_bytes(), [*symbols, "☃"])
    assert counts["symbols_user_defined"] == 1 and Vocab(data).encode(["☃"])[0][-1] == 5 + len(symbols)


def test_a_bpe_model_with_merges_the_dictionary_lacks_segments_as_before(tmp_path):
    """BPE merges through pieces no output keeps (fairseq's dictionary lacks them): appended as
    unused pieces, the converted vocabulary segments every line as the original model does."""
    import random

    import sentencepiece as spm

    rng = random.Random(0)
    words = ["features", "feature", "future", "nature", "natural", "tree", "street", "streets", "three"]
    text = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) for _ in range(300)]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_prefix=str(tmp_path / "bpe"), vocab_size=60,
                                   model_type="bpe", normalization_rule_name="identity")
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "bpe.model"))
    used = sorted({p for line in text for p in sp.encode(line, out_type=str)})  # what fairseq-preprocess counts
    data, counts = vocabulary((tmp_path / "bpe.model").read_bytes(), used)
    assert counts["sentencepiece_pieces_not_in_dictionary"] > 0  # intermediate merges
    converted = Vocab(data)
    for line in text:
        assert [converted.sp.id_to_piece(i) for i in converted.encode([line])[0]] == sp.encode(line, out_type=str)


def test_a_converted_model_is_not_trained_and_unsupported_settings_are_named(tmp_path):
    from kdgrid.batching import collate

    model, _, _ = converted("post_norm")
    with pytest.raises(KdgridError, match="kdgrid does not train it"):
        model.loss(collate([[5, 6]], [[7, 8]], 0, 2, 3))
    checkpoint = torch.load(DATA / "pre_norm.pt", weights_only=False)
    for key, value, named in (("encoder_learned_pos", True, "sinusoidal positions"),
                              ("share_all_embeddings", False, "share_all_embeddings"),
                              ("activation_fn", "gelu", "ReLU feed-forward layers"),
                              ("no_decoder_final_norm", True, "final layer norms"),
                              ("decoder_output_dim", 4, "decoder input and output dimensions")):
        changed = {**checkpoint, "cfg": {"model": type(checkpoint["cfg"]["model"])(
            **{**vars(checkpoint["cfg"]["model"]), key: value})}}
        torch.save(changed, tmp_path / "x.pt")
        with pytest.raises(KdgridError, match=f"kdgrid converts fairseq Transformers with {named}"):
            convert(tmp_path / "x.pt", DATA / "dict.txt", DATA / "spm.model")


@pytest.mark.parametrize("name", NAMES)
def test_fairseq_itself_agrees_where_it_is_installed(name, tmp_path):
    """With fairseq importable (the peers' environment, bench/.peers-venv), the checkpoint loaded by
    fairseq gives the reference's log-probabilities: the fixture and its reference belong together
    (skipped elsewhere; the comparisons above then rest on reference.json)."""
    pytest.importorskip("fairseq")
    import sentencepiece as spm
    from fairseq import tasks

    for side in ("src", "tgt"):
        (tmp_path / f"dict.{side}.txt").write_text((DATA / "dict.txt").read_text())
    checkpoint = torch.load(DATA / f"{name}.pt", weights_only=False)
    args = checkpoint["cfg"]["model"]
    args.data = str(tmp_path)
    task = tasks.setup_task(args)
    model, d = task.build_model(args), task.target_dictionary
    model.load_state_dict(checkpoint["model"])
    model.eval()
    sp = spm.SentencePieceProcessor(model_file=str(DATA / "spm.model"))
    for case in REFERENCE[name]:
        s = torch.tensor([[d.index(p) for p in sp.encode(case["src"], out_type=str)] + [d.eos()]])
        y = [d.index(p) for p in sp.encode(case["tgt"], out_type=str)]
        with torch.no_grad():
            out = model(s, torch.tensor([s.size(1)]), torch.tensor([[d.eos()] + y]))
            lp = model.get_normalized_probs(out, log_probs=True)[0].gather(-1, torch.tensor(y + [d.eos()])[:, None])
        assert torch.allclose(lp.squeeze(-1), torch.tensor(case["logprobs"]), atol=1e-5)
