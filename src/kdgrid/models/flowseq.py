"""FlowSeq (Ma et al. 2019): a latent-variable NAT whose prior is a generative flow.

One latent vector z_t per target position. The posterior q(z|x,y) reads the target embeddings
(with attention to the source) and outputs a diagonal Gaussian. The prior p(z|x) is a Glow-style
flow g (actnorm, invertible linear map over latent channels, affine coupling whose network attends
to the source) taking z to a standard normal: log p(z|x) = log N(g(z)) + log|det dg/dz|. The
decoder p(y|z,x) predicts every token in parallel from z. Training maximizes the ELBO
(reconstruction - KL(q || p), the KL estimated from the sampled z) plus the length loss.
Decoding: predict the length, take z = g^-1(0) (argmax decoding), or several z = g^-1(tau * eps)
per length (noisy parallel decoding); candidates are ranked by the model's mean token log-prob,
or by an AT model's (decode option `rescore`, kdgrid.rescore).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from kdgrid.models.layers import (
    EncoderDecoder,
    LengthHead,
    ModelConfig,
    Stack,
    init_linear,
    key_mask,
    smoothed_nll,
)
from kdgrid.refine import State, refine

LOG_2PI = math.log(2 * math.pi)


@dataclass(kw_only=True)
class FlowSeqConfig(ModelConfig):
    mask: int
    latent: int = 64  # channels of z per position (even)
    posterior_layers: int = 1
    flow_steps: int = 4
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
        if self.samples < 1 or self.length_beam < 1 or self.flow_steps < 1:
            raise ValueError("samples, length_beam and flow_steps must be positive")


class ActNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.log_scale, self.bias = nn.Parameter(torch.zeros(c)), nn.Parameter(torch.zeros(c))

    def forward(self, z, mask, memory, src_pad):  # density direction z -> eps
        return (z + self.bias) * self.log_scale.exp(), self.log_scale.sum() * mask.sum(1)

    def reverse(self, e, mask, memory, src_pad):
        return e * (-self.log_scale).exp() - self.bias


class InvertibleLinear(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(c, c))[0])

    def forward(self, z, mask, memory, src_pad):
        return z @ self.weight, torch.linalg.slogdet(self.weight)[1] * mask.sum(1)

    def reverse(self, e, mask, memory, src_pad):
        return e @ torch.linalg.inv(self.weight)


class Coupling(nn.Module):
    """Affine coupling: the second half of the channels is scaled and shifted by a network of the
    first half that attends to the source; zero-initialized, so it starts as the identity."""

    def __init__(self, c, cfg: FlowSeqConfig):
        super().__init__()
        self.inp = nn.Linear(c // 2, cfg.d_model)
        self.net = Stack(1, cfg.d_model, cfg.ffn, cfg.heads, 0.0, 0.0, cfg.pre_norm, cross=True)
        self.out = nn.Linear(cfg.d_model, c)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def params(self, za, mask, memory, src_pad):
        h = self.net(self.inp(za), key_mask(mask.eq(0)), memory, key_mask(src_pad))
        log_scale, shift = self.out(h).chunk(2, -1)
        return torch.tanh(log_scale), shift  # bounded scales keep the flow stable

    def forward(self, z, mask, memory, src_pad):
        za, zb = z.chunk(2, -1)
        log_scale, shift = self.params(za, mask, memory, src_pad)
        out = torch.cat([za, (zb + shift) * log_scale.exp()], -1)
        return out, (log_scale * mask[..., None]).sum((1, 2))

    def reverse(self, e, mask, memory, src_pad):
        ea, eb = e.chunk(2, -1)
        log_scale, shift = self.params(ea, mask, memory, src_pad)
        return torch.cat([ea, eb * (-log_scale).exp() - shift], -1)


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
        self.flow = nn.ModuleList(
            layer for _ in range(cfg.flow_steps)
            for layer in (ActNorm(cfg.latent), InvertibleLinear(cfg.latent), Coupling(cfg.latent, cfg))
        )

    # -- densities -------------------------------------------------------------------------
    def prior_logp(self, z, mask, memory, src_pad):
        """log p(z | x) per sentence: flow to the base normal, plus the log-determinants."""
        logdet = torch.zeros(len(z), device=z.device)
        for layer in self.flow:
            z, ld = layer(z, mask, memory, src_pad)
            logdet = logdet + ld
        base = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
        return (base * mask).sum(1) + logdet

    def prior_sample(self, eps, mask, memory, src_pad):
        for layer in reversed(self.flow):
            eps = layer.reverse(eps, mask, memory, src_pad)
        return eps

    def decode_latent(self, z, tgt_pad, memory, src_pad):
        x = self.embed.add_positions(self.latent_in(z))
        return self.embed.logits(self.decoder(x, key_mask(tgt_pad), memory, key_mask(src_pad)))

    # -- training --------------------------------------------------------------------------
    def loss(self, batch: dict, label_smoothing: float = 0.0):
        cfg, src, tgt = self.cfg, batch["src"], batch["tgt"]
        memory, src_pad = self.encode(src)
        tgt_pad = tgt.eq(cfg.pad)
        mask = (~tgt_pad).float()
        h = self.posterior(self.embed(tgt), key_mask(tgt_pad), memory, key_mask(src_pad))
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
