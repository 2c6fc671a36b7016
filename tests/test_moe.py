"""The mixture-of-experts teacher (kdgrid.models.moe): hard EM trains the expert of highest
likelihood only, the learned prior's gate moves towards the winning expert, decoding uses one
expert per sentence (the prior's argmax for beam/greedy, a seeded draw from the prior for
sampling), "mixture_best" keeps the output the mixture scores highest, two experts specialize on
a corpus of two styles, and an moe model file works wherever a teacher is loaded."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import model_config, toy_pairs

from kdgrid.batching import Ids, collate
from kdgrid.checkpoint import load_model, save_model
from kdgrid.errors import KdgridError
from kdgrid.models import build
from kdgrid.models.layers import smoothed_nll
from kdgrid.models.transformer import Transformer
from kdgrid.train import TrainConfig, Trainer

PAIRS = toy_pairs(8)
SRC, TGT = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
SPECIALS = [0, 1, 2, 4]  # pad, unk, bos, <mask>: never emitted


def moe_config(**extra) -> dict:
    return model_config("transformer", **{"experts": 2, **extra})  # an AT config: no mask id


def batch(src=SRC, tgt=TGT):
    return collate(src, tgt, pad=0, bos=2, eos=3)


def train(model, src, tgt, tmp_path, updates, seed=1):
    cfg = TrainConfig(max_tokens=2000, lr=3e-3, warmup_updates=20, max_updates=updates, valid_every=100,
                      log_every=100, label_smoothing=0.0, seed=seed)
    data = (Ids.from_lists(src), Ids.from_lists(tgt))
    state = Trainer(model, data, data, cfg, tmp_path / "work", meta={"seed": seed}).run(tmp_path / "model.pt")
    return load_model(tmp_path / "model.pt")[0], state


@pytest.fixture(scope="module", params=["uniform", "learned"])
def overfit(request, tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build("moe", moe_config(prior=request.param))
    with torch.no_grad():
        before = model.eval().loss(batch())[1]["loss"].item()
    trained, state = train(model, SRC, TGT, tmp_path_factory.mktemp("moe"), updates=300)
    return trained, before, state


# -- training -------------------------------------------------------------------------------------
def test_moe_overfits_eight_pairs_and_its_loss_falls(overfit):
    model, before, state = overfit
    losses = [h["loss"] for h in state["history"]]
    assert losses[-1] < losses[0] < before and losses[-1] < 0.05 * before, (before, losses)
    src = batch()["src"]
    assert model.generate(src, "beam", beam=4, expert="mixture_best") == TGT
    assert model.generate(src, "greedy", expert="mixture_best") == TGT
    # the default is the prior's expert per sentence (uniform: expert 0 for all), not the mixture's best
    prior = model.prior_experts(model.encode(src), "beam")
    if model.cfg.prior == "uniform":
        assert prior.tolist() == [0] * 8
    by_hand = [model.generate(src[i:i + 1], "beam", beam=4, expert=int(k))[0] for i, k in enumerate(prior)]
    assert model.generate(src, "beam", beam=4) == by_hand


def test_hard_em_backpropagates_only_the_winning_experts_loss(monkeypatch):
    torch.manual_seed(0)
    model = build("moe", moe_config(experts=3)).train()
    b = batch(SRC[:2], TGT[:2])
    hand = torch.tensor([[-5.0, -1.0, -3.0],    # sentence 0: expert 1 has the highest likelihood
                         [-2.0, -4.0, -6.0]])   # sentence 1: expert 0
    monkeypatch.setattr(model, "expert_logprobs", lambda *a: hand.clone())
    loss, logs = model.loss(b, label_smoothing=0.1)
    loss.backward()
    grad = model.experts.grad.abs().sum(1)
    assert grad[0] > 0 and grad[1] > 0 and grad[2] == 0  # the losing expert's start token learns nothing
    assert (logs["expert0"], logs["expert1"], logs["expert2"]) == (0.5, 0.5, 0.0)
    # the loss is the winners' label-smoothed loss, each sentence with its own winner's start token
    memory, src_pad = model.encode(b["src"])
    logits = model.decode(model.with_start(b["tgt_in"], torch.tensor([1, 0])), memory, src_pad)
    assert loss.item() == pytest.approx(smoothed_nll(logits, b["tgt_out"], 0, 0.1)[0].item(), rel=1e-6)

    model.zero_grad()
    monkeypatch.setattr(model, "expert_logprobs", lambda *a: torch.tensor([[-9.0, -8.0, -0.5]] * 2))
    model.loss(b, label_smoothing=0.1)[0].backward()
    grad = model.experts.grad.abs().sum(1)
    assert grad[0] == 0 and grad[1] == 0 and grad[2] > 0


def test_hard_em_picks_the_expert_of_lowest_loss_computed_without_dropout():
    torch.manual_seed(0)
    model = build("moe", moe_config(experts=3, dropout=0.3)).train()
    b = batch()
    with torch.no_grad():  # each expert's token-summed NLL per sentence, by hand, dropout off
        model.eval()
        memory, src_pad = model.encode(b["src"])
        per_expert = []
        for k in range(3):
            logits = model.decode(model.with_start(b["tgt_in"], k), memory, src_pad)
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), b["tgt_out"], ignore_index=0,
                                                    reduction="none").sum(1)
            per_expert.append(nll)
        model.train()
    lowest = torch.stack(per_expert, 1).argmin(1)
    assert len(set(lowest.tolist())) > 1  # a case where the experts win different sentences
    rng = torch.get_rng_state()
    joint = model.responsibilities(b)
    assert torch.equal(torch.get_rng_state(), rng)  # the E-step draws no random numbers
    assert model.training  # and leaves the model in train mode
    assert torch.equal(joint.argmax(1), lowest)
    assert torch.allclose(joint, -torch.stack(per_expert, 1) - torch.log(torch.tensor(3.0)), atol=1e-4)
    assert torch.equal(joint, model.responsibilities(b))  # no dropout: the same every time
    _, logs = model.loss(b)
    usage = torch.bincount(lowest, minlength=3).float() / len(SRC)
    assert [logs[f"expert{k}"].item() for k in range(3)] == pytest.approx(usage.tolist())


def test_the_learned_priors_gate_learns_and_the_uniform_prior_has_no_parameters():
    torch.manual_seed(0)
    uniform = build("moe", moe_config(experts=3))
    plain = build("transformer", model_config("transformer"))
    assert uniform.gate is None and not [n for n, _ in uniform.named_parameters() if "gate" in n]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(uniform) == count(plain) + 3 * 64  # the experts' start vectors, nothing else
    prior = uniform.prior_logprobs(*uniform.encode(batch()["src"]))
    assert torch.allclose(prior, torch.full((8, 3), -torch.log(torch.tensor(3.0)).item()))

    learned = build("moe", moe_config(experts=3, prior="learned")).train()
    b = batch()
    loss, logs = learned.loss(b)
    loss.backward()
    assert logs["gate"] > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learned.gate.parameters())
    # the responsibilities add log p(k|x) to log p(y|x,k)
    with torch.no_grad():
        learned.eval()
        memory, src_pad = learned.encode(b["src"])
        gate = learned.gate(memory, src_pad)
        assert torch.allclose(gate.exp().sum(1), torch.ones(8))
        by_hand = gate + learned.expert_logprobs(b["tgt_in"], b["tgt_out"], memory, src_pad)
        assert torch.allclose(learned.responsibilities(b), by_hand)


def test_the_mixture_log_probability_sums_the_experts():
    torch.manual_seed(0)
    model = build("moe", moe_config(experts=3)).eval()
    b = batch()
    with torch.no_grad():
        memory, src_pad = model.encode(b["src"])
        per = [Transformer.sequence_logprob(model, model.with_start(b["tgt_in"], k), b["tgt_out"], memory,
                                            src_pad) for k in range(3)]
        mixture = model.sequence_logprob(b["tgt_in"], b["tgt_out"], memory, src_pad)
    by_hand = torch.log(sum(p.exp() for p in per) / 3)  # uniform prior: the experts' mean probability
    assert torch.allclose(mixture, by_hand, atol=1e-5)


def test_the_learned_gate_moves_towards_the_winning_expert(monkeypatch):
    """Hard EM's gate term is -log p(winner|x): a few updates where expert 1 wins every sentence
    must raise p(1|x) for every sentence (not only give the gate a non-zero gradient)."""
    torch.manual_seed(0)
    model = build("moe", moe_config(experts=3, prior="learned", dropout=0.0)).train()
    b = batch()
    monkeypatch.setattr(model, "expert_logprobs", lambda *a: torch.tensor([[-9.0, -1.0, -9.0]] * 8))

    def p_winner():
        with torch.no_grad():
            return model.prior_logprobs(*model.encode(b["src"]))[:, 1].exp()

    before = p_winner()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(15):
        opt.zero_grad()
        model.loss(b)[0].backward()
        opt.step()
    after = p_winner()
    assert (after > before).all() and after.mean() > 0.9 > before.mean(), (before, after)


def test_per_token_mixture_logprobs_sum_to_the_sentence_logprob():
    """Word-level KD's MoE distribution p(y_t | y_<t, x) (the posterior over experts given the
    prefix, kdgrid.kd.word) obeys the chain rule: summed over every position of a sentence, the
    gold tokens' log-probabilities give the mixture's log p(y|x), at every sentence length."""
    from kdgrid.kd.word import teacher_logprobs

    torch.manual_seed(0)
    model = build("moe", moe_config(experts=3, prior="learned")).eval()
    with torch.no_grad():  # a non-uniform gate, so the posterior over experts really moves
        model.gate.fc2.bias.copy_(torch.tensor([1.5, -1.0, 0.0]))
    b = batch()
    with torch.no_grad():
        per_token = teacher_logprobs(model, b).gather(-1, b["tgt_out"].unsqueeze(-1)).squeeze(-1)
        per_token = per_token.masked_fill(b["tgt_out"].eq(0), 0.0)
        memory, src_pad = model.encode(b["src"])
        sentence = model.sequence_logprob(b["tgt_in"], b["tgt_out"], memory, src_pad)
    assert len({len(t) for t in TGT}) > 1  # padding inside the batch
    assert torch.allclose(per_token.sum(1), sentence, atol=1e-4), (per_token.sum(1), sentence)
    # and position t alone is not the prior-weighted mean of the experts (the posterior moved)
    with torch.no_grad():
        gate = model.prior_logprobs(memory, src_pad)
        naive = torch.logsumexp(torch.stack([torch.log_softmax(model.decode(model.with_start(b["tgt_in"], k), memory,
                                                                            src_pad).float(), -1)
                                             for k in range(3)]) + gate.t()[:, :, None, None], 0)
    assert not torch.allclose(naive[:, 2:], teacher_logprobs(model, b)[:, 2:], atol=1e-3)


# -- decoding -------------------------------------------------------------------------------------
def tagged_decoder(src, k, method, encoded, options):
    """A stand-in search: each sentence's output names the expert that decoded it and its source
    (its first word), and the seed it was given."""
    return [[100 + k, int(row[0]), options.get("seed", -1)] for row in src]


def test_beam_and_greedy_decode_each_sentence_with_its_most_likely_expert_under_the_prior(monkeypatch):
    torch.manual_seed(0)
    model = build("moe", moe_config(experts=3, prior="learned")).eval()
    prior = torch.log(torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.4, 0.4, 0.2]]))
    monkeypatch.setattr(model, "prior_logprobs", lambda memory, src_pad: prior)
    monkeypatch.setattr(model, "decode_expert", tagged_decoder)
    src = batch(SRC[:4], TGT[:4])["src"]
    for method in ("beam", "greedy"):
        out = model.generate(src, method)
        assert [o[0] - 100 for o in out] == [1, 0, 2, 0]  # argmax; the tie of sentence 3 goes to the lower k
        assert [o[1] for o in out] == src[:, 0].tolist()  # each output is its own sentence's
    assert model.expert_choice("greedy") == "prior: per sentence the most likely expert under p(k|x) (learned)"


def test_sampling_draws_each_sentences_expert_from_the_prior_with_the_seed(monkeypatch):
    """sample / sample_topk sample the mixture: k ~ p(k|x) per sentence (seeded), then y from
    expert k -- not the most likely of K samples."""
    torch.manual_seed(0)
    model = build("moe", moe_config(experts=2, prior="learned")).eval()
    n = 600
    monkeypatch.setattr(model, "prior_logprobs",
                        lambda memory, src_pad: torch.log(torch.tensor([[0.25, 0.75]])).expand(memory.size(0), 2))
    monkeypatch.setattr(model, "decode_expert", tagged_decoder)
    src = torch.tensor([[5 + i % 20, 3] for i in range(n)])
    for method in ("sample", "sample_topk"):
        out = model.generate(src, method, seed=11)
        experts = [o[0] - 100 for o in out]
        assert abs(sum(experts) / n - 0.75) < 0.06  # the prior's share, not always the argmax
        assert [o[1] for o in out] == src[:, 0].tolist()
        assert {o[2] - (o[0] - 100) for o in out} == {11 * 1024}  # expert k's own stream: seed * 1024 + k
        # the next batch (seed 12, as kdgrid.translate numbers them) shares no stream with this one
        assert not {o[2] for o in out} & {o[2] for o in model.generate(src, method, seed=12)}
        assert model.generate(src, method, seed=11) == out  # seeded: the same draws
        assert [o[0] for o in model.generate(src, method, seed=12)] != [o[0] for o in out]
    assert model.expert_choice("sample").startswith("prior: per sentence an expert drawn from p(k|x)")


def test_sampling_a_trained_moe_is_seeded_and_uses_both_experts(overfit):
    model = overfit[0]
    noisy = [s[:-1] + [7] for s in SRC] * 4
    src = batch(noisy)["src"]
    a, b = model.generate(src, "sample", seed=5), model.generate(src, "sample", seed=5)
    assert a == b and all(tok >= 5 for sent in a for tok in sent)
    if model.cfg.prior == "uniform":
        assert set(model.prior_experts(model.encode(src), "sample", seed=5).tolist()) == {0, 1}


CANDIDATES = {0: [[11, 12], [13], [14, 15, 16]], 1: [[17], [18, 19], [20]]}
LOGPROB = {(11, 12): -3.0, (17,): -2.5, (13,): -1.0, (18, 19): -4.0, (14, 15, 16): -8.0, (20,): -1.0}


def test_best_keeps_per_sentence_the_output_the_mixture_scores_highest(monkeypatch):
    torch.manual_seed(0)
    model = build("moe", moe_config()).eval()
    monkeypatch.setattr(model, "decode_expert", lambda src, k, method, encoded, options: CANDIDATES[k])

    def hand_scores(prev, gold, memory, src_pad):
        return torch.tensor([LOGPROB[tuple(t for t in row.tolist() if t not in (0, 3))] for row in gold])

    monkeypatch.setattr(model, "sequence_logprob", hand_scores)
    src = batch(SRC[:3], TGT[:3])["src"]
    # plain log-probabilities: sentence 0 -2.5 (expert 1) beats -3.0; 1: -1.0 beats -4.0; 2: -1.0 beats -8.0
    assert model.generate(src, "beam", expert="mixture_best", lenpen=0.0) == [[17], [13], [20]]
    # per (tokens + eos), as beam search ranks: sentence 0 -3.0/3 = -1.0 beats -2.5/2 = -1.25
    assert model.generate(src, "beam", expert="mixture_best", lenpen=1.0) == [[11, 12], [13], [20]]
    # the default is ONE expert (uniform prior: expert 0), never a pick across experts
    assert model.generate(src, "beam") == CANDIDATES[0]


def test_best_n_best_lists_pool_the_experts_candidates_by_mixture_score(monkeypatch):
    torch.manual_seed(0)
    model = build("moe", moe_config()).eval()
    nbests = {0: [[(-0.1, [11, 12]), (-0.2, [17])]], 1: [[(-0.1, [17]), (-0.3, [13])]]}  # beam scores
    monkeypatch.setattr(model, "decode_expert", lambda src, k, method, encoded, options: nbests[k])
    monkeypatch.setattr(model, "sequence_logprob", lambda prev, gold, memory, src_pad: torch.tensor(
        [LOGPROB[tuple(t for t in row.tolist() if t not in (0, 3))] for row in gold]))
    src = batch(SRC[:1], TGT[:1])["src"]
    # distinct candidates [11 12], [17], [13] ranked by the mixture: -1.0, -2.5, -3.0
    best = lambda n: model.generate(src, "beam", nbest=n, lenpen=0.0, expert="mixture_best")  # noqa: E731
    assert best(2) == [[(-1.0, [13]), (-2.5, [17])]]
    assert best(5) == [[(-1.0, [13]), (-2.5, [17]), (-3.0, [11, 12])]]
    assert model.generate(src, "beam", nbest=2) == nbests[0]  # default: expert 0's own n-best list


def test_best_n_best_of_one_is_the_plain_best(overfit):
    model = overfit[0]
    src = batch([s[1:] + [9] for s in SRC])["src"]
    one = model.generate(src, "beam", beam=3, nbest=1, expert="mixture_best")
    assert [hyps[0][1] for hyps in one] == model.generate(src, "beam", beam=3, expert="mixture_best")
    three = model.generate(src, "beam", beam=3, nbest=3, expert="mixture_best")
    for hyps in three:
        scores = [score for score, _ in hyps]
        assert 1 <= len(hyps) <= 3 and scores == sorted(scores, reverse=True)
        assert len({tuple(ids) for _, ids in hyps}) == len(hyps)


def greedy_by_hand(model, src, k, max_len):
    """Greedy decoding from expert k's start token, recomputing the whole prefix at every step."""
    memory, src_pad = model.encode(src)
    prev = torch.tensor([[model.start_token(k)]])
    out = []
    for _ in range(max_len):
        logits = model.decode(prev, memory, src_pad)[0, -1]
        logits[SPECIALS] = float("-inf")
        tok = int(logits.argmax())
        if tok == 3:
            break
        out.append(tok)
        prev = torch.cat([prev, torch.tensor([[tok]])], 1)
    return out


