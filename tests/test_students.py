"""Every NAT student learns and decodes consistently with its own decoder; the shared pieces
(noise, the edit-distance expert, the refinement loop) on hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import model_config, toy_pairs

from kdgrid.batching import Ids, collate
from kdgrid.checkpoint import load_model
from kdgrid.models import build
from kdgrid.models.edits import expert_edits, lcs_alignment
from kdgrid.models.noise import corrupt, random_delete, random_mask
from kdgrid.refine import State, refine
from kdgrid.train import TrainConfig, Trainer

KINDS = ["nat", "inat", "cmlm", "levt", "inst", "flowseq"]
EXTRA = {"flowseq": {"latent": 16}}
# Mask-Predict's 5-candidate length beam prefers confident longer candidates on 8 memorized
# pairs; the overfit check decodes at the predicted length (the beam is tested separately).
DECODE = {"cmlm": {"length_beam": 1}}
UPDATES = {"nat": 300, "flowseq": 400}
PAIRS = toy_pairs(8)
SRC, TGT = [p[0] for p in PAIRS], [p[1] for p in PAIRS]


def batch(src=SRC, tgt=TGT):
    return collate(src, tgt, pad=0, bos=2, eos=3)


@pytest.fixture(scope="module", params=KINDS)
def trained(request, tmp_path_factory):
    kind = request.param
    tmp = tmp_path_factory.mktemp(kind)
    torch.manual_seed(0)
    model = build(kind, model_config(kind, **EXTRA.get(kind, {})))
    cfg = TrainConfig(max_tokens=1000, lr=3e-3, warmup_updates=20, max_updates=UPDATES.get(kind, 600),
                      valid_every=100, log_every=100, label_smoothing=0.0)
    data = (Ids.from_lists(SRC), Ids.from_lists(TGT))
    trainer = Trainer(model, data, data, cfg, tmp / "work", meta={})
    trainer.run(tmp / "model.pt")
    model, meta = load_model(tmp / "model.pt")
    return kind, model, meta


def test_overfits_eight_pairs_with_its_own_decoder(trained):
    kind, model, meta = trained
    assert model.generate(batch()["src"], **DECODE.get(kind, {})) == TGT


def test_decoding_is_deterministic_and_batch_independent(trained):
    kind, model, _ = trained
    noisy = [s[:-1] + [s[0]] for s in SRC]  # unseen inputs: outputs of varied lengths
    opts = DECODE.get(kind, {})
    together = model.generate(batch(noisy)["src"], **opts)
    assert together == model.generate(batch(noisy)["src"], **opts)
    alone = [model.generate(batch([s])["src"], **opts)[0] for s in noisy]
    assert together == alone


def test_untrained_students_do_not_reproduce():
    """Guards the overfit test: it passes because of training."""
    for kind in KINDS:
        torch.manual_seed(0)
        model = build(kind, model_config(kind, **EXTRA.get(kind, {}))).eval()
        assert model.generate(batch()["src"], **DECODE.get(kind, {})) != TGT, kind


@pytest.mark.parametrize("kind", KINDS)
def test_loss_falls_on_the_synthetic_corpus(kind):
    from kdgrid import synthetic

    pairs = synthetic.generate(synthetic.SyntheticSpec(seed=1, train=64, valid=1, test=1, vocab_size=20,
                                                       modes=1, max_len=6))["train"]
    words: dict[str, int] = {}

    def ids(text):
        return [words.setdefault(w, 5 + len(words)) for w in text.split()]

    src, tgt = [ids(s) for s, _ in pairs], [ids(t) for _, t in pairs]
    b = collate(src, tgt, 0, 2, 3)
    torch.manual_seed(0)
    model = build(kind, model_config(kind, vocab_size=5 + len(words), **EXTRA.get(kind, {})))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss, logs = model.loss(b, 0.1)
        assert {"loss", "nll", "ntokens"} <= set(logs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses


# -- the edit-distance expert ----------------------------------------------------------------
A, B, C, D, E = 11, 12, 13, 14, 15


def test_expert_edits_hand_checked():
    # "a b c" -> "a c d": delete b; keep a c; insert d after c
    assert expert_edits([A, B, C], [A, C, D]) == ([0, 1, 0], [A, C], [[], [], [D]])
    # from nothing: everything goes into the one slot
    assert expert_edits([], [A, B]) == ([], [], [[A, B]])
    # "b a" -> "a b c": keep one word, insert around it
    delete, kept, inserts = expert_edits([B, A], [A, B, C])
    assert sum(delete) == 1 and len(kept) == 1 and sum(map(len, inserts)) == 2
    # identical: no edits
    assert expert_edits([A, B, C], [A, B, C]) == ([0, 0, 0], [A, B, C], [[], [], [], []])
    assert lcs_alignment([A, B, C, D], [B, D, E]) == [(1, 0), (3, 1)]


def test_levt_placeholder_and_deletion_targets_from_the_expert():
    """LevT's insertion input is a subsequence of the target: the expert's counts are the gaps."""
    y = [A, B, C, D, E]
    delete, kept, inserts = expert_edits([B, D], y)
    assert [len(w) for w in inserts] == [1, 1, 1]  # a | c | e
    assert inserts == [[A], [C], [E]]
    # deletion labels of a wrong fill "a x c d e" against the target: delete x only
    assert expert_edits([A, 99, C, D, E], y)[0] == [0, 1, 0, 0, 0]


def test_insertion_tree_weights_hand_checked():
    model = build("inst", model_config("inst"))
    w = model.tree_weights(3)  # softmax(-|1 - i|) for i = 0, 1, 2
    e = math.exp(-1)
    assert w == pytest.approx([e / (1 + 2 * e), 1 / (1 + 2 * e), e / (1 + 2 * e)])
    assert model.tree_weights(1) == [1.0]


# -- noise -----------------------------------------------------------------------------------
TGT_T = torch.tensor([[11, 12, 13, 14, 0, 0], [21, 22, 23, 24, 25, 26]])


def test_random_mask_masks_between_one_and_all_real_tokens():
    torch.manual_seed(0)
    for _ in range(20):
        noisy, masked = random_mask(TGT_T, pad=0, mask=4)
        n = masked.sum(1)
        assert (n >= 1).all() and (n <= TGT_T.ne(0).sum(1)).all()
        assert not masked[TGT_T.eq(0)].any()
        assert torch.equal(noisy[masked], torch.full((int(n.sum()),), 4))
        assert torch.equal(noisy[~masked], TGT_T[~masked])


def test_random_delete_keeps_an_ordered_subsequence_and_sometimes_everything():
    torch.manual_seed(0)
    seen_full = False
    for _ in range(50):
        kept_tokens, kept = random_delete(TGT_T, pad=0)
        for row, k, original in zip(kept_tokens.tolist(), kept, TGT_T.tolist()):
            row = [t for t in row if t]
            assert row == [t for t, keep in zip(original, k.tolist()) if keep]
            seen_full |= len(row) == sum(1 for t in original if t)
    assert seen_full


def test_corrupt_keeps_length_and_padding():
    torch.manual_seed(0)
    out = corrupt(TGT_T, pad=0, low=5, vocab_size=40, p=0.3)
    assert out.shape == TGT_T.shape and torch.equal(out.eq(0), TGT_T.eq(0))
    assert not torch.equal(out, TGT_T)


# -- the refinement loop ---------------------------------------------------------------------
class Countdown:
    """A fake iterative model: candidate c of a sentence starts as [10 + c] and each step appends
    a 7 until the sentence's target length; candidate 0 scores -1 per token, others -0.5."""

    class cfg:
        pad = 0

    def __init__(self, targets):
        self.targets = targets

    def encode(self, src):
        return src.float()[..., None], src.eq(0)

    def initial(self, src, memory, src_pad, length_beam):
        owner = torch.arange(src.size(0)).repeat_interleave(length_beam)
        tokens = (10 + torch.arange(len(owner)) % length_beam)[:, None]
        return State(tokens, torch.zeros(tokens.shape)), owner

    def step(self, state, src, memory, src_pad, step, max_iter):
        rows = []
        for tok, s in zip(state.tokens.tolist(), src[:, 0].tolist()):
            tok = [t for t in tok if t]
            rows.append(tok + [7] if len(tok) < self.targets[s] else tok)
        width = max(len(r) for r in rows)
        tokens = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        per_token = torch.tensor([-1.0 if r[0] == 10 else -0.5 for r in rows])[:, None]
        return State(tokens, per_token * tokens.ne(0))


