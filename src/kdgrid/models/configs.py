"""The model kinds' settings (one dataclass per kind, with its defaults and checks), torch-free.

Each model module (nat.py, cmlm.py, ...) takes its config class from here, apart from the torch
code, so that the workflow's config check can read the kinds' defaults without torch (which kinds
can rescore their candidates, and how many each decodes by default). Model files store a config
as a plain dict (kdgrid.checkpoint), so moving a class here changes no file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

# MoE: the prior over experts; generate()'s `expert` besides an expert number.
PRIORS = ("uniform", "learned")
PRIOR_EXPERT, MIXTURE_BEST = "prior", "mixture_best"
# A call's sampling seed s gives expert k's token draws the seed s * SEED_STRIDE + k and the expert
# draw s * SEED_STRIDE + SEED_STRIDE - 1: distinct for every call seed and expert (kdgrid.translate
# numbers a run's batches s, s + 1, ...), so no two groups of sentences share their random numbers.
# (kdgrid.models.moe draws them; it lives here because it bounds MoEConfig's experts.)
SEED_STRIDE = 1024
MAX_EXPERTS = SEED_STRIDE - 1


@dataclass(kw_only=True)
class ModelConfig:
    """What every model kind shares: vocabulary ids and the Transformer body's sizes."""

    vocab_size: int
    pad: int
    bos: int
    eos: int
    d_model: int = 512
    ffn: int = 2048
    encoder_layers: int = 6
    decoder_layers: int = 6
    heads: int = 8
    dropout: float = 0.1
    attention_dropout: float = 0.0
    pre_norm: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "ffn", "heads", "encoder_layers", "decoder_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        for name in ("dropout", "attention_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass(kw_only=True)
class TransformerConfig(ModelConfig):
    """The shared body only: encoder, causal decoder, tied output layer."""

    # the first token's row of the sinusoidal position table: 0 for kdgrid's own models; 2 for one
    # converted from fairseq, whose positions start after its padding index 1
    position_offset: int = 0
    # output ids whose probability is 0 (a converted fairseq model's <mask> row, which fairseq's
    # output layer does not have: its log-probabilities then equal fairseq's); such a model decodes
    # and scores but is not trained by kdgrid
    masked_outputs: list = field(default_factory=list)

    def __post_init__(self):
        super().__post_init__()
        if self.position_offset < 0:
            raise ValueError(f"position_offset must be at least 0, got {self.position_offset}")
        if any(not 0 <= i < self.vocab_size for i in self.masked_outputs):
            raise ValueError(f"masked_outputs must be ids below vocab_size {self.vocab_size}, "
                             f"got {self.masked_outputs}")
        self.masked_outputs = list(self.masked_outputs)


@dataclass(kw_only=True)
class MoEConfig(TransformerConfig):
    experts: int = 3  # fairseq's example uses 3
    prior: str = "uniform"  # uniform | learned

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.experts, bool) or not isinstance(self.experts, int) or not 2 <= self.experts <= MAX_EXPERTS:
            raise ValueError(f"experts must be an integer from 2 to {MAX_EXPERTS}, got {self.experts!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {self.prior!r}")


@dataclass(kw_only=True)
class NATConfig(ModelConfig):
    mask: int
    decoder_input: str = "copy"  # copy | mask
    length_classes: int = 256
    length_loss_weight: float = 0.1
    length_beam: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.decoder_input not in ("copy", "mask"):
            raise ValueError(f"decoder_input must be 'copy' or 'mask', got {self.decoder_input!r}")
        if self.length_beam < 1:
            raise ValueError(f"length_beam must be positive, got {self.length_beam}")


@dataclass(kw_only=True)
class INATConfig(NATConfig):
    train_steps: int = 4
    corrupt_prob: float = 0.5
    max_iter: int = 10
    adaptive: bool = True  # stop a sentence once an iteration leaves it unchanged (Lee et al.)

    def __post_init__(self):
        super().__post_init__()
        if self.train_steps < 1 or self.max_iter < 0 or not 0 <= self.corrupt_prob <= 1:
            raise ValueError("train_steps >= 1, max_iter >= 0 and corrupt_prob in [0, 1] are required")


