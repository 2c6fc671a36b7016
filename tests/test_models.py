"""Every model learns (overfits 8 pairs with the real Trainer) and decodes consistently."""

from __future__ import annotations

import pytest
import torch
from conftest import model_config, toy_pairs

from kdgrid.batching import Ids, collate
from kdgrid.checkpoint import load_model
from kdgrid.models import build
from kdgrid.models.nat import uniform_copy
from kdgrid.train import TrainConfig, Trainer

PAIRS = toy_pairs(8)
SRC, TGT = [p[0] for p in PAIRS], [p[1] for p in PAIRS]


def batch(src=SRC, tgt=TGT):
    return collate(src, tgt, pad=0, bos=2, eos=3)


def overfit(kind, tmp_path, updates=300, **extra):
    torch.manual_seed(0)
    model = build(kind, model_config(kind, **extra))
    cfg = TrainConfig(max_tokens=1000, lr=3e-3, warmup_updates=20, max_updates=updates,
                      valid_every=100, log_every=100, label_smoothing=0.0)
    data = (Ids.from_lists(SRC), Ids.from_lists(TGT))
    Trainer(model, data, data, cfg, tmp_path / "work", meta={"seed": 0}).run(tmp_path / "model.pt")
    return load_model(tmp_path / "model.pt")


@pytest.fixture(scope="module")
def trained_at(tmp_path_factory):
    return overfit("transformer", tmp_path_factory.mktemp("at"))[0]


@pytest.fixture(scope="module")
def trained_nat(tmp_path_factory):
    return overfit("nat", tmp_path_factory.mktemp("nat"))[0]


def test_transformer_overfits_eight_pairs(trained_at):
    assert trained_at.generate(batch()["src"], "beam", beam=4) == TGT
    assert trained_at.generate(batch()["src"], "greedy") == TGT


def test_nat_overfits_eight_pairs(trained_nat):
    assert trained_nat.generate(batch()["src"]) == TGT


def test_nat_with_mask_input_overfits(tmp_path):
    model, _ = overfit("nat", tmp_path, decoder_input="mask", updates=400)
    assert model.generate(batch()["src"]) == TGT


def test_untrained_model_does_not_reproduce(tmp_path):
    """Guards the overfit tests: they pass because of training, not by construction."""
    torch.manual_seed(0)
    model = build("nat", model_config("nat")).eval()
    assert model.generate(batch()["src"]) != TGT


def test_checkpoint_describes_itself(tmp_path):
    model, meta = overfit("transformer", tmp_path, updates=5)
    payload = torch.load(tmp_path / "model.pt", weights_only=False)
    assert payload["kind"] == "transformer" and payload["config"]["d_model"] == 64
    assert meta["seed"] == 0 and meta["updates"] == 5 and meta["train_config"]["lr"] == 3e-3


@pytest.mark.parametrize("method,opts", [("beam", {"beam": 4}), ("greedy", {}),
                                         ("sample", {"seed": 3}), ("sample_topk", {"seed": 3, "topk": 3})])
def test_cached_decoding_equals_uncached(trained_at, method, opts):
    torch.manual_seed(1)
    noisy = [s[:-1] + [7] for s in SRC]  # unseen inputs: hypotheses of varied lengths
    src = batch(noisy)["src"]
    cached = trained_at.generate(src, method, use_cache=True, **opts)
    uncached = trained_at.generate(src, method, use_cache=False, **opts)
    assert cached == uncached


def test_beam_one_equals_greedy(trained_at):
    src = batch([s[::-1] for s in SRC])["src"]
    assert trained_at.generate(src, "beam", beam=1) == trained_at.generate(src, "greedy")


def test_sampling_is_reproducible_with_a_seed(trained_at):
    src = batch([s[1:] + s[:1] for s in SRC])["src"]
    a = trained_at.generate(src, "sample", seed=11, temperature=2.0)
    assert a == trained_at.generate(src, "sample", seed=11, temperature=2.0)
    assert a != trained_at.generate(src, "sample", seed=12, temperature=2.0)


