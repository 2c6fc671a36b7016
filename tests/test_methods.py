"""Distillation methods (src/kdgrid/methods/): sequence-level interpolation picks the best of the
teacher's n-best by sentence BLEU, a Born-Again round decodes like beam search, a moe method asks
a mixture-of-experts teacher for one expert (or the mixture's best), and a shard of any of them resumes to
the same bytes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sacrebleu
import torch
from conftest import env, train_toy_teacher

from kdgrid import methods
from kdgrid.checkpoint import load_for_decoding
from kdgrid.corpus import read_lines, write_lines
from kdgrid.errors import KdgridError
from kdgrid.methods import interpolate
from kdgrid.translate import translate, translate_nbest

PY = [sys.executable, "-m", "kdgrid"]
LENGTH = {"max_len_a": 1.2, "max_len_b": 10}


# -- interpolation on hand-made n-best lists ---------------------------------------------------
REF = "a man in a blue shirt is riding a bike down the street"
NBEST = [(-0.21, "a man in a shirt rides a bike"),                     # the beam's best
         (-0.35, "a man in a blue shirt is riding a bicycle down a street"),
         (-0.40, "a man is riding a bike down the street in blue"),
         (-0.52, "the man in the blue shirt rides down the road"),
         (-0.60, "a man")]


def test_interpolation_keeps_the_candidate_with_the_best_sentence_bleu():
    by_hand = [sacrebleu.sentence_bleu(text, [REF]).score for _, text in NBEST]  # smoothed (exp), eff. order
    assert by_hand.index(max(by_hand)) == 1 and by_hand[0] < by_hand[1]
    assert interpolate.pick(NBEST, REF) == 1
    metric = interpolate.scorer("bleu")
    assert interpolate.similarities(NBEST, REF, metric) == pytest.approx(by_hand)
    assert "smooth:exp" in str(metric.get_signature()) and "eff:yes" in str(metric.get_signature())


def test_interpolation_ties_go_to_the_higher_model_score():
    same = [(-0.9, "a dog runs"), (-0.3, "a dog runs"), (-0.3, "a cat runs")]  # equal BLEU 0 - 2
    assert interpolate.pick(same, "a dog runs fast") == 1  # equal text: the higher model score
    twins = [(-0.5, "x y z"), (-0.5, "x y z")]
    assert interpolate.pick(twins, "x y z") == 0  # equal in both: the earlier (better-ranked)


def test_interpolation_with_chrf():
    cands = [(-0.1, "the dog sat"), (-0.2, "the cat sat")]  # equal BLEU against "the cats sat"
    assert interpolate.pick(cands, "the cats sat", interpolate.scorer("bleu")) == 0  # tie: model score
    assert interpolate.pick(cands, "the cats sat", interpolate.scorer("chrf")) == 1  # chrF sees cat ~ cats
    with pytest.raises(KdgridError, match="metric must be one of bleu, chrf"):
        interpolate.scorer("ter")


def test_section5_kinds_reject_options_they_do_not_take():
    with pytest.raises(KdgridError, match="kind 'interpolate' takes no option.*topk"):
        methods.check("interpolate", {"nbest": 2, "topk": 3})
    with pytest.raises(KdgridError, match="kind 'ban' takes no option.*rounds"):
        methods.check("ban", {"beam": 2, "rounds": 3})  # the round count never reaches a distill job
    with pytest.raises(KdgridError, match="unknown method kind 'nucleus'"):
        methods.check("nucleus", {})
    methods.check("sample", {"temperature": 2.0, "seed": 1, **LENGTH})


# -- a real vocabulary and teacher ----------------------------------------------------------------
def run(*args):
    proc = subprocess.run([*PY, *map(str, args)], capture_output=True, text=True, env=env())
    return proc


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A small corpus, its sentencepiece model and a briefly trained AT teacher (through the CLI)."""
    return train_toy_teacher(tmp_path_factory.mktemp("teacher"), run)


@pytest.fixture(scope="module")
def loaded(teacher):
    torch.set_num_threads(1)
    model, _, vocab = load_for_decoding(teacher / "model.pt", teacher / "spm.model")
    return model, vocab, read_lines(teacher / "train.src")[:60], read_lines(teacher / "train.tgt")[:60]