@dataclass(kw_only=True)
class CMLMConfig(ModelConfig):
    mask: int
    length_classes: int = 256
    length_loss_weight: float = 0.1
    length_beam: int = 5
    max_iter: int = 10  # T - 1: iterations after the first all-mask pass
    # Mask-Predict runs all T iterations: its mask shrinks every iteration, so an unchanged output
    # is not convergence (the next iteration rewrites fewer, other tokens). True: stop early.
    adaptive: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.length_beam < 1 or self.max_iter < 0:
            raise ValueError("length_beam must be positive and max_iter non-negative")


@dataclass(kw_only=True)
class CTCConfig(ModelConfig):
    mask: int  # the blank symbol
    upsample: int = 2  # lambda: decoder positions per source token (the reference recipes: 2)
    loss_norm: str = "tokens"  # tokens: summed CTC loss / target tokens | sentences: torch's "mean"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.upsample, bool) or not isinstance(self.upsample, int) or self.upsample < 1:
            raise ValueError(f"upsample must be a positive integer, got {self.upsample!r}")
        if self.loss_norm not in ("tokens", "sentences"):
            raise ValueError(f"loss_norm must be 'tokens' or 'sentences', got {self.loss_norm!r}")


@dataclass(kw_only=True)
class DATConfig(ModelConfig):
    mask: int
    upsample: int = 4  # lambda: graph vertices per source token, eos included (the paper: 8)
    link_heads: int = 0  # heads of the transition scores; 0: the body's heads (the reference)
    # sentences: mean of -log P(y|x) / (target + bos + eos) (the reference) | tokens: the batch's
    # summed -log P(y|x) / its target + bos + eos tokens
    loss_norm: str = "sentences"
    # glancing: where a glanced vertex emits its token with probability 1 and every path passes
    # it (the reference's code today) or the plain loss over every path (the paper, its scripts)
    force_emit: bool = False

    def __post_init__(self):
        super().__post_init__()
        for name in ("upsample", "link_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (name == "upsample"):
                raise ValueError(f"{name} must be a {'positive' if name == 'upsample' else 'non-negative'} "
                                 f"integer, got {value!r}")
        if self.d_model % (self.link_heads or self.heads):
            raise ValueError(f"d_model {self.d_model} is not divisible by link_heads {self.link_heads}")
        if self.loss_norm not in ("tokens", "sentences"):
            raise ValueError(f"loss_norm must be 'tokens' or 'sentences', got {self.loss_norm!r}")


@dataclass(kw_only=True)
class LevTConfig(ModelConfig):
    mask: int
    placeholder_classes: int = 256  # 0 .. 255 placeholders per slot
    insertion_penalty: float = 0.0  # subtracted from the "0 placeholders" logit when decoding
    max_iter: int = 10
    adaptive: bool = True  # stop a sentence once an iteration leaves it unchanged
    max_len_a: float = 2.0
    max_len_b: int = 10


@dataclass(kw_only=True)
class InsTConfig(ModelConfig):
    mask: int
    tree_temperature: float = 1.0  # tau; large values make the slot target uniform
    max_iter: int = 20
    adaptive: bool = True  # stop a sentence once an iteration leaves it unchanged
    max_len_a: float = 2.0
    max_len_b: int = 10


@dataclass(kw_only=True)
class FlowSeqConfig(ModelConfig):
    mask: int
    latent: int = 64  # channels of z per position (even)
    posterior_layers: int = 1
    posterior_dropword: float = 0.0  # while training, drop whole words from the posterior's input
    flow_levels: list[int] = field(default_factory=lambda: [2, 2])  # steps per level; base [4, 4, 2]
    flow_steps: int | None = None  # older configs and files: one level of this many steps; when
    # given, it replaces flow_levels (a config merged over defaults may hold both)
    length_classes: int = 256
    length_loss_weight: float = 0.1
    kl_weight: float = 1.0
    length_beam: int = 1
    samples: int = 1  # > 1: noisy parallel decoding
    temperature: float = 1.0  # of the noise in noisy parallel decoding

    def __post_init__(self):
        super().__post_init__()
        if self.latent % 2 or self.latent < 2:
            raise ValueError(f"latent must be even and >= 2, got {self.latent}")
        if self.samples < 1 or self.length_beam < 1:
            raise ValueError("samples and length_beam must be positive")
        if self.flow_steps is not None:
            if isinstance(self.flow_steps, bool) or not isinstance(self.flow_steps, int) or self.flow_steps < 1:
                raise ValueError(f"flow_steps must be a positive integer, got {self.flow_steps!r}")
            self.flow_levels, self.flow_steps = [self.flow_steps], None  # saved as flow_levels
        levels = self.flow_levels
        if (not isinstance(levels, (list, tuple)) or not levels
                or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in levels)):
            raise ValueError(f"flow_levels must be a non-empty list of positive step counts, got {levels!r}")
        self.flow_levels = list(levels)
        if not 0 <= self.posterior_dropword < 1:
            raise ValueError(f"posterior_dropword must be in [0, 1), got {self.posterior_dropword}")


