"""Teacher speed on this machine's CPU threads (or GPU): training target tokens/s and decoding
speed for a fixed model (the paper's `tiny` teacher: d256, ffn1024, 3+3 layers, 4 heads) on
synthetic data, each beside a reference measured in the same run:

- training: torch.nn.Transformer of the same size on the same batches (ratio > 1: kdgrid faster);
- decoding: beam-5 with and without the key/value cache on the SAME batches (every decoding batch,
  the two timed batch by batch in turn so that a change in the machine's load hits both), whose
  outputs must be identical (the bench stops with an error if they are not), and greedy. Each
  configuration decodes one batch untimed first (warm-up). Decoding speed is given in output
  tokens/s (content tokens without eos) and sentences/s; the cache's speed-up is the uncached time over
  the cached time (equal outputs, so also the ratio of their tokens/s).

    python bench/teacher_speed.py [--threads N] [--updates 20] [--sentences 300]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch
import torch.nn.functional as F

from kdgrid import synthetic
from kdgrid.batching import Ids, collate, token_batches
from kdgrid.models import build

warnings.filterwarnings("ignore", message="enable_nested_tensor")

D, FFN, LAYERS, HEADS, VOCAB = 256, 1024, 3, 4, 4000


def data(n: int):
    """Synthetic pairs as word ids (a word-level vocabulary keeps the bench free of spm)."""
    pairs = synthetic.generate(synthetic.SyntheticSpec(seed=7, train=n, valid=1, test=1, vocab_size=300))["train"]
    words: dict[str, int] = {}

    def ids(text):
        return [words.setdefault(w, 5 + len(words) % (VOCAB - 5)) for w in text.split()]

    return [ids(s) for s, _ in pairs], [ids(t) for _, t in pairs]


class TorchReference(torch.nn.Module):
    """torch.nn.Transformer with embeddings and a tied output layer, as the reference."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, D, padding_idx=0)
        self.core = torch.nn.Transformer(D, HEADS, LAYERS, LAYERS, FFN, dropout=0.1, batch_first=True,
                                         norm_first=True)

    def loss(self, batch, label_smoothing=0.1):
        src, tin, tout = batch["src"], batch["tgt_in"], batch["tgt_out"]
        mask = self.core.generate_square_subsequent_mask(tin.size(1))
        h = self.core(self.embed(src) * math.sqrt(D), self.embed(tin) * math.sqrt(D), tgt_mask=mask,
                      src_key_padding_mask=src.eq(0), memory_key_padding_mask=src.eq(0),
                      tgt_is_causal=True)
        logits = h @ self.embed.weight.t()
        loss = F.cross_entropy(logits.flatten(0, 1), tout.flatten(), ignore_index=0,
                               label_smoothing=label_smoothing)
        return loss, {}