def test_refinement_loop_stops_adaptively_and_keeps_the_best_candidate():
    model = Countdown(targets={1: 2, 2: 5})
    src = torch.tensor([[1], [2]])
    out, steps = refine(model, src, max_iter=10, length_beam=2, return_steps=True)
    assert out == [[11, 7], [11, 7, 7, 7, 7]]  # candidate 1 scores better
    assert steps == [2, 5]  # one step past the last change: the unchanged output ends the row
    out, steps = refine(model, src, max_iter=2, length_beam=1, return_steps=True)
    assert out == [[10, 7], [10, 7, 7, 7]] and steps == [2, 3]  # max_iter cuts the second short


def test_levt_vectorized_placeholder_counts_match_the_expert():
    """LevT counts placeholders from the kept positions; the expert must agree on every row."""
    from kdgrid.models.levt import placeholder_targets

    tgt = batch()["tgt"]
    torch.manual_seed(5)
    for _ in range(10):
        ins_in, kept = random_delete(tgt, pad=0)
        targets = placeholder_targets(kept, tgt.ne(0), ins_in.size(1) + 1, 256)
        for row, y, target in zip(ins_in.tolist(), TGT, targets.tolist()):
            inserts = expert_edits([t for t in row if t], y)[2]
            assert [t for t in target if t != -100] == [len(w) for w in inserts]
