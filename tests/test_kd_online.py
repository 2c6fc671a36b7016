"""Word-level and online KD wrappers (kdgrid.kd.word, kdgrid.kd.online), in the Trainer and through
`kdgrid train --wrap`, including a kill -9 and a rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import encoded_toy_corpus, env, model_config, toy_pairs

from kdgrid.batching import Ids, collate
from kdgrid.errors import KdgridError
from kdgrid.kd import KDSpec, OnlineKD, OnlineSpec, WordKD
from kdgrid.kd.word import teacher_logprobs
from kdgrid.models import build
from kdgrid.train import TrainConfig, Trainer

PAIRS = toy_pairs(16, seed=5)
DATA = (Ids.from_lists([p[0] for p in PAIRS]), Ids.from_lists([p[1] for p in PAIRS]))
ONLINE = KDSpec(loss="mix", alpha=0.5, temperature=2.0, online=OnlineSpec(rank=2, lr=0.01, weight=0.5))


def model(kind, seed, dropout=0.0, **extra):
    torch.manual_seed(seed)
    cfg = model_config(kind, d=16, layers=1, dropout=dropout, **extra)
    if kind == "moe":
        del cfg["mask"]
    return build(kind, cfg)


def batch(n=6):
    return collate([s for s, _ in PAIRS[:n]], [t for _, t in PAIRS[:n]], 0, 2, 3)


def snapshot(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def moved(before: dict, module) -> set:
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


# -- word-level KD ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["transformer", "nat", "cmlm"])
def test_with_alpha_zero_the_wrapper_loss_is_the_students_own_exactly(kind):
    """The wrapper scores the student's own loss_terms: same draws, same numbers."""
    student = model(kind, 1, dropout=0.2).train()
    kd = WordKD(student, model("transformer", 2), KDSpec(alpha=0.0)).train()
    b = batch()
    torch.manual_seed(7)
    own, own_logs = student.loss(b, label_smoothing=0.1)
    torch.manual_seed(7)
    wrapped, logs = kd.loss(b, label_smoothing=0.1)
    assert torch.equal(own, wrapped)
    assert torch.equal(own_logs["nll"], logs["nll"]) and own_logs["ntokens"] == logs["ntokens"]
    assert logs["kd"] > 0 and {"loss", "nll", "ntokens", "word_ce", "kd"} <= set(logs)
    assert ("length" in logs) == (kind != "transformer")


def test_the_teacher_is_frozen_and_never_part_of_the_wrapper():
    student, teacher = model("cmlm", 1), model("transformer", 2)
    kd = WordKD(student, teacher, KDSpec(alpha=0.7, loss="rkl")).train()
    assert all(k.startswith("student.") for k in kd.state_dict())
    assert sum(p.numel() for p in kd.parameters()) == sum(p.numel() for p in student.parameters())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert kd.kind == "cmlm" and kd.cfg is student.cfg and kd.student is student
    loss, logs = kd.loss(batch(), label_smoothing=0.1)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.embed.table.weight.grad is not None
    kd.eval()  # validation: the student's own loss
    torch.manual_seed(3)
    own, _ = student.loss(batch(), label_smoothing=0.0)
    torch.manual_seed(3)
    assert torch.equal(kd.loss(batch(), label_smoothing=0.0)[0], own)


def test_unsupported_students_and_teachers_are_named():
    with pytest.raises(KdgridError, match="'inat'"):
        WordKD(model("inat", 1), model("transformer", 2), KDSpec())
    with pytest.raises(KdgridError, match="teacher must be an autoregressive.*'nat'"):
        WordKD(model("nat", 1), model("nat", 2), KDSpec())


