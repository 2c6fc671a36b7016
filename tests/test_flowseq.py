"""FlowSeq's multi-scale prior flow: invertibility and log-determinants with padding, ActNorm's
data-dependent initialization, dropword, batch-independent noisy decoding, old files and configs.
(Its overfit test is tests/test_students.py's, with the other students.)"""

from __future__ import annotations

import pytest
import torch
from conftest import model_config, toy_pairs

from kdgrid.batching import collate
from kdgrid.checkpoint import load_model, save_model
from kdgrid.errors import KdgridError
from kdgrid.models import build
from kdgrid.models.flow import ActNorm, squeeze

PAIRS = toy_pairs(8)
BATCH = collate([p[0] for p in PAIRS], [p[1] for p in PAIRS], pad=0, bos=2, eos=3)


def tiny(levels=(1, 1, 1), seed=0, **extra):
    """A tiny FlowSeq whose flow is far from the identity (couplings start at zero)."""
    torch.manual_seed(seed)
    model = build("flowseq", model_config("flowseq", d=16, layers=1, latent=4, flow_levels=list(levels),
                                          **extra))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("flow"):
                p.add_(0.3 * torch.randn_like(p))
    return model


def context(model, lengths, width):
    src = torch.tensor([[11, 12, 13, 3, 0], [14, 15, 16, 17, 3], [18, 3, 0, 0, 0]])[: len(lengths)]
    memory, src_pad = model.encode(src)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).to(memory.dtype)
    return mask, memory, src_pad


def test_squeeze_pairs_real_steps_and_leaves_the_odd_one():
    x = torch.arange(2 * 5 * 2, dtype=torch.float).view(2, 5, 2)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]).float()
    sq, sq_mask, lone = squeeze(x, mask)
    assert sq.shape == (2, 3, 4) and torch.equal(sq[0, 1], torch.cat([x[0, 2], x[0, 3]]))
    assert sq_mask.tolist() == [[1, 1, 0], [1, 0, 0]]  # a pair is real when both steps are
    assert lone.tolist() == [[False] * 4 + [True], [False, False, True, False, False]]


@pytest.mark.parametrize("levels", [(1, 1, 1), (2, 1), (1,)])
def test_flow_inverts_and_ignores_padding(levels):
    model = tiny(levels).eval()
    mask, memory, src_pad = context(model, [5, 2, 1], 7)
    real = mask.bool()
    torch.manual_seed(1)
    z = torch.randn(3, 7, 4)
    eps, logdet = model.prior_forward(z, mask, memory, src_pad)
    assert torch.allclose(model.prior_sample(eps, mask, memory, src_pad)[real], z[real], atol=1e-5)
    assert not torch.allclose(eps[real], z[real], atol=0.1)  # the flow is not the identity
    other = torch.where(real[..., None], z, torch.randn_like(z) * 100)  # other values at padding
    eps2, logdet2 = model.prior_forward(other, mask, memory, src_pad)
    assert torch.allclose(eps2[real], eps[real], atol=1e-5) and torch.allclose(logdet2, logdet, atol=1e-4)
    noise = torch.where(real[..., None], eps, torch.randn_like(eps) * 100)
    assert torch.allclose(model.prior_sample(noise, mask, memory, src_pad)[real], z[real], atol=1e-5)


@pytest.mark.parametrize("levels", [(1, 1, 1), (2, 2)])
def test_log_determinant_matches_the_jacobian(levels):
    """Per sentence: log|det| of the Jacobian of the real outputs by the real inputs (autograd, in
    float64), and no output of a real position depends on a padded one."""
    model = tiny(levels).double().eval()
    width = 6
    mask, memory, src_pad = context(model, [5, 2, 3], width)
    torch.manual_seed(2)
    z = torch.randn(3, width, 4, dtype=torch.float64)
    _, logdet = model.prior_forward(z, mask, memory, src_pad)
    for b, n in enumerate([5, 2, 3]):
        def f(row, b=b, n=n):
            full = z.clone()
            full[b] = row.view(width, 4)
            return model.prior_forward(full, mask, memory, src_pad)[0][b, :n].reshape(-1)

        jac = torch.autograd.functional.jacobian(f, z[b].reshape(-1))  # (n*4, width*4)
        assert torch.equal(jac[:, n * 4 :], torch.zeros_like(jac[:, n * 4 :]))  # padding: no influence
        sign, value = torch.linalg.slogdet(jac[:, : n * 4])
        assert sign != 0 and value.item() == pytest.approx(logdet[b].item(), abs=1e-8)


def actnorm_outputs(model):
    """Hooks recording each ActNorm's (output, mask) at its next call."""
    seen = {}

    def hook(module, args, out):
        seen.setdefault(module.name, (out[0], args[1]))  # returns None: the output is unchanged

    for name, m in model.named_modules():
        if isinstance(m, ActNorm):
            m.name = name
            m.register_forward_hook(hook)
    return seen


