"""Rescoring NAT candidates with an AT model (noisy parallel decoding): the scores against a
one-prefix-at-a-time computation, the choice the refinement loop makes with them, and the CLI."""

from __future__ import annotations

import pytest
import torch
from conftest import model_config
from test_students import Countdown

from kdgrid.errors import KdgridError
from kdgrid.models import build
from kdgrid.refine import refine
from kdgrid.rescore import Rescorer

SRC = torch.tensor([[5, 6, 7, 8, 3], [9, 10, 3, 0, 0], [11, 12, 13, 3, 0]])


def at_model(seed=0):
    torch.manual_seed(seed)
    return build("transformer", model_config("transformer", d=32)).eval()


@torch.no_grad()
def by_prefix(model, src, hyp):
    """Mean log-probability of hyp + EOS, one prefix at a time with no padding anywhere."""
    memory, src_pad = model.encode(src[None])
    total, prev = 0.0, [model.cfg.bos]
    for tok in [*hyp, model.cfg.eos]:
        logp = model.decode_step(torch.tensor([prev]), memory, src_pad, None)[0]
        total += logp[tok].item()
        prev.append(tok)
    return total / (len(hyp) + 1)


def test_scores_are_the_at_models_mean_log_prob_with_eos():
    model = at_model()
    src = SRC[[0, 0, 1, 2]]
    src = src[:, : int(src.ne(0).sum(1).max())]
    hyps = [[20, 21, 22], [20], [], [30, 31, 32, 33, 34, 35]]  # varied lengths, one empty
    expected = [by_prefix(model, src[i][src[i].ne(0)], h) for i, h in enumerate(hyps)]
    got = Rescorer(model)(src, hyps)
    assert got.tolist() == pytest.approx(expected, abs=1e-5)
    chunked = Rescorer(model, max_tokens=8)(src, hyps)  # one row per chunk: same numbers
    assert chunked.tolist() == pytest.approx(expected, abs=1e-5)


def test_refinement_loop_keeps_the_candidate_the_rescorer_prefers():
    model = Countdown(targets={1: 2, 2: 5})
    src = torch.tensor([[1], [2]])
    assert refine(model, src, max_iter=10, length_beam=2) == [[11, 7], [11, 7, 7, 7, 7]]

    def prefer_ten(rows, hyps):  # the rescorer's taste differs from the model's own scores
        return torch.tensor([1.0 if h[0] == 10 else 0.0 for h in hyps])

    assert refine(model, src, max_iter=10, length_beam=2, rescorer=prefer_ten) == [[10, 7], [10, 7, 7, 7, 7]]


class Recording:
    """Wraps a rescorer and keeps what it saw."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __call__(self, rows, hyps):
        scores = self.inner(rows, hyps)
        self.seen.append((hyps, scores))
        return scores


@pytest.mark.parametrize("kind,options", [("nat", {"length_beam": 3}),
                                          ("cmlm", {"length_beam": 3, "max_iter": 2}),
                                          ("flowseq", {"length_beam": 2, "samples": 3})])
def test_real_students_keep_the_at_models_best_candidate(kind, options):
    torch.manual_seed(1)
    student = build(kind, model_config(kind, d=32, **({"latent": 8} if kind == "flowseq" else {}))).eval()
    recording = Recording(Rescorer(at_model()))
    out = student.generate(SRC, rescorer=recording, **options)
    (hyps, scores), = recording.seen
    per_sentence = len(hyps) // len(SRC)
    assert per_sentence == options["length_beam"] * options.get("samples", 1)
    for s, chosen in enumerate(out):
        rows = range(s * per_sentence, (s + 1) * per_sentence)
        best = max(rows, key=lambda r: float(scores[r]))
        assert chosen == hyps[best]
    assert out != student.generate(SRC, **options)  # the AT's ranking changed some choice
    for rescorer in (None, Rescorer(at_model())):  # batch-independent, with or without rescoring
        together = student.generate(SRC, rescorer=rescorer, **options)
        alone = [student.generate(SRC[i : i + 1, : int(SRC[i].ne(0).sum())], rescorer=rescorer,
                                  **options)[0] for i in range(len(SRC))]
        assert together == alone


def test_only_autoregressive_models_rescore():
    with pytest.raises(KdgridError, match="rescoring needs an autoregressive model"):
        Rescorer(build("nat", model_config("nat", d=32)))
