"""The DA-Transformer (kdgrid.models.dat, kdgrid.models.dag): the loss and its gradient against a
brute-force sum over every path, the best path and joint-Viterbi against brute-force argmaxes,
the transitions, the decoders on hand-made graphs, and what the model counts and never emits."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import model_config, toy_pairs

from kdgrid.batching import Ids, collate
from kdgrid.errors import KdgridError
from kdgrid.kd.glance import glanced_positions
from kdgrid.models import build, dag
from kdgrid.models.dat import forced_positions
from kdgrid.models.feasibility import infeasible_pairs
from kdgrid.models.terms import Glance

SPECIALS = {0, 1, 2, 3, 4}  # pad, unk, bos, eos, mask in model_config


def paths(length: int, steps: int):
    """Every path 0 = a_0 < ... < a_{steps-1} = length - 1."""
    if steps == 1:
        return [(0,)] if length == 1 else []
    return [(0, *inner, length - 1) for inner in itertools.combinations(range(1, length - 1), steps - 2)]


def path_score(emit, links, path) -> torch.Tensor:
    score = emit[path[0], 0]
    for t in range(1, len(path)):
        score = score + links[path[t - 1], path[t]] + emit[path[t], t]
    return score


def random_graph(batch=3, length=6, steps=4, seed=0, graph_len=None, tgt_len=None):
    """Random emissions (B, L, T) and links from random head scores, with a gradient."""
    gen = torch.Generator().manual_seed(seed)
    emit_logits = torch.randn(batch, length, steps, generator=gen, requires_grad=True)
    q = torch.randn(batch, length, 2, 3, generator=gen, requires_grad=True)
    k = torch.randn(batch, length, 2, 3, generator=gen)
    gate = torch.randn(batch, length, 2, generator=gen)
    graph_len = torch.tensor(graph_len or [length] * batch)
    tgt_len = torch.tensor(tgt_len or [steps] * batch)
    return emit_logits, q, (k, gate, graph_len, tgt_len)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_loss_and_its_gradient_equal_a_sum_over_every_path(seed):
    """Sentences of different graph and target lengths in one batch (padding on both sides)."""
    emit_logits, q, (k, gate, graph_len, tgt_len) = random_graph(
        batch=3, length=6, steps=4, seed=seed, graph_len=[6, 5, 4], tgt_len=[4, 3, 4])
    emit = emit_logits.log_softmax(1)  # any numbers would do: a distribution over vertices here
    links = dag.links_from_heads(q, k, gate, graph_len)
    ours = dag.log_likelihood(emit, links, tgt_len, graph_len)
    brute = torch.stack([torch.logsumexp(torch.stack([path_score(emit[b], links[b], p) for p in
                                                      paths(int(graph_len[b]), int(tgt_len[b]))]), 0)
                         for b in range(3)])
    assert torch.allclose(ours, brute, atol=1e-5)
    grads = torch.autograd.grad(ours.sum(), [emit_logits, q], retain_graph=True)
    want = torch.autograd.grad(brute.sum(), [emit_logits, q])
    for got, expected in zip(grads, want):
        assert torch.isfinite(got).all() and torch.allclose(got, expected, atol=1e-5)


def test_a_live_vertex_far_below_a_dead_end_neither_underflows_nor_breaks_the_gradient():
    """Step 1's best vertex (the last: it can go nowhere) sits 120 nats above the two live ones,
    which a matrix product in probability space with one shift per row would round to zero."""
    emit = torch.full((1, 4, 3), -120.0)
    emit[0, 3, 1] = emit[0, 0, 0] = emit[0, 3, 2] = 0.0
    emit.requires_grad_(True)
    prob = torch.tensor([[0.0, 0.3, 0.3, 0.4], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [0.0] * 4])
    links = prob.clamp(min=1e-30).log().masked_fill(prob == 0, dag.NEG)[None]
    value = dag.log_likelihood(emit, links, torch.tensor([3]), torch.tensor([4]))
    brute = torch.logsumexp(torch.stack([path_score(emit[0], links[0], p) for p in paths(4, 3)]), 0)
    assert value.item() == pytest.approx(brute.item(), abs=1e-4) and brute.item() == pytest.approx(-120 + math.log(0.6))
    (grad,) = torch.autograd.grad(value.sum(), [emit])
    assert torch.isfinite(grad).all() and grad[0, 1, 1].item() == pytest.approx(0.5, abs=1e-5)


def test_the_graph_stays_in_float32_under_bf16_autocast():
    emit_logits, q, (k, gate, graph_len, tgt_len) = random_graph(seed=9)
    emit = emit_logits.detach().log_softmax(1)
    plain = dag.log_likelihood(emit, dag.links_from_heads(q, k, gate, graph_len), tgt_len, graph_len)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        links = dag.links_from_heads(q, k, gate, graph_len)
        mixed = dag.log_likelihood(emit, links, tgt_len, graph_len)
    assert links.dtype == mixed.dtype == torch.float32 and torch.allclose(mixed, plain, atol=1e-6)


def test_a_target_longer_than_its_graph_has_no_path_and_a_finite_gradient():
    emit_logits, q, (k, gate, graph_len, tgt_len) = random_graph(batch=2, length=4, steps=5, tgt_len=[5, 3])
    links = dag.links_from_heads(q, k, gate, graph_len)
    value = dag.log_likelihood(emit_logits.log_softmax(1), links, tgt_len, graph_len)
    assert value[0] < dag.REACHED < value[1]
    kept = torch.where(tgt_len <= graph_len, value, 0.0).sum()
    grads = torch.autograd.grad(kept, [emit_logits, q])
    assert all(torch.isfinite(g).all() for g in grads)
    assert grads[0][0].abs().sum() == 0  # the infeasible sentence adds nothing


def test_the_transitions_are_a_gated_mixture_of_per_head_softmaxes_over_later_vertices():
    _, q, (k, gate, _, _) = random_graph(batch=1, length=5)
    graph_len = torch.tensor([4])
    links = dag.links_from_heads(q, k, gate, graph_len)[0].detach()
    prob = links.exp()
    for i in range(5):
        for j in range(5):
            if not i < j < 4:
                assert prob[i, j] == 0
    assert torch.allclose(prob[:3].sum(1), torch.ones(3))  # each vertex before the last one leaves
    i = 1  # by hand for one row: sum_h g_h softmax_j(q_h . k_h / sqrt(3)) over j in {2, 3}
    g = gate[0, i].softmax(0)
    heads = [(q[0, i, h] @ k[0, 2:4, h].T / math.sqrt(3)).softmax(0) for h in range(2)]
    assert torch.allclose(prob[i, 2:4], g[0] * heads[0] + g[1] * heads[1], atol=1e-6)


def test_the_best_path_equals_the_brute_force_argmax():
    emit_logits, q, (k, gate, graph_len, tgt_len) = random_graph(
        batch=4, length=7, steps=5, seed=3, graph_len=[7, 6, 5, 3], tgt_len=[5, 3, 5, 4])
    emit, links = emit_logits.detach().log_softmax(1), dag.links_from_heads(q, k, gate, graph_len).detach()
    path, found = dag.best_path(emit, links, tgt_len, graph_len)
    for b in range(4):
        candidates = paths(int(graph_len[b]), int(tgt_len[b]))
        assert bool(found[b]) == bool(candidates)
        if candidates:
            best = max(candidates, key=lambda p: path_score(emit[b], links[b], p).item())
            assert path[b, :int(tgt_len[b])].tolist() == list(best) and (path[b, int(tgt_len[b]):] == -1).all()
        else:
            assert (path[b] == -1).all()


def test_force_emit_sums_the_paths_through_the_glanced_vertex_which_emits_surely():
    emit_logits, q, (k, gate, graph_len, tgt_len) = random_graph(batch=1, length=6, steps=4, seed=5)
    emit, links = emit_logits.log_softmax(1), dag.links_from_heads(q, k, gate, graph_len)
    forced = torch.tensor([[-1, 2, -1, -1]])  # target position 1 at vertex 2
    ours = dag.log_likelihood(emit, links, tgt_len, graph_len, forced)
    surely = emit.clone()
    surely[0, 2, 1] = 0.0
    brute = torch.logsumexp(torch.stack([path_score(surely[0], links[0], p) for p in paths(6, 4) if p[1] == 2]), 0)
    assert torch.allclose(ours[0], brute, atol=1e-5)
    mask = torch.tensor([[False, False, True, False, True, False]])
    eligible = torch.tensor([[True, False, True, False, True, True]])  # the path 0 2 4 5
    glance = Glance(None, mask, torch.zeros_like(mask, dtype=torch.long), eligible)
    assert forced_positions(glance, 4).tolist() == [[-1, 2, 4, -1]]  # vertex 2 takes position 1, vertex 4 position 2


def test_joint_viterbi_picks_the_brute_force_best_length_normalized_path():
    gen = torch.Generator().manual_seed(7)
    length, upsample = 8, 2
    for beta in (0.0, 1.0, 2.0):
        q, k, gate = (torch.randn(2, length, 2, 3, generator=gen), torch.randn(2, length, 2, 3, generator=gen),
                      torch.randn(2, length, 2, generator=gen))
        graph_len = torch.tensor([8, 6])
        links = dag.links_from_heads(q, k, gate, graph_len)
        score = torch.randn(2, length, generator=gen).clamp(max=0)
        chosen = dag.joint_viterbi(links, graph_len, score, upsample, beta)
        for b in range(2):
            n = int(graph_len[b])
            longest = min(n - 2, 2 * n // upsample)
            best = max((p for steps in range(3, longest + 3) for p in paths(n, steps)),
                       key=lambda p: (sum(links[b, x, y].item() for x, y in zip(p, p[1:]))
                                      + sum(score[b, v].item() for v in p[:-1])) / (len(p) - 2) ** beta)
            got = chosen[b].tolist()
            assert got[:got.index(n - 1) + 1] == list(best[1:])


def hand_graph():
    """One 5-vertex graph: greedy follows the likeliest edge 0 -> 1 (vertex 1's tokens are
    unsure), lookahead the edge to the sure vertex 2."""
    prob = torch.zeros(1, 5, 5)
    prob[0, 0, 1:] = torch.tensor([0.5, 0.4, 0.05, 0.05])
    prob[0, 1, 4] = prob[0, 2, 3] = prob[0, 3, 4] = 1.0
    links = prob.clamp(min=1e-30).log().masked_fill(prob == 0, dag.NEG)
    score = torch.tensor([[0.0, math.log(0.1), math.log(0.9), math.log(0.9), 0.0]])
    return links, torch.tensor([5]), score


def test_greedy_takes_the_likeliest_edge_and_lookahead_weighs_the_next_token():
    links, graph_len, score = hand_graph()
    token = torch.tensor([[2, 11, 12, 12, 3]])
    assert dag.walk(links, graph_len).tolist() == [[1, 4]]
    path = dag.walk(links, graph_len, score)
    assert path.tolist() == [[2, 3, 4]]
    assert dag.read_out(path, token, graph_len) == [[12]]  # 12 12 merged (consecutive repeat)
    assert dag.read_out(path, token, graph_len, dedup=False) == [[12, 12]]


def test_glance_count_rounded_takes_floor_wrong_times_p_plus_half():
    uniform = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.05]])
    real = torch.tensor([[True, True, True, True, False]])
    assert glanced_positions("count_rounded", uniform, torch.tensor([3]), real, 0.5).sum() == 2  # 1.5 + .5
    assert glanced_positions("count", uniform, torch.tensor([3]), real, 0.5).sum() == 1


def tiny(**extra):
    torch.manual_seed(0)
    return build("dat", model_config("dat", vocab_size=30, d=16, layers=1, **extra)).eval()


def toy_batch(n=6):
    pairs = toy_pairs(n, vocab_size=30)
    return collate([s for s, _ in pairs], [t for _, t in pairs], 0, 2, 3)


def test_the_model_loss_is_the_mean_path_sum_per_target_token_with_bos_and_eos():
    model, b = tiny(upsample=2), toy_batch()
    loss, logs = model.loss(b)
    start = model.glance_start(b)
    logits, links, graph_len = model._graph(start.inputs, start)
    target, tgt_len = model._target(b["tgt"])
    emit = logits.log_softmax(-1).gather(2, target[:, None, :].expand(-1, logits.size(1), -1))
    assert torch.allclose(model._emissions(logits, target), emit, atol=1e-6)
    assert (target[:, 0] == 2).all() and tgt_len.tolist() == (b["tgt"].ne(0).sum(1) + 2).tolist()
    per = [-torch.logsumexp(torch.stack([path_score(emit[i], links[i], p)
                                         for p in paths(int(graph_len[i]), int(tgt_len[i]))]), 0) / tgt_len[i]
           for i in range(len(target)) if tgt_len[i] <= graph_len[i]]
    assert logs["infeasible_share"] == (len(target) - len(per)) / len(target)
    assert loss.item() == pytest.approx(torch.stack(per).sum().item() / len(target), rel=1e-5)


@pytest.fixture(scope="module")
def briefly_trained():
    """A tiny DAT after 60 updates on the toy batch: its paths pass interior vertices."""
    model, b = tiny(upsample=3), toy_batch()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss, _ = model.loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), b


@pytest.mark.parametrize("method", ["lookahead", "greedy", "joint_viterbi", "sample"])
def test_decoding_never_emits_specials_and_is_reproducible(method, briefly_trained):
    model, b = briefly_trained
    out = model.generate(b["src"], method=method, seed=4)
    assert len(out) == len(b["src"]) and any(out)
    assert not SPECIALS & {t for row in out for t in row}
    assert out == model.generate(b["src"], method=method, seed=4)
    alone = [model.generate(b["src"][i:i + 1, :int(b["src"][i].ne(0).sum())], method=method, seed=4)[0]
             for i in range(len(out))]
    if method != "sample":  # a sentence's output does not depend on its batch
        assert alone == out
    with pytest.raises(KdgridError, match="lookahead"):
        model.generate(b["src"], method="beam")


def test_the_infeasible_count_is_feasible_pair_by_pair():
    import random

    rng = random.Random(1)
    src = [[rng.randint(5, 9) for _ in range(rng.randint(0, 4))] for _ in range(300)]
    tgt = [[rng.randint(5, 7) for _ in range(rng.randint(0, 14))] for _ in range(300)]
    model = tiny(upsample=2)
    record = infeasible_pairs(model, {"train": (Ids.from_lists(src), Ids.from_lists(tgt))})
    expected = sum(not model.feasible(len(s) + 1, t) for s, t in zip(src, tgt))
    assert record["train"] == expected and 0 < expected < 300 and "bos and eos" in record["rule"]
    kept = [(s, t) for s, t in zip(src, tgt) if 0 < len(s) <= 3 and 0 < len(t) <= 3]  # as training keeps them
    record = infeasible_pairs(model, {"train": (Ids.from_lists(src), Ids.from_lists(tgt))}, max_len=3)
    assert record["train_pairs"] == len(kept) < 300 and "max_len 3" in record["counted_over"]
    assert record["train"] == sum(not model.feasible(len(s) + 1, t) for s, t in kept)


def test_glance_first_marks_the_best_path_s_vertices_with_their_gold_tokens():
    model, b = tiny(upsample=3), toy_batch(3)
    start = model.glance_start(b)
    predicted, oracle, eligible = model.glance_first(start, b)
    target, tgt_len = model._target(b["tgt"])
    logits, links, graph_len = model._graph(start.inputs, start)
    path, found = dag.best_path(model._emissions(logits, target), links, tgt_len, graph_len)
    for i in range(3):
        on = path[i, :int(tgt_len[i])]
        assert found[i] and eligible[i].nonzero()[:, 0].tolist() == on.tolist()
        assert oracle[i, on].tolist() == target[i, :int(tgt_len[i])].tolist()


def test_pairs_without_a_path_add_nothing_and_leave_the_gradient_finite():
    model, b = tiny(upsample=1), toy_batch()  # every toy target has more tokens (+ bos, eos) than source + eos
    short = collate([[10, 11, 12, 13]], [[14, 15]], 0, 2, 3)  # 4 vertices, 4 tokens with bos and eos: a path
    model.train()
    loss, logs = model.loss(b)
    assert loss.item() == 0 and logs["infeasible_share"] == 1
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() and g.abs().sum() == 0 for g in grads)
    assert model.loss(short)[1]["infeasible_share"] == 0 and model.loss(short)[0].item() > 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (make gpu-check)")
@pytest.mark.parametrize("method", ["lookahead", "greedy", "joint_viterbi", "sample"])
def test_every_decoder_runs_on_cuda_as_on_the_cpu(method, briefly_trained):
    """The deterministic decoders give the CPU's outputs; sampling draws from the device's own
    generator (other numbers), so it is held to its rules only."""
    import copy

    model, b = briefly_trained
    on_gpu = copy.deepcopy(model).cuda()
    out = on_gpu.generate(b["src"].cuda(), method=method, seed=4)
    assert not SPECIALS & {t for row in out for t in row}
    if method != "sample":
        assert out == model.generate(b["src"], method=method, seed=4)