@torch.no_grad()
def test_an_moe_teacher_gives_its_mixtures_next_token_distribution_at_every_position():
    """By hand, one sentence at a time (no padding): p(. | y_<t, x) = sum_k w_k(t) p_k(. | y_<t, x)
    with w_k(t) proportional to p(k | x) * prod_{s<t} p_k(y_s | y_<s, x): the experts' posterior
    given the prefix before position t (y_t itself not included)."""
    teacher = model("moe", 2, experts=3, prior="learned").eval()
    for p in teacher.gate.parameters():  # a prior far from uniform
        p.normal_()
    b = batch()
    mix = teacher_logprobs(teacher, b)
    torch.testing.assert_close(mix.logsumexp(-1), torch.zeros(mix.shape[:2]), atol=1e-5, rtol=0)
    for i, (src, tgt) in enumerate(PAIRS[: len(b["src"])]):
        memory, src_pad = teacher.encode(torch.tensor([src + [3]]))
        prev = torch.tensor([[2] + tgt])
        per_expert = [torch.log_softmax(teacher.decode(teacher.with_start(prev, k), memory, src_pad)[0].double(), -1)
                      for k in range(3)]
        log_w = teacher.prior_logprobs(memory, src_pad)[0].double().clone()
        assert log_w.exp().max() > 0.4  # not uniform: the prior matters
        for t, gold in enumerate(tgt + [3]):
            w = torch.softmax(log_w, 0)
            by_hand = sum(w[k] * per_expert[k][t].exp() for k in range(3)).log()
            torch.testing.assert_close(mix[i, t].double(), by_hand, atol=1e-4, rtol=1e-4)
            log_w += torch.stack([per_expert[k][t, gold] for k in range(3)])  # y_t joins the prefix


# -- online KD --------------------------------------------------------------------------------
def online(seed=1):
    return OnlineKD(model("cmlm", seed, dropout=0.1), model("transformer", 2), ONLINE).train()


def test_at_step_zero_the_adapted_teacher_is_the_frozen_teacher_exactly():
    kd, frozen = online(), model("transformer", 2).eval()
    assert len(kd.adapters) == 5 + 8  # encoder: q kv out fc1 fc2; decoder: the same + cross q kv out
    with torch.no_grad():
        assert torch.equal(teacher_logprobs(kd.teacher, batch()), teacher_logprobs(frozen, batch()))
    assert all(k.startswith(("student.", "adapters.")) for k in kd.state_dict())


def test_one_step_moves_the_student_and_adapters_never_the_teacher():
    kd = online()
    cfg = TrainConfig(max_updates=1, lr=0.01, warmup_updates=0)
    main = torch.optim.AdamW(kd.student.parameters(), lr=0.01)
    (adapter_opt, peak), = kd.extra_optimizers(cfg).values()
    for g in adapter_opt.param_groups:
        g["lr"] = peak
    teacher, student, adapters = snapshot(kd.teacher), snapshot(kd.student), snapshot(kd.adapters)
    loss, logs = kd.loss(batch(), label_smoothing=0.1)
    loss.backward()
    main.step(), adapter_opt.step()
    assert not moved(teacher, kd.teacher)
    assert moved(student, kd.student)
    ups = {k for k in adapters if k.endswith("up.weight")}
    assert moved(adapters, kd.adapters) == ups  # `down` gets no gradient while `up` is zero
    assert {"adapter_ce", "adapter_kl", "kd", "word_ce"} <= set(logs)
    with torch.no_grad():
        assert not torch.equal(teacher_logprobs(kd.teacher, batch()), teacher_logprobs(
            model("transformer", 2).eval(), batch()))


def test_each_loss_reaches_only_its_own_parameters():
    kd = online()
    with torch.no_grad():  # non-zero `up`: every adapter weight can get a gradient
        for a in kd.adapters.values():
            a.up.weight.normal_()
    student, adapter, _ = kd.losses(batch(), label_smoothing=0.1)
    student.backward(retain_graph=True)
    assert any(p.grad is not None for p in kd.student.parameters())
    assert all(p.grad is None for p in kd.adapters.parameters())
    kd.zero_grad(set_to_none=True)
    adapter.backward()
    assert all(p.grad is None for p in kd.student.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in kd.adapters.parameters())
    assert all(p.grad is None for p in kd.teacher.parameters())