@pytest.mark.parametrize("method,opts", [("beam", {"beam": 3}), ("greedy", {}), ("sample", {"seed": 3}),
                                         ("sample_topk", {"seed": 3, "topk": 3})])
def test_one_expert_decodes_with_every_search_method(overfit, method, opts):
    model = overfit[0]
    noisy = [s[:-1] + [7] for s in SRC]
    src = batch(noisy)["src"]
    for k in (0, 1):
        cached = model.generate(src, method, expert=k, use_cache=True, **opts)
        assert cached == model.generate(src, method, expert=k, use_cache=False, **opts)
        assert len(cached) == 8 and all(tok >= 5 for sent in cached for tok in sent)
    if method == "greedy":
        with torch.no_grad():
            for k in (0, 1):
                alone = [greedy_by_hand(model, batch([s])["src"], k, int((len(s) + 1) * 1.2) + 10) for s in noisy]
                assert model.generate(src, "greedy", expert=k) == alone
        first = [model.decode_step(model.with_start(src[:, :1], k), *model.encode(src), None) for k in (0, 1)]
        assert not torch.allclose(first[0], first[1])  # the start token is the expert's


@pytest.mark.parametrize("expert", [0, 1, "prior", "mixture_best"])
def test_moe_batch_decodes_like_single_sentences(overfit, expert):
    model = overfit[0]
    noisy = [s[1:] + [9] for s in SRC]
    together = model.generate(batch(noisy)["src"], "beam", expert=expert)
    alone = [model.generate(batch([s])["src"], "beam", expert=expert)[0] for s in noisy]
    assert together == alone


