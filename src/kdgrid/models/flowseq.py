"""FlowSeq (Ma et al. 2019): a latent-variable NAT whose prior is a generative flow.

One latent vector z_t per target position. The posterior q(z|x,y) reads the target embeddings
(with attention to the source) and outputs a diagonal Gaussian; while training, whole target words
are dropped from its input (`posterior_dropword`, FlowSeq-base 0.2: a dropped word's embedding is
zeroed, the others scaled by 1/(1-p) as in FlowSeq's dropout2d; its position stays). The prior
p(z|x) is a multi-scale Glow-style flow g taking z to a standard normal (kdgrid.models.flow: levels
of steps of actnorm, invertible linear map over latent channels and affine coupling whose network
attends to the source; between levels half the channels leave through a split prior conditioned on
the other half, and the rest is squeezed, two time steps per position; padding is respected at
every level): log p(z|x) = log N(g(z)) + log|det dg/dz|. ActNorm is initialized from the data of
the first training batch (`data_init`, which the Trainer calls with the same batch on every
process); as in FlowSeq, the posterior's mean/log-variance layer starts at a 0.05
scale, so z starts close to N(0, I) noise. The decoder p(y|z,x) predicts every token in parallel from z. Training
maximizes the ELBO (reconstruction - KL(q || p), the KL estimated from the sampled z) plus the
length loss. Decoding: predict the length, take z = g^-1(0) (argmax decoding), or several
z = g^-1(tau * eps) per length (noisy parallel decoding); candidates are ranked by the model's mean
token log-prob, or by an AT model's (decode option `rescore`, kdgrid.rescore).

Config: `flow_levels` lists the steps per level (FlowSeq-base: [4, 4, 2], three levels; its steps
are larger than kdgrid's, which have one coupling each). The default [2, 2] is CPU-sized. Files
and configs of the single-scale FlowSeq give `flow_steps: N`, which means one level, [N].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kdgrid.models.configs import FlowSeqConfig
from kdgrid.models.flow import ActNorm, build_flow, flow_forward, flow_reverse
from kdgrid.models.layers import EncoderDecoder, LengthHead, Stack, init_linear, key_mask, smoothed_nll
from kdgrid.refine import State, refine

LOG_2PI = math.log(2 * math.pi)


class FlowSeq(EncoderDecoder):
    kind = "flowseq"
    config_class = FlowSeqConfig

    def __init__(self, cfg: FlowSeqConfig):
        super().__init__(cfg)
        args = (cfg.d_model, cfg.ffn, cfg.heads, cfg.dropout, cfg.attention_dropout, cfg.pre_norm)
        self.posterior = Stack(cfg.posterior_layers, *args, cross=True)
        self.posterior_out = nn.Linear(cfg.d_model, 2 * cfg.latent)
        self.latent_in = nn.Linear(cfg.latent, cfg.d_model)
        self.length = LengthHead(cfg.d_model, cfg.length_classes)
        init_linear(self)
        with torch.no_grad():  # FlowSeq starts mu and log-variance at a scale of 0.05: z ~ N(0, I)
            self.posterior_out.weight.mul_(0.05)
        # the flat step list keeps the parameter names of single-scale files: `flow.<i>.*`
        self.flow, self.flow_splits = build_flow(cfg.flow_levels, cfg.latent, cfg.d_model, cfg.ffn,
                                                 cfg.heads, cfg.pre_norm)

    # -- densities -------------------------------------------------------------------------
    def prior_forward(self, z, mask, memory, src_pad):
        """z -> (eps, log|det d eps / dz|) per sentence, counting the real positions only."""
        return flow_forward(self.flow, self.flow_splits, self.cfg.flow_levels, z, mask, memory, src_pad)

    def prior_logp(self, z, mask, memory, src_pad):
        """log p(z | x) per sentence: flow to the base normal, plus the log-determinants."""
        eps, logdet = self.prior_forward(z, mask, memory, src_pad)
        base = -0.5 * (eps.pow(2) + LOG_2PI).sum(-1)
        return (base * mask).sum(1) + logdet

    def prior_sample(self, eps, mask, memory, src_pad):
        return flow_reverse(self.flow, self.flow_splits, self.cfg.flow_levels, eps, mask, memory, src_pad)

    def posterior_input(self, tgt):
        """Target embeddings with dropword while training: whole words zeroed (the others scaled
        by 1/(1-p)) before the positions are added."""
        x, p = self.embed.tokens(tgt), self.cfg.posterior_dropword
        if self.training and p > 0:
            keep = torch.rand(*tgt.shape, 1, device=tgt.device) >= p
            x = x * keep.to(x.dtype) / (1 - p)
        return self.embed.add_positions(x)

    def decode_latent(self, z, tgt_pad, memory, src_pad):
        x = self.embed.add_positions(self.latent_in(z))
        return self.embed.logits(self.decoder(x, key_mask(tgt_pad), memory, key_mask(src_pad)))

    # -- training --------------------------------------------------------------------------
    @torch.no_grad()
    def data_init(self, batch: dict) -> None:
        """Data-dependent actnorm initialization from one batch (a forward pass in training mode).
        An actnorm of a level that no sentence of the batch reaches starts as the identity, so
        no process initializes it later from a batch of its own."""
        was_training = self.training
        self.train()
        self.loss(batch)
        for module in self.modules():
            if isinstance(module, ActNorm) and not bool(module.initialized):
                module.initialized.fill_(True)
        self.train(was_training)

    def loss(self, batch: dict, label_smoothing: float = 0.0):
        cfg, src, tgt = self.cfg, batch["src"], batch["tgt"]
        memory, src_pad = self.encode(src)
        tgt_pad = tgt.eq(cfg.pad)
        mask = (~tgt_pad).float()
        h = self.posterior(self.posterior_input(tgt), key_mask(tgt_pad), memory, key_mask(src_pad))
        mu, logvar = self.posterior_out(h).float().chunk(2, -1)
        logvar = logvar.clamp(-10, 10)
        # a sampled z while training; the posterior mean when validating, so that validation
        # losses compare checkpoints, not noise draws
        eps = torch.randn_like(mu) if self.training else torch.zeros_like(mu)
        z = mu + (0.5 * logvar).exp() * eps
        log_q = (-0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(-1) * mask).sum(1)
        kl = (log_q - self.prior_logp(z, mask, memory, src_pad)).sum() / mask.sum()
        logits = self.decode_latent(z, tgt_pad, memory, src_pad)
        word, nll, n = smoothed_nll(logits, tgt, cfg.pad, label_smoothing)
        length = self.length.loss(memory, src_pad, (~tgt_pad).sum(1))
        total = word + cfg.kl_weight * kl + cfg.length_loss_weight * length
        return total, {"loss": total.detach(), "nll": nll, "word": word.detach(), "kl": kl.detach(),
                       "length": length.detach(), "ntokens": n}

    # -- decoding --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, src, length_beam: int | None = None, samples: int | None = None,
                 rescorer=None, **_):
        return refine(self, src, max_iter=0, length_beam=length_beam or self.cfg.length_beam,
                      samples=samples or self.cfg.samples, rescorer=rescorer)

    def initial(self, src, memory, src_pad, length_beam: int, samples: int = 1):
        lengths = self.length.predict(memory, src_pad, length_beam).flatten().repeat_interleave(samples)
        owner = torch.arange(src.size(0), device=src.device).repeat_interleave(length_beam * samples)
        real = torch.arange(int(lengths.max()), device=src.device)[None] < lengths[:, None]
        tokens = torch.where(real, self.cfg.mask, self.cfg.pad)
        eps = torch.zeros(*tokens.shape, self.cfg.latent, device=src.device)
        if samples > 1:  # noisy parallel decoding; the first sample of each length stays at the mode
            # sample k at position t gets the same noise in every sentence and every batch, so a
            # sentence decodes the same whatever it is batched with: fixed-size draws of 256
            # positions each (torch's normal sampler takes another path for other sizes, so no
            # prefix of one larger draw would be stable)
            blocks = [torch.randn(samples, 256, self.cfg.latent, generator=torch.Generator().manual_seed(b))
                      for b in range((tokens.size(1) + 255) // 256)]
            noise = torch.cat(blocks, 1)[:, : tokens.size(1)]
            noise[0] = 0.0
            sample = torch.arange(len(tokens)) % samples
            eps = (noise[sample] * self.cfg.temperature).to(src.device)
        return State(tokens, torch.zeros(tokens.shape, device=src.device), aux=eps), owner

    def step(self, state: State, src, memory, src_pad, step: int, max_iter: int) -> State:
        tgt_pad = state.tokens.eq(self.cfg.pad)
        z = self.prior_sample(state.aux, (~tgt_pad).float(), memory, src_pad)
        logits = self.decode_latent(z, tgt_pad, memory, src_pad).float()
        logits[..., [self.cfg.pad, self.cfg.bos, self.cfg.eos, self.cfg.mask]] = float("-inf")
        scores, tokens = torch.log_softmax(logits, -1).max(-1)
        return State(tokens.masked_fill(tgt_pad, self.cfg.pad), scores.masked_fill(tgt_pad, 0.0))