def test_interpolate_keeps_per_sentence_the_best_bleu_of_the_beams_nbest(loaded):
    model, vocab, src, ref = loaded
    opts = {"nbest": 4, "beam": 4, "lenpen": 1.0, "metric": "bleu", **LENGTH}
    got = methods.distill(model, vocab, src, ref, "interpolate", opts, max_tokens=500)
    nbests, _ = translate_nbest(model, vocab, src, {"method": "beam", "beam": 4, "nbest": 4, "lenpen": 1.0, **LENGTH})
    beam, _ = translate(model, vocab, src, {"method": "beam", "beam": 4, "lenpen": 1.0, **LENGTH})
    assert [cands[0][1] for cands in nbests] == beam  # entry 0 of the n-best is the beam's output
    for line, cands, r in zip(got, nbests, ref):
        bleus = [sacrebleu.sentence_bleu(text, [r]).score for _, text in cands]
        assert sacrebleu.sentence_bleu(line, [r]).score == max(bleus)
    assert got != beam  # a briefly trained teacher: the reference moves some sentences
    one = methods.distill(model, vocab, src, ref, "interpolate", {**opts, "nbest": 1}, max_tokens=500)
    assert one == beam  # an n-best of one is plain beam search


def test_a_ban_round_is_the_models_own_beam_search_with_the_methods_beam_and_lenpen(loaded):
    """The expected output comes from kdgrid.search on the encoded batch, not from another method."""
    from kdgrid import search
    from kdgrid.batching import pad_stack
    from kdgrid.vocab import EOS, PAD

    model, vocab, src, _ = loaded
    opts = {"beam": 3, "lenpen": 0.6, **LENGTH}
    ids = vocab.encode(src)
    one = lambda x, o: search.generate(model, pad_stack([x], PAD, suffix=EOS), "beam", **o)[0]  # noqa: E731
    expected = [one(x, opts) for x in ids]
    assert methods.distill(model, vocab, src, None, "ban", opts, 500) == vocab.decode(expected)
    # and another lenpen is another decode, taken from the method's options
    other = [one(x, {**opts, "beam": 1}) for x in ids]
    assert methods.distill(model, vocab, src, None, "ban", {**opts, "beam": 1}, 500) == vocab.decode(other)


def test_a_moe_method_needs_a_mixture_of_experts_teacher(loaded):
    model, vocab, src, _ = loaded
    with pytest.raises(KdgridError, match="decodes with a mixture-of-experts teacher.*kind 'transformer'"):
        methods.distill(model, vocab, src, None, "moe", {"expert": 0, "beam": 2, **LENGTH}, 500)


def test_a_moe_method_decodes_with_the_chosen_expert_or_the_mixture_best(loaded):
    """Expert k's output equals a plain Transformer's beam search with the same weights whose
    decoder input at position 0 is expert k's start vector (an independent path: no MoE decoding
    code); the mixture-best output is, per sentence, one of the experts' outputs."""
    from kdgrid.models import build

    _, vocab, src, _ = loaded
    torch.manual_seed(0)
    body = {"d_model": 32, "ffn": 64, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.0,
            **vocab.model_ids()}
    moe = build("moe", {**body, "experts": 2}).eval()
    opts = {"beam": 2, "lenpen": 1.0, **LENGTH}
    per_expert = []
    for k in (0, 1):
        plain = build("transformer", body).eval()
        state = {name: t for name, t in moe.state_dict().items() if name in plain.state_dict()}
        plain.load_state_dict(state)

        def embed_with_start(prev, start=0, plain=plain, k=k):
            x = plain.embed.tokens(prev)
            if start == 0:  # the first decoder input (bos) is expert k's start vector
                x = torch.cat([(moe.experts[k] * plain.embed.scale).expand(x.size(0), 1, -1), x[:, 1:]], 1)
            return plain.embed.add_positions(x, start)

        plain.embed_target = embed_with_start
        expected, _ = translate(plain, vocab, src, {**opts, "method": "beam"}, 500)
        got = methods.distill(moe, vocab, src, None, "moe", {**opts, "expert": k}, 500)
        assert got == expected, k
        per_expert.append(got)
    assert per_expert[0] != per_expert[1]  # the experts differ, so the check can tell them apart
    best = methods.distill(moe, vocab, src, None, "moe", {**opts, "expert": "mixture_best"}, 500)
    assert all(b in (a0, a1) for b, a0, a1 in zip(best, *per_expert))
    with pytest.raises(KdgridError, match="expert 2 but the teacher has 2 experts"):
        methods.distill(moe, vocab, src, None, "moe", {**opts, "expert": 2}, 500)
    for bad in ("best", "each", "prior", None):  # `each` is the workflow's: one job per expert
        with pytest.raises(KdgridError, match="expert must be an expert number"):
            methods.distill(moe, vocab, src, None, "moe", {**opts, "expert": bad}, 500)


