"""The embedded synthetic parallel corpus: multimodal by construction, generated from a seed.

Source sentences come from a small grammar (NP V NP PP*, NP = det adj* noun). Each target
"mode" is a separate language with its own lexicon and word-order rules (clause order, adjective
and determiner placement, pre- or postpositions); every sentence is translated into one mode drawn
at random with no signal in the source (as in Zhou et al.'s multi-way experiment). Within a mode,
a `synonym_rate` share of content words has two translations picked per occurrence. So raw data
has many valid targets per source, while a mode-seeking teacher (beam search) will mostly produce
one mode and one synonym: exactly the simplification sequence-level KD gives a NAT student.

Mode m is drawn with weight (m+1)^-mode_decay; synonyms with weights 0.6/0.4.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"

# word order of each target mode; modes beyond this list draw rules at random (seeded)
ORDER_RULES = [
    {"clause": "SVO", "adj": "after", "det": "before", "adp": "pre"},
    {"clause": "SOV", "adj": "before", "det": "none", "adp": "post"},
    {"clause": "VSO", "adj": "after", "det": "after", "adp": "pre"},
]


@dataclass
class SyntheticSpec:
    seed: int = 1
    train: int = 20000
    valid: int = 500
    test: int = 500
    vocab_size: int = 300
    modes: int = 3
    mode_decay: float = 1.0
    synonym_rate: float = 0.3
    min_len: int = 4
    max_len: int = 12

    def __post_init__(self):
        for name in ("train", "valid", "test", "vocab_size", "modes", "min_len", "max_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.min_len < 4:
            raise ValueError(f"min_len must be at least 4 (det noun verb noun), got {self.min_len}")
        if self.max_len < self.min_len:
            raise ValueError(f"max_len {self.max_len} is below min_len {self.min_len}")
        if not 0.0 <= self.synonym_rate <= 1.0:
            raise ValueError(f"synonym_rate must be in [0, 1], got {self.synonym_rate}")
        if self.vocab_size < 10:
            raise ValueError(f"vocab_size must be at least 10, got {self.vocab_size}")


class _Words:
    """Unique pseudo-words; each language draws syllables from its own inventory."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def inventory(self):
        cons = self.rng.sample(CONSONANTS, 8)
        return [c + v for c in cons for v in VOWELS] + [c + v + self.rng.choice(cons) for c in cons[:3] for v in VOWELS]

    def make(self, syllables, n: int, min_syl: int = 2, max_syl: int = 3) -> list[str]:
        out = []
        while len(out) < n:
            w = "".join(self.rng.choice(syllables) for _ in range(self.rng.randint(min_syl, max_syl)))
            if w not in self.used:
                self.used.add(w)
                out.append(w)
        return out


