"""Every NAT student learns and decodes consistently with its own decoder; the shared pieces
(noise, the edit-distance expert, the refinement loop) on hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from conftest import ROOT, model_config, toy_pairs

from kdgrid.batching import Ids, collate
from kdgrid.checkpoint import load_model
from kdgrid.models import build
from kdgrid.models.edits import expert_edits, lcs_alignment
from kdgrid.models.noise import corrupt, random_delete, random_mask
from kdgrid.refine import State, refine
from kdgrid.train import TrainConfig, Trainer

KINDS = ["nat", "inat", "cmlm", "levt", "inst", "flowseq", "ctc", "dat"]
EXTRA = {"flowseq": {"latent": 16}}
# Students decode as the grid decodes them: the decoding options of workflow/defaults.yaml
# (CMLM: Mask-Predict with a 5-candidate length beam and max_iter 9).
GRID_DECODE = yaml.safe_load((ROOT / "workflow" / "defaults.yaml").read_text())["students"]
DECODE = {"cmlm": GRID_DECODE["cmlm"]["decode"]}
# Found when the overfit check moved from CMLM's length_beam 1 to the grid's 5: Mask-Predict ranks
# its length candidates by mean token log-probability alone, and a model that memorized these pairs
# is as sure of itself at length L+1 (it repeats the last word: "... 26 5 5") or L-1 (a prefix) as
# at the true L. The ranking is then a near-tie (1e-4 apart without label smoothing, about 5e-3
# with 0.1) that picks a wrong length for one to four of the eight pairs, by seed, while the length
# head, sure of L, is not consulted (adding its log p(L | x) to the ranking picked the true length
# for every pair on every seed tried). Not strict: a near-tie may fall either way on another BLAS
# or thread count; the test below checks what the model did learn.
CMLM_LENGTH_TIES = ("Mask-Predict ranks length candidates by mean token log-probability only: on "
                    "memorized pairs L+1 (a repeated last word) or L-1 ties with the true length")
UPDATES = {"nat": 300, "flowseq": 400, "dat": 300}
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


def test_overfits_eight_pairs_with_its_own_decoder(trained, request):
    kind, model, meta = trained
    if kind == "cmlm":
        request.applymarker(pytest.mark.xfail(strict=False, reason=CMLM_LENGTH_TIES))
    assert model.generate(batch()["src"], **DECODE.get(kind, {})) == TGT


@pytest.mark.parametrize("trained", ["cmlm"], indirect=True)
def test_cmlm_memorizes_the_pairs_at_the_predicted_length(trained):
    """What CMLM's miss above is not: the candidate at the predicted length (the middle of the
    grid's length beam; candidates are decoded independently) reproduces every pair."""
    kind, model, _ = trained
    assert model.generate(batch()["src"], **{**DECODE["cmlm"], "length_beam": 1}) == TGT


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


def test_refinement_loop_without_adaptive_stop_runs_every_iteration():
    out, steps = refine(Countdown(targets={1: 2, 2: 5}), torch.tensor([[1], [2]]), max_iter=6,
                        adaptive=False, return_steps=True)
    assert out == [[10, 7], [10, 7, 7, 7, 7]] and steps == [7, 7]


@pytest.mark.parametrize("trained", ["cmlm"], indirect=True)
def test_mask_predict_runs_all_t_iterations_unless_told_to_stop_early(trained):
    kind, model, _ = trained
    src = batch()["src"]
    _, steps = model.generate(src, length_beam=5, max_iter=9, return_steps=True)
    assert steps == [10] * len(SRC)  # T = 10: the shrinking mask is no convergence
    _, early = model.generate(src, length_beam=5, max_iter=9, adaptive=True, return_steps=True)
    assert max(early) < 10  # memorized outputs stop changing: the adaptive stop would end them


def test_levt_deletion_roll_in_never_fills_a_placeholder_with_a_special():
    """An untrained model whose word logits favour pad (and the other specials): the roll-in that
    the deletion head learns from must hold words only, with one eos per row, at its end."""
    torch.manual_seed(0)
    model = build("levt", model_config("levt"))
    inputs = []
    hidden = model.hidden
    model.hidden = lambda tokens, memory, src_pad: inputs.append(tokens) or hidden(tokens, memory, src_pad)

    def pad_loving_words(h):
        logits = torch.zeros(h.size(0), h.size(1) - 2, model.cfg.vocab_size)
        logits[..., [0, 2, 3, 4]] = torch.tensor([10.0, 9.0, 8.0, 7.0])
        logits[..., 5] = 1.0
        return logits.requires_grad_()

    model.words = pad_loving_words
    b = batch()
    model.loss(b)
    guess = inputs[2]  # insertion input, fill input, then the deletion roll-in
    real = b["tgt"].ne(0)
    assert guess[real].min() >= 5 and guess.masked_select(~real).eq(0).all()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_insertion_loss_averages_slots_per_sentence_with_label_smoothing(monkeypatch, smoothing):
    """Sentence A keeps 5 of 5 6 7 (2 slots: eos, then 6|7 at weights 1/2 each); sentence B keeps
    all of 5 8 (3 slots, all eos). Every slot's logits: eos 2, the rest 0."""
    import kdgrid.models.inst as inst

    torch.manual_seed(0)
    model = build("inst", model_config("inst"))
    tgt = torch.tensor([[5, 6, 7], [5, 8, 0]])
    monkeypatch.setattr(inst, "random_delete", lambda t, pad: (torch.tensor([[5, 0, 0], [5, 8, 0]]), None))
    v = model.cfg.vocab_size
    logits = torch.zeros(2, 4, v)
    logits[..., 3] = 2.0
    model.slot_logits = lambda *a: logits
    loss, logs = model.loss({"src": torch.tensor([[5, 3], [6, 3]]), "tgt": tgt}, label_smoothing=smoothing)
    lse = math.log(math.exp(2.0) + v - 1)
    e, o = lse - 2.0, lse  # CE of the eos target, of a word target
    per_sentence = ((e + o) / 2 + e) / 2  # over the 5 slots alike it would be (4e + o) / 5
    uniform = lse - 2.0 / v  # CE against the uniform distribution
    assert logs["nll"].item() == pytest.approx(per_sentence)
    assert loss.item() == pytest.approx((1 - smoothing) * per_sentence + smoothing * uniform)
    assert logs["ntokens"] == 5
