"""The Trainer: schedule, batching, exact resume after an interruption, damaged checkpoints."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from conftest import model_config, toy_pairs

from kdgrid.batching import Ids, token_batches
from kdgrid.errors import KdgridError
from kdgrid.models import build
from kdgrid.train import TrainConfig, Trainer, learning_rate, train_config

PAIRS = toy_pairs(24, seed=5)
DATA = (Ids.from_lists([p[0] for p in PAIRS]), Ids.from_lists([p[1] for p in PAIRS]))
CFG = dict(max_tokens=40, lr=2e-3, warmup_updates=5, max_updates=24, valid_every=5, log_every=5,
           label_smoothing=0.1, seed=4)


def trainer(work, kind="transformer", **over):
    torch.manual_seed(4)
    model = build(kind, model_config(kind, d=32, layers=1, dropout=0.1))
    return Trainer(model, DATA, DATA, TrainConfig(**{**CFG, **over}), work, meta={})


def test_learning_rate_schedule_hand_checked():
    cfg = TrainConfig(lr=1e-3, warmup_updates=100, warmup_init_lr=0.0, max_updates=1)
    assert learning_rate(cfg, 50) == pytest.approx(5e-4)
    assert learning_rate(cfg, 100) == pytest.approx(1e-3)
    assert learning_rate(cfg, 400) == pytest.approx(5e-4)  # 1e-3 * sqrt(100 / 400)


def test_weight_decay_is_decoupled_from_the_gradient_scale(tmp_path):
    """A parameter with zero gradient shrinks by exactly lr * wd * p in one step (AdamW). Coupled
    L2 inside Adam would move it by ~lr whatever wd is (the decay term, divided by its own scale)."""
    t = trainer(tmp_path / "w", weight_decay=0.01)
    lr = 1e-3
    for group in t.optim.param_groups:
        group["lr"] = lr
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    for p in t.model.parameters():
        p.grad = torch.zeros_like(p)
    t.optim.step()
    for n, p in t.model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] * (1 - lr * 0.01), rtol=1e-6, atol=1e-8)


def test_token_batches_respect_budget_and_cover_every_sentence():
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(1, 30, 500), rng.integers(1, 30, 500)
    batches = token_batches(src, tgt, 200, seed=3)
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    for b in batches:
        assert len(b) * max(max(src[b]), max(tgt[b])) + len(b) <= 200 or len(b) == 1
    again = token_batches(src, tgt, 200, seed=3)
    assert all((a == b).all() for a, b in zip(batches, again))
    assert any((a != b).any() if len(a) == len(b) else True
               for a, b in zip(batches, token_batches(src, tgt, 200, seed=4)))


@pytest.mark.parametrize("kind", ["transformer", "nat"])
def test_interrupted_run_resumes_to_identical_weights(tmp_path, kind, capfd):
    whole = trainer(tmp_path / "a", kind)
    whole.run(tmp_path / "a.pt")

    part = trainer(tmp_path / "b", kind)
    calls = {"n": 0}
    loss = part.model.loss

    def loss_then_sigterm(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 13:  # mid-epoch, after two validations
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(*args, **kwargs)

    part.model.loss = loss_then_sigterm
    with pytest.raises(SystemExit) as stop:
        part.run(tmp_path / "b.pt")
    assert stop.value.code == 143 and not (tmp_path / "b.pt").exists()
    assert (tmp_path / "b" / "last.pt").exists()

    resumed = trainer(tmp_path / "b", kind)
    resumed.run(tmp_path / "b.pt")
    assert "resuming from" in capfd.readouterr().err
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert whole.state["history"] == resumed.state["history"]
    assert not (tmp_path / "b" / "last.pt").exists()  # a finished run leaves no resumable state


def _interrupt_at(tmp_path, n_loss_calls):
    part = trainer(tmp_path)
    loss, calls = part.model.loss, {"n": 0}

    def wrapped(*a, **k):
        calls["n"] += 1
        if calls["n"] == n_loss_calls:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(*a, **k)

    part.model.loss = wrapped
    with pytest.raises(SystemExit):
        part.run(tmp_path / "m.pt")


def test_truncated_last_checkpoint_falls_back_to_previous(tmp_path, capfd):
    _interrupt_at(tmp_path / "w", 13)
    last = tmp_path / "w" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    t = trainer(tmp_path / "w")
    t.run(tmp_path / "m.pt")
    err = capfd.readouterr().err
    assert "unreadable" in err and "resuming from" in err and "prev.pt" in err
    whole = trainer(tmp_path / "ref")
    whole.run(tmp_path / "ref.pt")
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(),
                                                 t.model.state_dict().values()))


def test_all_checkpoints_damaged_stops_with_a_clear_message(tmp_path):
    _interrupt_at(tmp_path / "w", 13)
    for name in ("last.pt", "prev.pt"):
        (tmp_path / "w" / name).write_bytes(b"garbage")
    with pytest.raises(KdgridError, match="every checkpoint there is unreadable"):
        trainer(tmp_path / "w").run(tmp_path / "m.pt")


def test_checkpoint_from_other_settings_is_not_resumed(tmp_path, capfd):
    _interrupt_at(tmp_path / "w", 13)
    trainer(tmp_path / "w", lr=1e-3).run(tmp_path / "m.pt")
    err = capfd.readouterr().err
    assert "different settings" in err and "resuming" not in err
    assert (tmp_path / "w" / "stale" / "last.pt").exists()


def test_bad_training_options_are_named():
    with pytest.raises(KdgridError, match="unknown training option.*max_update\\b"):
        train_config({"max_update": 3})
    with pytest.raises(KdgridError, match="never stops"):
        train_config({"max_updates": 0, "max_epochs": 0})
    with pytest.raises(KdgridError, match="max_tokens must be positive"):
        train_config({"max_updates": 3, "max_tokens": 0})


def test_validation_is_repeatable_for_students_with_noisy_losses(tmp_path):
    """CMLM's loss masks at random: two validations of the same weights must agree, and
    validating must not shift the training random stream."""
    t = trainer(tmp_path / "w", "cmlm")
    torch.manual_seed(123)
    untouched = torch.rand(1)
    torch.manual_seed(123)
    first = t.validate()
    assert torch.equal(torch.rand(1), untouched)
    torch.manual_seed(7)
    assert t.validate() == first


def test_without_weight_decay_adamw_takes_the_very_steps_of_adam(tmp_path):
    """Runs with weight_decay 0 (the demo, Multi30k) are unchanged by the move to AdamW."""
    from kdgrid.batching import collate

    def steps(optimizer_class):
        t = trainer(tmp_path / optimizer_class.__name__)
        optim = optimizer_class(t.model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.0)
        torch.manual_seed(0)
        for idx in token_batches(DATA[0].lengths, DATA[1].lengths, 40)[:5]:
            batch = collate([PAIRS[i][0] for i in idx], [PAIRS[i][1] for i in idx], 0, 2, 3)
            optim.zero_grad()
            t.model.loss(batch, 0.1)[0].backward()
            optim.step()
        return t.model.state_dict()

    adam, adamw = steps(torch.optim.Adam), steps(torch.optim.AdamW)
    assert adam.keys() == adamw.keys() and all(torch.equal(adam[k], adamw[k]) for k in adam)