def trainer(work):
    cfg = TrainConfig(max_tokens=40, lr=2e-3, warmup_updates=3, max_updates=10, valid_every=4,
                      log_every=5, seed=4)
    return Trainer(online(seed=1), DATA, DATA, cfg, work, meta={"wrapper": {"kd": {"online": True}}})


def test_an_interrupted_online_run_resumes_its_adapters_and_their_optimizer(tmp_path, capfd):
    whole = trainer(tmp_path / "a")
    whole.run(tmp_path / "a.pt")
    part = trainer(tmp_path / "b")
    loss, calls = part.model.loss, {"n": 0}

    def loss_then_sigterm(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # after the checkpoint of update 4
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(*args, **kwargs)

    part.model.loss = loss_then_sigterm
    with pytest.raises(SystemExit):
        part.run(tmp_path / "b.pt")
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert saved["extra_optim"]["adapter"]["state"] and any(k.startswith("adapters.") for k in saved["model"])
    resumed = trainer(tmp_path / "b")
    resumed.run(tmp_path / "b.pt")
    assert "resuming from" in capfd.readouterr().err
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    (opt_a, _), (opt_b, _) = whole.extra["adapter"], resumed.extra["adapter"]
    for sa, sb in zip(opt_a.state_dict()["state"].values(), opt_b.state_dict()["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in ("exp_avg", "exp_avg_sq"))
    out = torch.load(tmp_path / "b.pt", weights_only=False)  # the plain student
    assert out["kind"] == "cmlm" and not any(k.startswith(("student.", "adapters.")) for k in out["state_dict"])


# -- through the CLI --------------------------------------------------------------------------
PY = [sys.executable, "-m", "kdgrid"]
BODY = {"d_model": 16, "ffn": 32, "heads": 2, "dropout": 0.2, "attention_dropout": 0.0}
TRAIN = {"max_tokens": 120, "lr": 0.003, "warmup_updates": 5, "max_updates": 80, "valid_every": 40,
         "log_every": 20, "save_every": 2, "seed": 3}
WRAP = {"init": {"from": "toy", "layers": "last"},
        "kd": {"teacher": "toy", "loss": "fkl", "alpha": 0.5, "online": {"rank": 2, "lr": 0.003}}}


def cli(*args):
    proc = subprocess.run([*PY, *map(str, args)], capture_output=True, text=True, env=env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A sentencepiece vocabulary over a toy corpus and a 2-layer AT teacher file of that vocabulary."""
    from kdgrid.checkpoint import save_model
    from kdgrid.vocab import Vocab

    d = encoded_toy_corpus(tmp_path_factory.mktemp("kdcli"), cli, pairs=60, vocab_size=40, pieces=60)
    v = Vocab.load(d / "spm.model")
    torch.manual_seed(0)
    teacher = build("transformer", {**BODY, "encoder_layers": 2, "decoder_layers": 2, **v.model_ids()})
    save_model(d / "teacher.pt", teacher, {"vocab_sha256": v.sha256})
    return d


def train_args(d, out, work):
    return ["train", "--kind", "cmlm", "--model-params", json.dumps({**BODY, "encoder_layers": 1,
                                                                     "decoder_layers": 1}),
            "--train-params", json.dumps(TRAIN), "--vocab", d / "spm.model", "--train-src", d / "src.npz",
            "--train-tgt", d / "tgt.npz", "--valid-src", d / "src.npz", "--valid-tgt", d / "tgt.npz",
            "--out", out, "--work-dir", work, "--wrap", json.dumps(WRAP), "--init-teacher", d / "teacher.pt",
            "--kd-teacher", d / "teacher.pt"]


def last_update(work) -> int:
    try:
        return torch.load(work / "last.pt", map_location="cpu", weights_only=False)["state"]["update"]
    except Exception:  # noqa: BLE001 - not written yet, or being replaced
        return 0


def test_cli_online_kd_writes_a_plain_student_and_resumes_after_kill_9(setup, tmp_path):
    from kdgrid.checkpoint import load_model

    cli(*train_args(setup, tmp_path / "ref.pt", tmp_path / "ref"))
    student, meta = load_model(tmp_path / "ref.pt")
    assert student.kind == "cmlm" and meta["updates"] == TRAIN["max_updates"]
    wrapper = meta["wrapper"]
    assert wrapper["init"]["map"] == {"encoder": [1], "decoder": [1]} and wrapper["init"]["from"] == "toy"
    assert wrapper["kd"]["online"] == {"rank": 2, "lr": 0.003, "lambda": 1.0}
    assert len(wrapper["kd"]["teacher_sha256"]) == 64 and "KL(p_teacher || q_student)" in wrapper["kd"]["kd_formula"]
    assert wrapper["kd"]["teacher_distribution"] == "AT teacher, teacher-forced on the gold target prefix"
    assert wrapper["kd"]["distilled_positions"].startswith("the target tokens masked by the CMLM's own")
    assert wrapper["kd"]["adapter_targets"].startswith("the student's training targets")
    # the cell's scores.json carries the record (without init's parameter lists)
    cli("evaluate", "--model", tmp_path / "ref.pt", "--vocab", setup / "spm.model", "--src", setup / "train.src",
        "--ref", setup / "train.tgt", "--hyp", tmp_path / "ref.hyp", "--scores", tmp_path / "ref.json",
        "--params", json.dumps({"max_tokens": 400, "max_iter": 1, "length_beam": 1}))
    cell = json.loads((tmp_path / "ref.json").read_text())["wrapper"]
    assert cell["kd"] == wrapper["kd"] and cell["init"]["map"] == wrapper["init"]["map"]
    assert "copied" not in cell["init"] and "kept" not in cell["init"]

    args = train_args(setup, tmp_path / "model.pt", tmp_path / "work")
    proc = subprocess.Popen([*PY, *map(str, args)], stderr=open(tmp_path / "1.log", "w"), env=env())
    deadline = time.monotonic() + 120
    while last_update(tmp_path / "work") < 6:
        assert proc.poll() is None, "the job ended before a checkpoint at update 6"
        assert time.monotonic() < deadline, "no checkpoint at update 6 in time"
        time.sleep(0.02)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL and not (tmp_path / "model.pt").exists()
    second = cli(*args).stderr
    assert "resuming from" in second, second[-2000:]
    resumed_at = int(second.split("resuming from")[1].split("update ")[1].split(",")[0])
    assert 6 <= resumed_at < TRAIN["max_updates"]
    ref, got = (torch.load(tmp_path / name, weights_only=False) for name in ("ref.pt", "model.pt"))
    assert ref["state_dict"].keys() == got["state_dict"].keys()
    for name, tensor in ref["state_dict"].items():
        assert torch.equal(tensor, got["state_dict"][name]), name
    assert ref["meta"]["history"] == got["meta"]["history"]


def test_cli_wrap_errors_name_the_flag(setup, tmp_path, capsys):
    from kdgrid import cli
    from kdgrid.checkpoint import load_model, save_model

    def train(*extra):
        args = train_args(setup, tmp_path / "m.pt", tmp_path / "w")
        args = [str(a) for a in args[: args.index("--wrap")]] + [str(a) for a in extra]
        assert cli.main(args) == 2
        return capsys.readouterr().err

    assert "--kd-teacher" in train("--wrap", json.dumps({"kd": {}}))
    assert "--init-teacher" in train("--wrap", json.dumps({"init": {"layers": "first"}}))
    assert "unknown key kd.tau" in train("--wrap", json.dumps({"kd": {"tau": 2}}), "--kd-teacher", "x.pt")
    teacher, _ = load_model(setup / "teacher.pt")
    save_model(tmp_path / "other.pt", teacher, {"vocab_sha256": "another"})
    assert "another vocabulary" in train("--wrap", json.dumps({"kd": {}}), "--kd-teacher", tmp_path / "other.pt")
    assert not (tmp_path / "m.pt").exists()