def train_speed(model, batches, updates: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    tokens, start = 0, None
    for i, b in enumerate(batches[: updates + 2]):
        if i == 2:  # two warm-up steps
            start, tokens = time.perf_counter(), 0
        loss, _ = model.loss(b, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tokens += int(b["tgt_out"].ne(0).sum())
    return tokens / (time.perf_counter() - start)


def decode(model, batch, opts) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    out = model.generate(batch["src"], **opts)
    return time.perf_counter() - start, out


def decode_speed(model, batches, *configs) -> list[dict]:
    """Decode every batch with each of `configs` (option dicts), timed batch by batch in turn,
    after one untimed warm-up batch per configuration; seconds, outputs and token counts each."""
    model.eval()
    for opts in configs:  # warm-up
        decode(model, batches[len(batches) // 2], opts)
    results = [{"seconds": 0.0, "out": []} for _ in configs]
    for b in batches:
        for opts, r in zip(configs, results):
            seconds, out = decode(model, b, opts)
            r["seconds"] += seconds
            r["out"] += out
    for r in results:
        r["tokens"] = sum(len(h) for h in r["out"])
        r["tok/s"] = r["tokens"] / r["seconds"]
        r["sent/s"] = len(r["out"]) / r["seconds"]
    return results


def check_identical(cached: list, uncached: list) -> None:
    differ = [i for i, (a, b) in enumerate(zip(cached, uncached)) if a != b]
    if len(cached) != len(uncached) or differ:
        i = differ[0] if differ else min(len(cached), len(uncached))
        raise SystemExit(f"teacher_speed: cached and uncached beam-5 disagree on {len(differ)} of "
                         f"{len(cached)} sentences (first: sentence {i}: cached {cached[i:i + 1]} vs "
                         f"uncached {uncached[i:i + 1]}): the key/value cache changes the search, so "
                         "the speed-up would compare different work; fix the cache first")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a (no output tokens)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--sentences", type=int, default=300, help="sentences to decode")
    ap.add_argument("--max-tokens", type=int, default=4096)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    src, tgt = data(20000)
    s_ids, t_ids = Ids.from_lists(src), Ids.from_lists(tgt)
    order = token_batches(s_ids.lengths, t_ids.lengths, args.max_tokens, seed=1)
    batches = [collate([src[i] for i in b], [tgt[i] for i in b], 0, 2, 3) for b in order[: args.updates + 2]]

    torch.manual_seed(0)
    ours = build("transformer", dict(vocab_size=VOCAB, pad=0, bos=2, eos=3, d_model=D, ffn=FFN,
                                     encoder_layers=LAYERS, decoder_layers=LAYERS, heads=HEADS, dropout=0.1))
    ref = TorchReference()
    print(f"device cpu, {args.threads} threads, model d{D} ffn{FFN} {LAYERS}+{LAYERS} layers {HEADS} heads, "
          f"vocab {VOCAB}, batches of <= {args.max_tokens} tokens")
    t_ours = train_speed(ours, batches, args.updates)
    t_ref = train_speed(ref, batches, args.updates)
    print(f"training   kdgrid {t_ours:8.0f} target tok/s | torch.nn.Transformer {t_ref:8.0f} tok/s | "
          f"ratio {t_ours / t_ref:.2f}")

    # decoding speed of a partly trained model on unseen sources (lengths vary, eos comes)
    dec_src = src[-args.sentences:]
    lens = Ids.from_lists(dec_src).lengths
    dec = [collate([dec_src[i] for i in b], None, 0, 2, 3) for b in token_batches(lens, lens, 2048)]
    beam, nocache = decode_speed(ours, dec, dict(method="beam", beam=5),
                                 dict(method="beam", beam=5, use_cache=False))
    check_identical(beam["out"], nocache["out"])
    (greedy,) = decode_speed(ours, dec, dict(method="greedy"))
    plural = "es" if len(dec) > 1 else ""
    print(f"decoding   {len(dec_src)} sentences in {len(dec)} batch{plural} of <= 2048 tokens, output tokens/s "
          f"(sentences/s)")
    print(f"  beam-5 cached   {beam['tok/s']:8.0f} tok/s ({beam['sent/s']:6.1f} sent/s, "
          f"{beam['tokens'] / len(beam['out']):.1f} tokens/sentence)")
    print(f"  beam-5 uncached {nocache['tok/s']:8.0f} tok/s ({nocache['sent/s']:6.1f} sent/s), same batches, "
          f"identical outputs: cache speed-up {nocache['seconds'] / beam['seconds']:.2f}x")
    print(f"  greedy cached   {greedy['tok/s']:8.0f} tok/s ({greedy['sent/s']:6.1f} sent/s, "
          f"{greedy['tokens'] / len(greedy['out']):.1f} tokens/sentence): beam-5/greedy "
          f"{ratio(beam['tok/s'], greedy['tok/s'])} in tok/s, {ratio(beam['sent/s'], greedy['sent/s'])} in sent/s")


if __name__ == "__main__":
    main()