def test_bad_expert_and_bad_config_are_clear_errors():
    torch.manual_seed(0)
    model = build("moe", moe_config()).eval()
    src = batch()["src"]
    for bad in (2, -1, "1", True, 0.5, "best", "each"):
        with pytest.raises(KdgridError, match="expert must be 0..1, 'prior' or 'mixture_best'"):
            model.generate(src, "greedy", expert=bad)
    with pytest.raises(KdgridError, match="experts must be an integer from 2 to 1023"):
        build("moe", moe_config(experts=1))
    with pytest.raises(KdgridError, match="prior must be one of uniform, learned"):
        build("moe", moe_config(prior="soft"))
    with pytest.raises(KdgridError, match="model kind 'transformer' has no option.*experts"):
        build("transformer", moe_config())


# -- two styles, two experts ----------------------------------------------------------------------
def two_styles(n: int, seed: int = 0):
    """Each source has two deterministic translations: style A keeps the word order and maps each
    word into one lexicon (ids 30..49), style B reverses it and maps into another (50..69)."""
    rng = random.Random(seed)
    src = [rng.sample(range(10, 30), rng.randint(3, 6)) for _ in range(n)]
    a = [[(t - 10) * 7 % 20 + 30 for t in s] for s in src]
    b = [[(t - 10) * 3 % 20 + 50 for t in reversed(s)] for s in src]
    return src, a, b


