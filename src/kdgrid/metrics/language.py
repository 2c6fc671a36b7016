"""Which language is an output in? Per-language unigram models over word tokens (13a, lowercased),
add-one smoothed over the joint vocabulary, uniform prior (Zhou et al. 2020, section 4):

    p(l | y) = prod_t p(y_t | l) / sum_l' prod_t p(y_t | l')

An AT model commits to one language per sentence (p near 0 or 1); a NAT trained on multi-way raw
data mixes languages inside a sentence. Because sentence-level posteriors of long sentences
saturate, a token-level view is reported too: the share of tokens whose own most likely language
differs from their sentence's.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from kdgrid.corpus import iter_lines
from kdgrid.errors import KdgridError
from kdgrid.metrics.align import word_tokens


class LanguageModels:
    def __init__(self, languages: list[str], counts: dict[str, Counter]):
        self.languages = languages
        vocab = set().union(*counts.values())
        self.v = len(vocab) + 1  # + one unseen type
        self.totals = {lang: sum(counts[lang].values()) for lang in languages}
        self.counts = counts

    @classmethod
    def train(cls, tgt_path, lang_path) -> LanguageModels:
        counts: dict[str, Counter] = {}
        for n, (line, lang) in enumerate(zip(iter_lines(tgt_path), iter_lines(lang_path)), start=1):
            if not lang:
                raise KdgridError(f"{lang_path}: line {n}: empty language label")
            counts.setdefault(lang, Counter()).update(word_tokens(line))
        if len(counts) < 2:
            raise KdgridError(f"{lang_path}: needs at least two languages, found {sorted(counts)}")
        return cls(sorted(counts), counts)

    def token_logprobs(self, tokens: list[str]) -> np.ndarray:
        """(tokens, languages) log p(token | language)."""
        out = np.empty((len(tokens), len(self.languages)))
        for k, lang in enumerate(self.languages):
            c, denom = self.counts[lang], math.log(self.totals[lang] + self.v)
            out[:, k] = [math.log(c.get(t, 0) + 1) - denom for t in tokens]
        return out

    def classify(self, line: str) -> tuple[np.ndarray, float]:
        """p(l | y) for each language, and the share of tokens of another language."""
        tokens = word_tokens(line)
        if not tokens:
            return np.full(len(self.languages), 1.0 / len(self.languages)), 0.0
        lp = self.token_logprobs(tokens)
        total = lp.sum(0)
        post = np.exp(total - total.max())
        post /= post.sum()
        mixed = float((lp.argmax(1) != post.argmax()).mean())
        return post, mixed


def language_mix(models: LanguageModels, hyp_path) -> dict:
    posts, mixed = [], []
    for line in iter_lines(hyp_path):
        p, m = models.classify(line)
        posts.append(p)
        mixed.append(m)
    posts = np.array(posts) if posts else np.zeros((0, len(models.languages)))
    top = posts.max(1) if len(posts) else np.zeros(0)
    return {
        "languages": models.languages,
        "sentences": len(posts),
        "mean_p": dict(zip(models.languages, posts.mean(0).round(4).tolist() if len(posts) else [])),
        "majority_share": {lang: float((posts.argmax(1) == k).mean()) if len(posts) else 0.0
                           for k, lang in enumerate(models.languages)},
        "pure_sentences": float((top >= 0.99).mean()) if len(top) else 0.0,
        "token_mixing": float(np.mean(mixed)) if mixed else 0.0,
        "p": posts.round(4).tolist(),
        "choices": {"model": "per-language unigram, add-one over the joint vocabulary",
                    "prior": "uniform", "tokenizer": "13a (sacrebleu), lowercased",
                    "pure": "max_l p(l|y) >= 0.99",
                    "token_mixing": "share of tokens whose most likely language is not their sentence's"},
    }
