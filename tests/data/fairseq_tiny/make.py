"""Writes the tiny fairseq Transformers of tests/test_fairseq_import.py and fairseq's own outputs for
them: run with the peers' environment (fairseq installed: `make bench-peers` builds it)

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 bench/.peers-venv/bin/python tests/data/fairseq_tiny/make.py

Each model is built by fairseq's own classes (its task, dictionary and `transformer` architecture),
seeded, fitted for a few steps on the test pairs, saved as fairseq saves checkpoints ({"cfg": {"model": args}, "model":
state_dict}); `reference.json` holds, per model, fairseq's teacher-forced log-probability of each
target token and its greedy output (pad, unk and <s> banned, eos forced at 1.2 x source + 10, as
kdgrid's search does) for a few sentences, segmented by the sentencepiece model written here."""

from __future__ import annotations

import json
import math
import random
import sys
import tempfile
from pathlib import Path

import sentencepiece as spm
import torch

HERE = Path(__file__).resolve().parent
WORDS = "a small dog runs on the green grass while two men look at the red car near a tall tree".split()
SOURCES = ["a dog runs on the grass", "two men look at the red car", "the tall tree near a car",
           "a small green dog", "men run"]
TARGETS = ["the dog runs", "two men look at a car", "a tall tree", "green dog", "men run on grass"]


def sentencepiece_model() -> Path:
    rng = random.Random(1)
    text = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(400)]
    path = HERE / "spm.model"
    # a fairseq user's model: sentencepiece's default ids (unk 0, bos 1, eos 2, no pad)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_prefix=str(path.with_suffix("")),
                                   vocab_size=36, model_type="unigram", character_coverage=1.0,
                                   normalization_rule_name="identity")  # no normalization table: a few kB
    path.with_suffix(".vocab").unlink()
    return path


def dictionary(sp) -> list[str]:
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not sp.is_control(i) and not sp.is_unknown(i)]
    random.Random(2).shuffle(pieces)  # fairseq orders by frequency: the conversion must not rely on spm's order
    return pieces + ["madeupword0000"]  # a filler symbol (fairseq's --padding-factor) no text produces


def build(pre_norm: bool, data: Path):
    from fairseq import options, tasks

    parser = options.get_training_parser()
    argv = [str(data), "--arch", "transformer", "--task", "translation", "--source-lang", "src", "--target-lang",
            "tgt", "--encoder-embed-dim", "8", "--decoder-embed-dim", "8", "--encoder-ffn-embed-dim", "16",
            "--decoder-ffn-embed-dim", "16", "--encoder-layers", "2", "--decoder-layers", "1",
            "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--share-all-embeddings",
            "--dropout", "0.1"]
    if pre_norm:
        argv += ["--encoder-normalize-before", "--decoder-normalize-before"]
    args = options.parse_args_and_arch(parser, argv)
    task = tasks.setup_task(args)
    torch.manual_seed(3)
    model = task.build_model(args).eval()
    fit(model, task.target_dictionary)
    return args, task, model


def fit(model, d, steps: int = 150) -> None:
    """A few Adam steps on the test pairs (fairseq's forward, cross-entropy by hand): a random
    initialization decodes one repeated piece; a fitted model decodes varied outputs."""
    sp = spm.SentencePieceProcessor(model_file=str(HERE / "spm.model"))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(steps):
        for src, tgt in zip(SOURCES, TARGETS):
            s = torch.tensor([[d.index(p) for p in sp.encode(src, out_type=str)] + [d.eos()]])
            y = [d.index(p) for p in sp.encode(tgt, out_type=str)]
            o = model(s, torch.tensor([s.size(1)]), torch.tensor([[d.eos()] + y]))
            lp = model.get_normalized_probs(o, log_probs=True)[0]
            loss = -lp.gather(-1, torch.tensor(y + [d.eos()])[:, None]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def outputs(model, d, sp) -> list[dict]:
    out = []
    for src, tgt in zip(SOURCES, TARGETS):
        s = torch.tensor([[d.index(p) for p in sp.encode(src, out_type=str)] + [d.eos()]])
        y = [d.index(p) for p in sp.encode(tgt, out_type=str)]
        with torch.no_grad():
            o = model(s, torch.tensor([s.size(1)]), torch.tensor([[d.eos()] + y]))
            lp = model.get_normalized_probs(o, log_probs=True)[0].gather(-1, torch.tensor(y + [d.eos()])[:, None])
            toks, limit = [d.eos()], int(s.size(1) * 1.2) + 10
            for t in range(limit + 1):
                step = model.get_normalized_probs(model(s, torch.tensor([s.size(1)]), torch.tensor([toks])),
                                                  log_probs=True)[0, -1].clone()
                step[[d.pad(), d.unk(), d.bos()]] = -math.inf
                if t >= limit:
                    step[:] = -math.inf
                    step[d.eos()] = 0
                toks.append(int(step.argmax()))
                if toks[-1] == d.eos():
                    break
        out.append({"src": src, "tgt": tgt, "logprobs": lp.squeeze(-1).tolist(),
                    "greedy": [d[i] for i in toks[1:-1]]})
    return out


def main() -> int:
    path = sentencepiece_model()
    sp = spm.SentencePieceProcessor(model_file=str(path))
    symbols = dictionary(sp)
    (HERE / "dict.txt").write_text("".join(f"{s} {100 - i}\n" for i, s in enumerate(symbols)))
    reference = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("src", "tgt"):
            (Path(tmp) / f"dict.{side}.txt").write_text((HERE / "dict.txt").read_text())
        for name, pre_norm in (("pre_norm", True), ("post_norm", False)):
            args, task, model = build(pre_norm, Path(tmp))
            torch.save({"args": None, "cfg": {"model": args}, "model": model.state_dict()}, HERE / f"{name}.pt")
            reference[name] = outputs(model, task.target_dictionary, sp)
    (HERE / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