def test_two_experts_specialize_one_per_style(tmp_path):
    torch.set_num_threads(1)
    n = 48
    src, style_a, style_b = two_styles(n)
    torch.manual_seed(1)
    model = build("moe", moe_config(vocab_size=70))
    model, _ = train(model, src + src, style_a + style_b, tmp_path, updates=300)
    s = collate(src, None, 0, 2, 3)["src"]
    matches = []
    for k in (0, 1):
        out = model.generate(s, "greedy", expert=k)
        matches.append((sum(o == t for o, t in zip(out, style_a)), sum(o == t for o, t in zip(out, style_b))))
    (a0, b0), (a1, b1) = matches
    a_expert, b_expert = (0, 1) if a0 + b1 >= a1 + b0 else (1, 0)
    assert matches[a_expert][0] >= 2 * n // 3 and matches[b_expert][1] >= 2 * n // 3, matches
    assert matches[a_expert][1] <= n // 4 and matches[b_expert][0] <= n // 4, matches
    # "mixture_best" keeps one whole style per sentence
    best = model.generate(s, "beam", expert="mixture_best")
    assert sum(o in (a, b) for o, a, b in zip(best, style_a, style_b)) >= 2 * n // 3


# -- model files ----------------------------------------------------------------------------------
def test_model_file_keeps_experts_and_prior(tmp_path):
    torch.manual_seed(0)
    model = build("moe", moe_config(experts=3, prior="learned")).eval()
    save_model(tmp_path / "m.pt", model, {"seed": 0})
    payload = torch.load(tmp_path / "m.pt", weights_only=False)
    assert payload["kind"] == "moe" and payload["config"]["experts"] == 3 and payload["config"]["prior"] == "learned"
    loaded, _ = load_model(tmp_path / "m.pt")
    assert loaded.kind == "moe" and loaded.cfg.experts == 3 and loaded.cfg.prior == "learned"
    assert loaded.gate is not None and not loaded.training
    state, again = model.state_dict(), loaded.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    src = batch()["src"]
    for expert in (0, 2, "prior", "mixture_best"):
        assert loaded.generate(src, "beam", expert=expert) == model.generate(src, "beam", expert=expert)