class Grammar:
    def __init__(self, spec: SyntheticSpec):
        self.spec = spec
        rng = random.Random(spec.seed)
        words = _Words(rng)
        src_syl = words.inventory()
        n_noun, n_verb = int(spec.vocab_size * 0.45), int(spec.vocab_size * 0.25)
        self.src = {
            "N": words.make(src_syl, n_noun), "V": words.make(src_syl, n_verb),
            "A": words.make(src_syl, spec.vocab_size - n_noun - n_verb),
            "D": words.make(src_syl, 4, 1, 1), "P": words.make(src_syl, 6, 1, 2),
        }
        self.modes = []
        for m in range(spec.modes):
            rules = ORDER_RULES[m] if m < len(ORDER_RULES) else {
                "clause": rng.choice(["SVO", "SOV", "VSO", "OSV"]), "adj": rng.choice(["before", "after"]),
                "det": rng.choice(["before", "after", "none"]), "adp": rng.choice(["pre", "post"])}
            syl = words.inventory()
            lex = {}
            for cls in ("N", "V", "A"):
                for w in self.src[cls]:
                    n_syn = 2 if rng.random() < spec.synonym_rate else 1
                    lex[w] = words.make(syl, n_syn)
            for cls in ("D", "P"):
                for w in self.src[cls]:
                    lex[w] = words.make(syl, 1, 1, 2)
            self.modes.append({"rules": rules, "lex": lex, "end": words.make(syl, 1, 1, 1)[0]})
        self.mode_weights = [(m + 1) ** -spec.mode_decay for m in range(spec.modes)]
        # Zipf-like word frequencies: frequent and rare words, as in real text
        self.zipf = {c: [1.0 / (r + 1) for r in range(len(ws))] for c, ws in self.src.items()}

    def _word(self, rng, cls):
        return rng.choices(self.src[cls], weights=self.zipf[cls])[0]

    def _np(self, rng, n_adj):
        return {"D": self._word(rng, "D"), "A": [self._word(rng, "A") for _ in range(n_adj)],
                "N": self._word(rng, "N")}

    def sentence(self, rng: random.Random):
        """A source parse: subject, verb, object, prepositional phrases; within the length range."""
        spec = self.spec
        while True:
            adjs = [rng.choice([0, 0, 1, 1, 2]) for _ in range(4)]
            n_pp = rng.choice([0, 0, 1, 1, 2])
            parse = {"S": self._np(rng, adjs[0]), "V": self._word(rng, "V"), "O": self._np(rng, adjs[1]),
                     "PP": [(self._word(rng, "P"), self._np(rng, adjs[2 + i])) for i in range(n_pp)]}
            if spec.min_len <= len(self.source_words(parse)) <= spec.max_len:
                return parse

    @staticmethod
    def _np_source(np_):
        return [np_["D"], *np_["A"], np_["N"]]

    def source_words(self, parse) -> list[str]:
        words = self._np_source(parse["S"]) + [parse["V"]] + self._np_source(parse["O"])
        for p, np_ in parse["PP"]:
            words += [p, *self._np_source(np_)]
        return words

    def translate(self, parse, mode: int, rng: random.Random) -> list[str]:
        m = self.modes[mode]
        rules, lex = m["rules"], m["lex"]

        def word(w):
            options = lex[w]
            return options[0] if len(options) == 1 else rng.choices(options, weights=[0.6, 0.4])[0]

        def noun_phrase(np_):
            adjs, noun = [word(a) for a in np_["A"]], word(np_["N"])
            core = adjs + [noun] if rules["adj"] == "before" else [noun] + adjs
            det = word(np_["D"])
            return {"before": [det] + core, "after": core + [det], "none": core}[rules["det"]]

        parts = {"S": noun_phrase(parse["S"]), "V": [word(parse["V"])], "O": noun_phrase(parse["O"])}
        out = [w for key in rules["clause"] for w in parts[key]]
        for p, np_ in parse["PP"]:
            phrase = noun_phrase(np_)
            out += [word(p)] + phrase if rules["adp"] == "pre" else phrase + [word(p)]
        return out + [m["end"]]


def generate(spec: SyntheticSpec) -> dict[str, list[tuple[str, str]]]:
    """{'train'|'valid'|'test': [(source, target), ...]}; valid/test sources never occur in train."""
    grammar = Grammar(spec)
    rng = random.Random(spec.seed * 7919 + 1)
    seen: set[str] = set()
    splits = {}
    for split in ("train", "valid", "test"):
        pairs = []
        while len(pairs) < getattr(spec, split):
            parse = grammar.sentence(rng)
            src = " ".join(grammar.source_words(parse) + ["."])
            if split != "train" and src in seen:
                continue
            if split == "train":
                seen.add(src)
            mode = rng.choices(range(spec.modes), weights=grammar.mode_weights)[0]
            pairs.append((src, " ".join(grammar.translate(parse, mode, rng))))
        splits[split] = pairs
    return splits


def language(mode: int) -> str:
    return f"m{mode}"


def generate_multiway(spec: SyntheticSpec) -> dict:
    """The multi-way layout: every source translated into every mode ("language").

    {split: (sources, {language: targets})}, the same sources as `generate` would draw."""
    grammar = Grammar(spec)
    rng = random.Random(spec.seed * 7919 + 1)
    seen: set[str] = set()
    out = {}
    for split in ("train", "valid", "test"):
        sources, targets = [], {language(m): [] for m in range(spec.modes)}
        while len(sources) < getattr(spec, split):
            parse = grammar.sentence(rng)
            src = " ".join(grammar.source_words(parse) + ["."])
            if split != "train" and src in seen:
                continue
            if split == "train":
                seen.add(src)
            sources.append(src)
            for m in range(spec.modes):
                targets[language(m)].append(" ".join(grammar.translate(parse, m, rng)))
        out[split] = (sources, targets)
    return out