@pytest.mark.parametrize("method", ["beam", "greedy"])
def test_at_batch_decodes_like_single_sentences(trained_at, method):
    src = batch()["src"]
    together = trained_at.generate(src, method)
    alone = [trained_at.generate(batch([s])["src"], method)[0] for s in SRC]
    assert together == alone


def test_nat_batch_decodes_like_single_sentences_and_is_deterministic(trained_nat):
    noisy = [s + [11] for s in SRC]
    together = trained_nat.generate(batch(noisy)["src"], length_beam=3)
    alone = [trained_nat.generate(batch([s])["src"], length_beam=3)[0] for s in noisy]
    assert together == alone
    assert together == trained_nat.generate(batch(noisy)["src"], length_beam=3)


class ChainModel:
    """A fixed bigram 'model' for hand-checked search: next-token probabilities depend on the
    previous token only. From bos: a 0.6, b 0.4. After a: eos 0.34, a 0.33, b 0.33.
    After b: eos 0.9, a 0.05, b 0.05. Greedy takes a then eos (mean log-prob -0.795);
    beam 2 finds b eos (mean log-prob -0.511)."""

    class cfg:
        pad, bos, eos = 0, 2, 3

    table = {2: {5: 0.6, 6: 0.4}, 5: {3: 0.34, 5: 0.33, 6: 0.33}, 6: {3: 0.9, 5: 0.05, 6: 0.05}}

    def encode(self, src):
        return torch.zeros(src.size(0), 1, 1), src.eq(0)

    def decode_step(self, prev, memory, src_pad, cache):
        out = torch.full((prev.size(0), 7), float("-inf"))
        for row, last in enumerate(prev[:, -1].tolist()):
            for tok, p in self.table[last].items():
                out[row, tok] = torch.log(torch.tensor(p))
        return out

    def reorder(self, cache, rows):
        pass


def test_beam_search_on_a_hand_checked_chain():
    from kdgrid import search

    src = torch.tensor([[5, 3], [6, 3]])  # a = 5, b = 6 (ids below 5 are specials)
    assert search.generate(ChainModel(), src, "greedy") == [[5], [5]]
    assert search.generate(ChainModel(), src, "beam", beam=2) == [[6], [6]]
    assert search.generate(ChainModel(), src, "beam", beam=1) == [[5], [5]]


def test_beam_search_nbest_on_the_hand_checked_chain():
    from kdgrid import search

    src = torch.tensor([[5, 3]])
    (best,) = search.generate(ChainModel(), src, "beam", beam=2, nbest=2)
    assert [hyp for _, hyp in best] == [[6], [5]]  # b eos, then a eos (mean log-prob -0.795)
    assert [score for score, _ in best] == pytest.approx([-0.5108, -0.7948], abs=1e-4)


@pytest.mark.parametrize("nbest", [1, 3, 4])
def test_beam_search_nbest_is_the_beams_best_first_then_distinct_by_score(trained_at, nbest):
    from kdgrid import search

    noisy = [s[:-1] + [7] for s in SRC] + [s[::-1] for s in SRC]  # unseen inputs: varied candidates
    src = batch(noisy)["src"]
    plain = trained_at.generate(src, "beam", beam=4)
    lists = trained_at.generate(src, "beam", beam=4, nbest=nbest)
    uncached = search.generate(trained_at, src, "beam", beam=4, nbest=nbest, use_cache=False)
    assert [[h for _, h in hyps] for hyps in lists] == [[h for _, h in hyps] for hyps in uncached]
    assert [hyps[0][1] for hyps in lists] == plain  # the same search: entry 0 is the plain result
    for hyps in lists:
        assert len(hyps) == nbest
        assert len({tuple(h) for _, h in hyps}) == nbest  # distinct hypotheses
        scores = [score for score, _ in hyps]
        assert scores == sorted(scores, reverse=True)