def test_actnorm_data_init_once_and_kept_after_loading(tmp_path):
    torch.manual_seed(0)
    model = build("flowseq", model_config("flowseq", latent=8, flow_levels=[2, 1, 1])).train()
    seen = actnorm_outputs(model)
    model.loss(BATCH)
    assert len(seen) == 4
    for name, (out, mask) in seen.items():  # zero mean, unit variance over the real positions
        real = out.detach()[mask.bool()]
        assert len(real) >= 2, name
        assert torch.allclose(real.mean(0), torch.zeros(8), atol=1e-4), name
        assert torch.allclose(real.std(0, unbiased=False), torch.ones(8), atol=1e-3), name
    norms = {n: m for n, m in model.named_modules() if isinstance(m, ActNorm)}
    assert all(bool(m.initialized) for m in norms.values())
    first = {n: (m.log_scale.clone(), m.bias.clone()) for n, m in norms.items()}
    model.loss(collate([p[0] for p in PAIRS[:3]], [p[1] for p in PAIRS[:3]], 0, 2, 3))  # another batch
    for n, m in norms.items():
        assert torch.equal(m.log_scale, first[n][0]) and torch.equal(m.bias, first[n][1])

    save_model(tmp_path / "model.pt", model, {})
    loaded, _ = load_model(tmp_path / "model.pt")
    loaded.train().loss(BATCH)
    for n, m in loaded.named_modules():
        if isinstance(m, ActNorm):
            assert bool(m.initialized) and torch.equal(m.log_scale, first[n][0]), n
    fresh = build("flowseq", model_config("flowseq", latent=8, flow_levels=[2, 1, 1])).train()
    fresh.load_state_dict(model.state_dict())  # e.g. a resumed training run
    fresh.loss(BATCH)
    assert torch.equal(fresh.flow[0].log_scale, first["flow.0"][0])


def test_an_untrained_model_is_not_initialized_when_evaluated():
    model = build("flowseq", model_config("flowseq", latent=8)).eval()
    model.loss(BATCH)
    assert not bool(model.flow[0].initialized) and torch.equal(model.flow[0].bias, torch.zeros(8))


def test_single_scale_files_and_configs_keep_loading(tmp_path):
    """kdgrid-model files of the single-scale FlowSeq: `flow_steps` in the config, no
    `initialized` flags (their actnorms are trained: they must not be re-initialized)."""
    config = model_config("flowseq", latent=8, flow_steps=2)
    torch.manual_seed(0)
    model = build("flowseq", config)
    assert model.cfg.flow_levels == [2] and model.cfg.flow_steps is None
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("initialized")}
    torch.save({"format": "kdgrid-model/1", "kind": "flowseq", "config": config, "state_dict": state,
                "meta": {}}, tmp_path / "old.pt")
    old, _ = load_model(tmp_path / "old.pt")
    assert old.cfg.flow_levels == [2] and bool(old.flow[0].initialized)
    before = old.flow[0].bias.clone()
    old.train().loss(BATCH)
    assert torch.equal(old.flow[0].bias, before)
    # defaults merged with an old config give both: flow_steps, the older way, wins
    both = build("flowseq", model_config("flowseq", latent=8, flow_steps=3, flow_levels=[4, 4, 2]))
    assert both.cfg.flow_levels == [3]
    for bad in ([], [2, 0], 3):
        with pytest.raises(KdgridError, match="flow_levels"):
            build("flowseq", model_config("flowseq", flow_levels=bad))


def test_dropword_only_while_training():
    model = build("flowseq", model_config("flowseq", latent=8, posterior_dropword=0.5))
    tgt = BATCH["tgt"]
    positions = model.embed.positions[: tgt.size(1)]
    words = lambda: model.posterior_input(tgt) - positions  # noqa: E731
    real = tgt.ne(0)
    torch.manual_seed(0)
    train = words()
    dropped = train.abs().sum(-1).eq(0) & real
    assert 0 < dropped.sum() < real.sum()
    assert torch.allclose(train[real & ~dropped], 2 * model.embed.tokens(tgt)[real & ~dropped])
    model.eval()
    assert torch.equal(model.posterior_input(tgt), model.embed(tgt))  # eval: the plain embeddings


def test_noisy_decoding_is_batch_independent_with_several_levels():
    model = tiny((1, 1, 1)).eval()
    src = torch.tensor([[11, 12, 13, 14, 15, 3], [16, 17, 3, 0, 0, 0], [18, 19, 20, 3, 0, 0]])
    for options in ({}, {"samples": 3, "length_beam": 2}):
        together = model.generate(src, **options)
        alone = [model.generate(src[i : i + 1, : int(src[i].ne(0).sum())], **options)[0] for i in range(3)]
        assert together == alone


def test_the_trainer_initializes_actnorms_from_one_batch_before_training(tmp_path):
    """Every process gets the same first batch through data_init (no collective in a forward);
    an actnorm that batch never reaches (a level deeper than its sentences) starts as the identity."""
    from kdgrid.batching import Ids
    from kdgrid.train import TrainConfig, Trainer

    torch.manual_seed(0)
    model = build("flowseq", model_config("flowseq", latent=8, flow_levels=[1, 1, 1, 1, 1, 1]))
    short = [([5, 6], [7, 8]), ([6, 5], [8, 7])]  # 2 target tokens: levels past the second are empty
    data = (Ids.from_lists([s for s, _ in short]), Ids.from_lists([t for _, t in short]))
    calls = []
    data_init = model.data_init
    model.data_init = lambda batch: calls.append(batch["tgt"].shape) or data_init(batch)
    cfg = TrainConfig(max_tokens=100, lr=1e-3, warmup_updates=1, max_updates=1, valid_every=1, log_every=1)
    Trainer(model, data, data, cfg, tmp_path / "work", meta={}).run(tmp_path / "model.pt")
    assert len(calls) == 1
    norms = [m for m in model.modules() if isinstance(m, ActNorm)]
    assert all(bool(m.initialized) for m in norms)
    assert any(torch.equal(m.log_scale.detach(), torch.zeros_like(m.log_scale)) for m in norms[-2:])
