"""Ensemble teachers (kdgrid.models.ensemble): the members' next-token distributions combined at
every step, so every search of kdgrid.search runs on the ensemble unchanged."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import encoded_toy_corpus, env, model_config, toy_pairs

from kdgrid.batching import pad_stack
from kdgrid.checkpoint import load_for_decoding, load_model, save_model
from kdgrid.errors import KdgridError
from kdgrid.models import build
from kdgrid.models.configs import ENSEMBLE_COMBINES
from kdgrid.models.ensemble import Ensemble
from kdgrid.translate import translate

METHODS = [("beam", {"beam": 4}), ("greedy", {}), ("sample", {"seed": 3}), ("sample_topk", {"seed": 3, "topk": 5})]


def member(seed: int, layers: int = 2):
    torch.manual_seed(seed)
    return build("transformer", model_config("transformer", layers=layers)).eval()


def sources():
    return pad_stack([s for s, _ in toy_pairs(6, seed=2)], 0, suffix=3)


@pytest.mark.parametrize("combine", ENSEMBLE_COMBINES)
@pytest.mark.parametrize("method,opts", METHODS)
def test_an_ensemble_of_one_decodes_as_its_member(combine, method, opts):
    one = member(1)
    ensemble = Ensemble.of([one], combine)
    assert ensemble.generate(sources(), method, **opts) == one.generate(sources(), method, **opts)


@pytest.mark.parametrize("combine", ENSEMBLE_COMBINES)
@pytest.mark.parametrize("method,opts", METHODS)
def test_an_ensemble_of_two_identical_members_decodes_as_either(combine, method, opts):
    one = member(1)
    ensemble = Ensemble.of([one, member(1)], combine)
    assert ensemble.generate(sources(), method, **opts) == one.generate(sources(), method, **opts)


@pytest.mark.parametrize("combine", ENSEMBLE_COMBINES)
def test_the_step_distribution_is_the_members_combined_by_hand(combine):
    a, b = member(1), member(2, layers=1)  # two different members, of different depths
    ensemble = Ensemble.of([a, b], combine)
    src, prev = sources(), torch.full((6, 1), 2)
    prev = torch.cat([prev, torch.randint(5, 40, (6, 3))], 1)
    parts = [m.decode_step(prev, *m.encode(src), None) for m in (a, b)]
    pa, pb = parts[0].exp(), parts[1].exp()
    if combine == "prob_mean":  # fairseq's: log of the mean probability
        expected = ((pa + pb) / 2).log()
    else:  # the mean log-probability, renormalized: a normalized geometric mean
        geometric = (pa * pb).sqrt()
        expected = (geometric / geometric.sum(-1, keepdim=True)).log()
    got = ensemble.decode_step(prev, *ensemble.encode(src), None)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(got.exp().sum(-1), torch.ones(6), atol=1e-5)  # a distribution either way
    # and not either member's: the ensemble is its own teacher
    assert not torch.allclose(got, parts[0], atol=1e-3) and not torch.allclose(got, parts[1], atol=1e-3)


@pytest.mark.parametrize("method,opts", METHODS)
def test_cached_ensemble_decoding_equals_uncached_and_batching(method, opts):
    ensemble = Ensemble.of([member(1), member(2, layers=1)])
    cached = ensemble.generate(sources(), method, **opts)
    assert cached == ensemble.generate(sources(), method, use_cache=False, **opts)
    if method in ("beam", "greedy"):  # one sentence at a time: the same outputs
        assert cached == [ensemble.generate(sources()[i: i + 1], method, **opts)[0] for i in range(6)]
    assert all(t not in (0, 1, 2, 4) for hyp in cached for t in hyp)  # never pad, unk, bos or <mask>


def test_an_ensemble_file_loads_as_itself_and_is_not_trained(tmp_path):
    ensemble = Ensemble.of([member(1), member(2, layers=1)], "prob_mean")
    save_model(tmp_path / "ens.pt", ensemble, {"vocab_sha256": "x"})
    loaded, _ = load_model(tmp_path / "ens.pt")
    assert loaded.kind == "ensemble" and loaded.cfg.combine == "prob_mean"
    assert loaded.generate(sources(), "beam", beam=3) == ensemble.generate(sources(), "beam", beam=3)
    with pytest.raises(KdgridError, match="not trained"):
        loaded.loss({})


def test_members_must_share_the_vocabulary_and_be_transformers():
    other = build("transformer", model_config("transformer", vocab_size=50))
    with pytest.raises(ValueError, match="share one vocabulary"):
        Ensemble.of([member(1), other])
    nat = build("nat", model_config("nat"))
    with pytest.raises(ValueError, match="of kind 'nat'"):
        Ensemble.of([member(1), nat])
    with pytest.raises(ValueError, match="combine must be one of"):
        Ensemble.of([member(1)], "max")


def run(*args):
    return subprocess.run([sys.executable, "-m", "kdgrid", *map(str, args)], capture_output=True, text=True,
                          env=env())


def in_process(*args):
    from kdgrid import cli

    assert cli.main([str(a) for a in args]) == 0


def test_the_verb_joins_teachers_and_the_result_translates(tmp_path):
    """Two teachers of one vocabulary as `kdgrid train` writes them (untrained: joining reads files)."""
    from kdgrid.vocab import Vocab

    d = encoded_toy_corpus(tmp_path, in_process, pairs=60, vocab_size=60, pieces=80)
    v = Vocab.load(d / "spm.model")
    second = tmp_path / "second.pt"
    meta = {"teacher": "t", "vocab_sha256": v.sha256, "vocab_model": v.proto}
    for seed, path in ((1, d / "model.pt"), (2, second)):
        torch.manual_seed(seed)
        save_model(path, build("transformer", {**v.model_ids(), "d_model": 32, "ffn": 64, "heads": 2,
                                               "encoder_layers": 1, "decoder_layers": 1}), meta)
    out = tmp_path / "ens.pt"
    proc = run("ensemble", "--members", d / "model.pt", second, "--vocab", d / "spm.model", "--out", out,
               "--labels", '{"teacher": "both"}')
    assert proc.returncode == 0, proc.stderr
    ensemble, meta, vocab = load_for_decoding(out, d / "spm.model")
    assert ensemble.kind == "ensemble" and meta["combine"] == "logprob_mean" and meta["teacher"] == "both"
    assert [m["model"] for m in meta["members"]] == [str(d / "model.pt"), str(second)]
    assert all(len(m["sha256"]) == 64 for m in meta["members"])
    lines = (d / "train.src").read_text().splitlines()[:20]
    hyps, _ = translate(ensemble, vocab, lines, {"method": "beam", "beam": 3})
    assert len(hyps) == 20 and all(hyps)
    first = load_for_decoding(d / "model.pt", d / "spm.model")[0]
    src, prev = pad_stack(vocab.encode(lines), 0, suffix=3), torch.full((20, 1), 2)
    both = ensemble.decode_step(prev, *ensemble.encode(src), None)
    assert not torch.allclose(both, first.decode_step(prev, *first.encode(src), None), atol=1e-3)
    # a member of another vocabulary, a NAT member and a bad key are errors that name the file / key
    other = tmp_path / "other.pt"
    save_model(other, first, {**meta, "vocab_sha256": "0" * 64})
    proc = run("ensemble", "--members", d / "model.pt", other, "--vocab", d / "spm.model", "--out", tmp_path / "x.pt")
    assert proc.returncode == 2 and "other.pt was trained with another vocabulary" in proc.stderr
    proc = run("ensemble", "--members", d / "model.pt", "--vocab", d / "spm.model", "--out", tmp_path / "x.pt",
               "--params", '{"weights": [1]}')
    assert proc.returncode == 2 and "unknown key(s) weights" in proc.stderr
    proc = run("train", "--kind", "ensemble", "--model-params", "{}", "--train-params", "{}", "--vocab",
               d / "spm.model", *["--train-src", "a", "--train-tgt", "b", "--valid-src", "c", "--valid-tgt", "d"],
               "--out", tmp_path / "y.pt", "--work-dir", tmp_path / "w")
    assert proc.returncode == 2 and "an ensemble is not trained" in proc.stderr
    assert not (tmp_path / "x.pt").exists()