def test_nbest_only_comes_from_a_beam_of_at_least_its_size(trained_at):
    from kdgrid.errors import KdgridError

    with pytest.raises(KdgridError, match="nbest must be between 1 and the beam size 2"):
        trained_at.generate(batch()["src"], "beam", beam=2, nbest=3)
    with pytest.raises(KdgridError, match="n-best list comes from beam search, not from 'greedy'"):
        trained_at.generate(batch()["src"], "greedy", nbest=2)


class SpecialsLover:
    """A trained AT whose every step strongly prefers pad, unk, bos and <mask>."""

    def __init__(self, model):
        self.model, self.cfg = model, model.cfg

    def encode(self, src):
        return self.model.encode(src)

    def decode_step(self, prev, memory, src_pad, cache):
        logits = self.model.decode_step(prev, memory, src_pad, cache).clone()
        logits[:, [0, 1, 2, 4]] += 100.0
        return torch.log_softmax(logits, -1)

    def reorder(self, cache, rows):
        self.model.reorder(cache, rows)


@pytest.mark.parametrize("method", ["beam", "greedy", "sample", "sample_topk"])
def test_at_decoding_never_emits_specials(trained_at, method):
    from kdgrid import search

    out = search.generate(SpecialsLover(trained_at), batch()["src"], method, seed=3)
    assert all(out) and all(tok >= 5 for sent in out for tok in sent), out


def test_uniform_copy_hand_checked_and_padding_independent():
    src = torch.tensor([[10, 11, 12, 3, 0, 0], [20, 21, 22, 23, 24, 3]])
    src_pad = src.eq(0)
    tgt_pad = torch.tensor([[False] * 5 + [True], [False] * 3 + [True] * 3])
    out = uniform_copy(src, src_pad, tgt_pad, eos=3, pad=0)
    # sentence 1: 3 words over 5 positions, round(t * 2/4) with ties to even -> 0,0,1,2,2
    assert out[0].tolist() == [10, 10, 11, 12, 12, 0]
    # sentence 2: 5 words over 3 positions, round(t * 4/2) -> 0,2,4
    assert out[1].tolist() == [20, 22, 24, 0, 0, 0]
    alone = uniform_copy(src[:1, :4], src_pad[:1, :4], tgt_pad[:1], eos=3, pad=0)
    assert alone.tolist() == out[:1].tolist()


def test_nat_length_classes_are_offsets_from_source_length():
    torch.manual_seed(0)
    model = build("nat", model_config("nat"))
    _, logs = model.loss(batch(), 0.0)
    assert {"word_ins", "length", "nll", "loss"} <= set(logs)
    assert model.length.offset == 128


def test_unknown_model_option_is_a_clear_error():
    from kdgrid.errors import KdgridError

    with pytest.raises(KdgridError, match="no option.*d_modle"):
        build("nat", {**model_config("nat"), "d_modle": 3})
    with pytest.raises(KdgridError, match="unknown model kind 'natt'"):
        build("natt", model_config("nat"))
    with pytest.raises(KdgridError, match="not divisible"):
        build("transformer", model_config("transformer", d=30))


def test_nat_files_from_before_the_shared_length_head_still_load(tmp_path):
    """Early kdgrid-model/1 NAT files named the length classifier `length_head`; they must load
    and decode as the model they were saved from."""
    import dataclasses

    from kdgrid.checkpoint import FORMAT

    torch.manual_seed(0)
    model = build("nat", model_config("nat", d=32)).eval()
    old = {k.replace("length.proj.", "length_head."): v for k, v in model.state_dict().items()}
    assert any(k.startswith("length_head.") for k in old)
    torch.save({"format": FORMAT, "kind": "nat", "config": dataclasses.asdict(model.cfg), "state_dict": old,
                "meta": {}}, tmp_path / "old.pt")
    loaded, _ = load_model(tmp_path / "old.pt")
    src = collate(*zip(*toy_pairs(4)), pad=0, bos=2, eos=3)["src"]
    assert loaded.generate(src, length_beam=3) == model.generate(src, length_beam=3)