# -- the distill verb: --ref, resumable chunks ----------------------------------------------------
def shard_args(d, out, params, ref=True, chunk=20):
    return ["distill", "--model", d / "model.pt", "--vocab", d / "spm.model", "--src", d / "train.src",
            "--out", out, "--shard", 0, "--shards", 2, "--chunk", chunk, "--params", json.dumps(params),
            *(["--ref", d / "train.tgt"] if ref else [])]


INTERP = {"kind": "interpolate", "nbest": 3, "beam": 3, "lenpen": 1.0, "metric": "bleu", "max_tokens": 500, **LENGTH}


def test_the_distill_verb_takes_the_reference_only_where_the_method_reads_it(teacher, tmp_path):
    for args, message in [
        (shard_args(teacher, tmp_path / "o", INTERP, ref=False), "--ref: method kind 'interpolate' compares"),
        (shard_args(teacher, tmp_path / "o", {**INTERP, "kind": "beam", "nbest": None}, ref=True),
         "--ref: method kind 'beam' does not read the real targets"),
        (shard_args(teacher, tmp_path / "o", {**INTERP, "topk": 2}), "takes no option(s) topk"),
    ]:
        proc = run(*args)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    write_lines(tmp_path / "short.tgt", ["w1"] * 5)
    args = shard_args(teacher, tmp_path / "o", INTERP, ref=False) + ["--ref", tmp_path / "short.tgt"]
    proc = run(*args)
    assert proc.returncode == 2 and "short.tgt has 5 lines but" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_an_interrupted_interpolation_shard_resumes_to_the_same_bytes(teacher, tmp_path, monkeypatch, capsys):
    from kdgrid import distill

    assert run(*shard_args(teacher, tmp_path / "whole.tgt", INTERP)).returncode == 0
    real, calls = methods.distill, []

    def stop_after_two(*args, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill between chunks: the finished chunks stay
        calls.append(1)
        return real(*args, **kw)

    def interrupted(ref):
        calls.clear()
        monkeypatch.setattr(methods, "distill", stop_after_two)
        with pytest.raises(KeyboardInterrupt):
            shard(ref)
        monkeypatch.setattr(methods, "distill", real)

    def shard(ref):
        distill.distill_shard(teacher / "model.pt", teacher / "spm.model", teacher / "train.src",
                              tmp_path / "0.tgt", 0, 2, 20, INTERP, "cpu", ref=ref)

    parts = tmp_path / "0.tgt.parts"
    interrupted(teacher / "train.tgt")
    assert len(list(parts.glob("0*.txt"))) == 2 and not (tmp_path / "0.tgt").exists()
    assert "ref_sha256" in json.loads((parts / "key.json").read_text())
    capsys.readouterr()
    shard(teacher / "train.tgt")
    assert "resuming shard 0: 2 of 6 chunks already done" in capsys.readouterr().err
    assert (tmp_path / "0.tgt").read_bytes() == (tmp_path / "whole.tgt").read_bytes()
    assert not parts.exists()
    # the chunks of a run against other references are not reused
    interrupted(teacher / "train.tgt")
    other = tmp_path / "other.tgt"
    write_lines(other, [line + " w1" for line in read_lines(teacher / "train.tgt")])
    shard(other)
    assert "left by a run with other inputs or settings; starting this shard over" in capsys.readouterr().err