# How an ensemble of teachers (kdgrid.models.ensemble) combines its members' next-token distributions:
# `logprob_mean` averages their log-probabilities and renormalizes (a normalized geometric mean; the
# reading of the issue that asked for ensembles: Marian's log-linear ensembles with equal weights do
# the same without renormalizing), `prob_mean` their probabilities (fairseq's EnsembleModel: log of
# the mean probability).
ENSEMBLE_COMBINES = ("logprob_mean", "prob_mean")
ENSEMBLE_MEMBER_KINDS = ("transformer",)  # members decode with kdgrid.search, one cache each


@dataclass(kw_only=True)
class EnsembleConfig:
    """Members as saved model kinds and configs ({"kind", "config"}), all of one vocabulary."""

    vocab_size: int
    pad: int
    bos: int
    eos: int
    members: list
    combine: str = "logprob_mean"

    def __post_init__(self):
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        if self.combine not in ENSEMBLE_COMBINES:
            raise ValueError(f"combine must be one of {', '.join(ENSEMBLE_COMBINES)}, got {self.combine!r}")
        for i, member in enumerate(self.members):
            if member.get("kind") not in ENSEMBLE_MEMBER_KINDS:
                raise ValueError(f"member {i} is of kind {member.get('kind')!r}; an ensemble takes "
                                 f"{', '.join(ENSEMBLE_MEMBER_KINDS)} members")
            ids = {k: member["config"].get(k) for k in ("vocab_size", "pad", "bos", "eos")}
            if ids != {"vocab_size": self.vocab_size, "pad": self.pad, "bos": self.bos, "eos": self.eos}:
                raise ValueError(f"member {i} has vocabulary ids {ids}, the ensemble "
                                 f"{self.vocab_size, self.pad, self.bos, self.eos}: members share one vocabulary")


# Kinds that decode several candidates per sentence for an AT to rescore (their generate() takes a
# rescorer), with the config fields whose product is the number of candidates.
# A student's decode.method, per kind that has several (the others have one way to decode).
DECODE_METHODS = {"transformer": ("beam", "greedy", "sample", "sample_topk"),
                  "dat": ("lookahead", "greedy", "joint_viterbi", "sample")}
# The DA-Transformer's decode options (kdgrid.models.dat.DAT.generate), each with the methods it
# applies to (None: every method); it takes no other. `temperature` is also the AT's (sampling).
DAT_DECODE_KEYS = {"method": None, "beta": ("lookahead", "sample"), "viterbi_beta": ("joint_viterbi",),
                   "temperature": ("sample",), "top_cand": ("sample",), "top_p": ("sample",)}

RESCORABLE = {"nat": (NATConfig, ("length_beam",)), "inat": (INATConfig, ("length_beam",)),
              "cmlm": (CMLMConfig, ("length_beam",)), "flowseq": (FlowSeqConfig, ("length_beam", "samples"))}


def candidate_defaults(kind: str) -> dict:
    """A rescorable kind's candidate options with their defaults, e.g. {"length_beam": 5} (cmlm)."""
    config_class, names = RESCORABLE[kind]
    defaults = {f.name: f.default for f in fields(config_class)}
    return {name: defaults[name] for name in names}
