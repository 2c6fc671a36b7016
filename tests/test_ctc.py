"""The CTC student (kdgrid.models.ctc): its loss against a brute-force sum over every alignment,
the collapse rule, which targets fit, and decoding that never emits specials."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import model_config

from kdgrid.batching import collate
from kdgrid.models import build
from kdgrid.models.ctc import collapse, needed_positions

BLANK = 4  # model_config's mask id: the blank


def tiny(upsample=2, loss_norm="tokens", vocab_size=8):
    torch.manual_seed(0)
    return build("ctc", model_config("ctc", vocab_size=vocab_size, d=16, layers=1, upsample=upsample,
                                     loss_norm=loss_norm)).eval()


def brute_force_nll(log_probs: torch.Tensor, target: list[int]) -> float:
    """-log of the summed probability of every path over all symbols that collapses to `target`."""
    positions, symbols = log_probs.shape
    total = [log_probs[range(positions), list(path)].sum().item()
             for path in itertools.product(range(symbols), repeat=positions) if collapse(list(path), BLANK) == target]
    return -math.log(sum(math.exp(x) for x in total)) if total else math.inf


def test_collapse_merges_runs_then_drops_blanks():
    assert collapse([5, 5, BLANK, 5, 6, 6, BLANK], BLANK) == [5, 5, 6]  # a blank keeps the repeat
    assert collapse([5, 5, 5], BLANK) == [5]
    assert collapse([BLANK, BLANK], BLANK) == []
    assert needed_positions([5, 5, 6, 6, 6]) == 5 + 3 and needed_positions([]) == 0


@pytest.mark.parametrize("loss_norm", ["tokens", "sentences"])
def test_the_loss_is_the_sum_over_every_alignment(loss_norm):
    """Two sentences of 1 and 2 source words (+ eos): 4 and 6 positions; 8 symbols (8^6 paths).
    One target repeats a word (needs a blank between); the other fills its positions exactly."""
    model = tiny(loss_norm=loss_norm)
    src, tgt = [[5], [6, 7]], [[6, 6], [5, 7, 7, 6, 5]]
    b = collate(src, tgt, 0, 2, 3)
    loss, logs = model.loss(b)
    log_probs, out_pad = model.log_probs(b["src"])
    per = [brute_force_nll(log_probs[i, : int((~out_pad[i]).sum())].double(), t) for i, t in enumerate(tgt)]
    if loss_norm == "tokens":
        expected = sum(per) / sum(map(len, tgt))
    else:
        expected = sum(p / len(t) for p, t in zip(per, tgt)) / len(tgt)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert logs["ntokens"] == 7 and logs["nll"] == pytest.approx(expected, rel=1e-4)


def test_an_infeasible_pair_has_no_alignment_and_adds_nothing():
    model = tiny()
    src, tgt = [[5], [5]], [[6, 6, 6], [6, 7]]  # 4 positions; [6, 6, 6] needs 5
    assert not model.feasible(2, tgt[0]) and model.feasible(2, tgt[1])
    b = collate(src, tgt, 0, 2, 3)
    log_probs, _ = model.log_probs(b["src"])
    assert brute_force_nll(log_probs[0].double(), tgt[0]) == math.inf
    loss, _ = model.loss(b)
    alone, _ = model.loss(collate(src[1:], tgt[1:], 0, 2, 3))
    assert loss.item() == pytest.approx(alone.item() * 2 / 5, rel=1e-5)  # zeroed, its tokens still counted


def test_decoding_never_emits_specials_and_follows_the_argmax_path():
    model = tiny(upsample=3, vocab_size=12)
    src = collate([[5, 9, 7], [8]], None, 0, 2, 3)["src"]
    out = model.generate(src)
    log_probs, out_pad = model.log_probs(src, never_special=True)
    for row, lp, pad in zip(out, log_probs, out_pad):
        assert not {0, 2, 3, BLANK} & set(row)
        assert row == collapse(lp[~pad].argmax(-1).tolist(), BLANK)
        assert len(row) <= 3 * 4


def test_the_infeasible_count_is_feasible_pair_by_pair():
    """kdgrid train's count (vectorized over a whole split) against CTC.feasible on each pair."""
    import random

    from kdgrid.batching import Ids
    from kdgrid.models.ctc import needed_positions_of
    from kdgrid.models.feasibility import infeasible_pairs

    rng = random.Random(0)
    src = [[rng.randint(5, 9) for _ in range(rng.randint(0, 4))] for _ in range(300)]
    tgt = [[rng.randint(5, 7) for _ in range(rng.randint(0, 12))] for _ in range(300)]
    model = tiny()
    assert needed_positions_of(Ids.from_lists(tgt)).tolist() == [needed_positions(t) for t in tgt]
    record = infeasible_pairs(model, {"train": (Ids.from_lists(src), Ids.from_lists(tgt))})
    expected = sum(not model.feasible(len(s) + 1, t) for s, t in zip(src, tgt))
    assert record["train"] == expected and 0 < expected < 300 and record["train_pairs"] == 300