def test_an_moe_teacher_rescores_with_its_mixture():
    from kdgrid.rescore import Rescorer

    torch.manual_seed(0)
    model = build("moe", moe_config(prior="learned")).eval()
    b = batch()
    scores = Rescorer(model)(b["src"], TGT)
    with torch.no_grad():
        memory, src_pad = model.encode(b["src"])
        mixture = model.sequence_logprob(b["tgt_in"], b["tgt_out"], memory, src_pad)
    lengths = torch.tensor([len(t) + 1 for t in TGT])
    assert torch.allclose(scores, mixture / lengths, atol=1e-5)


def test_train_and_evaluate_verbs_with_an_moe_teacher(tmp_path):
    """`kdgrid train --kind moe` (no mask id for an AT) and `evaluate`, which decodes with the prior's
    expert unless told otherwise and says so in scores.json."""
    from kdgrid import cli
    from kdgrid.checkpoint import load_for_decoding
    from kdgrid.corpus import write_lines

    words = lambda ids: " ".join(f"w{i}" for i in ids)  # noqa: E731
    pairs = toy_pairs(60, vocab_size=40, seed=2)
    write_lines(tmp_path / "src", [words(s) for s, _ in pairs])
    write_lines(tmp_path / "tgt", [words(t) for _, t in pairs])
    vocab = {"size": 60, "model_type": "bpe", "character_coverage": 1.0, "max_sentences": 0, "seed": 1}
    assert cli.main(["vocab", "--train-text", str(tmp_path / "src"), str(tmp_path / "tgt"), "--model",
                     str(tmp_path / "spm.model"), "--params", json.dumps(vocab), "--encode", str(tmp_path / "src"),
                     str(tmp_path / "tgt"), "--encoded", str(tmp_path / "src.npz"), str(tmp_path / "tgt.npz")]) == 0
    model = {"d_model": 32, "ffn": 64, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.1,
             "attention_dropout": 0.0, "pre_norm": True, "experts": 2, "prior": "learned"}
    train_params = {"max_tokens": 500, "lr": 0.003, "warmup_updates": 5, "max_updates": 10, "valid_every": 5,
                    "log_every": 5, "seed": 3}
    d = str(tmp_path)
    assert cli.main(["train", "--kind", "moe", "--model-params", json.dumps(model), "--train-params",
                     json.dumps(train_params), "--vocab", f"{d}/spm.model", "--train-src", f"{d}/src.npz",
                     "--train-tgt", f"{d}/tgt.npz", "--valid-src", f"{d}/src.npz", "--valid-tgt", f"{d}/tgt.npz",
                     "--out", f"{d}/model.pt", "--work-dir", f"{d}/work"]) == 0
    loaded, meta, _ = load_for_decoding(tmp_path / "model.pt", tmp_path / "spm.model")
    assert loaded.kind == "moe" and loaded.cfg.experts == 2 and loaded.cfg.prior == "learned"
    assert {"expert0", "expert1", "gate", "mix_nll"} <= set(meta["history"][-1])
    params = {"method": "greedy", "max_len_a": 1.2, "max_len_b": 5, "max_tokens": 400}
    for name, extra, says in (("prior", {}, "prior: per sentence the most likely expert under p(k|x) (learned)"),
                              ("best", {"expert": "mixture_best"}, "mixture_best: every expert decodes")):
        assert cli.main(["evaluate", "--model", f"{d}/model.pt", "--vocab", f"{d}/spm.model", "--src", f"{d}/src",
                         "--ref", f"{d}/tgt", "--hyp", f"{d}/hyp.{name}", "--scores", f"{d}/{name}.json",
                         "--params", json.dumps({**params, **extra})]) == 0
        scores = json.loads((tmp_path / f"{name}.json").read_text())
        assert scores["decode"]["moe_expert"].startswith(says), scores["decode"]
        assert len((tmp_path / f"hyp.{name}").read_text().splitlines()) == 60
