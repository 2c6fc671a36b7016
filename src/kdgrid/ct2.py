"""CTranslate2 backend for autoregressive decoding: a kdgrid Transformer's weights as a
CTranslate2 TransformerSpec (built from the raw tensors, no converter round trip), and a decoder
object with the model's `generate` interface, so translate(), distillation, teacher evaluation
and the AT student use it unchanged (`decoding.backend: ctranslate2`).

What makes its output equal the torch path's (kdgrid.search), and what cannot:
- the same tokens are never emitted (pad, bos, unk, <mask>). CTranslate2 masks them before its
  softmax (renormalizing over the rest), kdgrid after: scores differ by the masked tokens' tiny
  probability, which can only flip near-ties;
- the length limit is per sentence in kdgrid (int(source tokens * a) + b); CTranslate2 has one
  limit per call. Greedy and sampled outputs are decoded in one call per batch at its longest
  limit and each is cut to its own limit (a prefix, so greedy output is the same). Beam search
  (`ct2_search: exact`) gives each sentence the result of a call at its own limit: a batch of
  several limits is decoded in one call at its longest, a sentence's result kept where that
  provably equals its own limit's (its search stopped two steps before its limit: _beam_once),
  the rest decoded again in groups of equal limit: the outputs of one call per limit, in one
  call per batch where the limits rarely bite. At the limit kdgrid forces eos, CTranslate2
  returns the hypothesis as it stands, which may rank differently;
- greedy output is the same. Beam search stops by another rule (PATIENCE below): a few
  sentences in a thousand differ; tests/test_ct2.py states the tolerance. `ct2_search: fast`
  trades that for CTranslate2's own speed: its stopping rule (patience 1) and one call per batch
  at the longest limit; an output that ran past its own sentence's limit is decoded again, in
  groups of equal limit, at that limit (a cut beam hypothesis would be a sentence without its
  end). 47 of 1,000 Multi30k test outputs differed from torch's against 5 exact (measured
  before that re-decoding);
- both rank a beam hypothesis by sum(log p) / (tokens + eos) ** lenpen, for any lenpen (checked
  against CTranslate2's scores in the tests);
- float differences (other kernels; int8 or 16-bit compute types more so) can flip rare ties.
Sampling draws from CTranslate2's own generator, one per translator worker thread, seeded from
ctranslate2.set_random_seed at the thread's first draw and never again (set_random_seed on a
translator that has drawn changes nothing: checked). So a call whose seed follows the previous
sampling call's (seed + 1: translate() numbers its batches so) continues that stream, and any
other seed starts a fresh one on a freshly loaded translator: one load per translate() call or
distillation chunk, not per batch, and a chunk's lines depend only on its seed and sources
(resumed shards stay byte-identical). The draws differ from torch's.

Per call, the decoder adds ~0.1 ms of Python to CTranslate2's translate_batch (the id <-> piece
conversions; measured at batch 1 on a 2+2-layer d256 teacher, ~6 ms a sentence): the model is
exported and loaded once, when the decoder is built, and reloaded only for a sampling stream
(above); length limits are remembered per source length. It keeps no reference to the torch
model (see Ct2Decoder._keep_torch).
"""

from __future__ import annotations

import dataclasses
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch

from kdgrid.batching import pad_stack
from kdgrid.decoding_backend import BACKENDS, COMPUTE_TYPES, SEARCHES
from kdgrid.errors import KdgridError
from kdgrid.models.layers import sinusoidal_positions
from kdgrid.search import METHODS, _max_lengths, _never
from kdgrid.search import generate as torch_generate
from kdgrid.vocab import BOS, EOS, UNK

INSTALL = "pip install ctranslate2==4.8.5 (a wheel for Linux, macOS and Windows; kdgrid's requirements.txt pins it)"
POSITIONS = 4096  # rows of the exported sinusoidal table: the longest sentence CTranslate2 can take
# CTranslate2 stops a sentence's beam search once round(beam * PATIENCE) hypotheses have finished
# (fairseq's rule at 1); kdgrid's search also waits until no live beam can beat the finished ones.
# On 1,000 Multi30k test sentences (teacher cpu_s, beam 5) the outputs that differ from torch's,
# and CTranslate2's time (torch 6.2 s): patience 1: 47, 2.3 s; 2: 5, 2.8 s; 5: 4, 4.0 s.
PATIENCE = 2


def _import():
    try:
        import ctranslate2
    except ImportError:
        raise KdgridError(f"decoding.backend ctranslate2: the ctranslate2 package is not installed; "
                          f"{INSTALL}") from None
    return ctranslate2


def supports(model) -> bool:
    """Whether CTranslate2 can decode this model: a plain Transformer (the teachers, the AT
    student). The mixture-of-experts teacher's learned start tokens and every NAT stay on torch."""
    return getattr(model, "kind", None) == "transformer"


def build_spec(model, vocab, source_eos: bool = True):
    """The CTranslate2 TransformerSpec of a kdgrid Transformer, from its weights."""
    _import()
    from ctranslate2.specs import transformer_spec

    if not supports(model):
        raise KdgridError(f"CTranslate2 export: model kind {model.kind!r} is not a plain Transformer "
                          "(only kind 'transformer' exports)")
    cfg = model.cfg
    spec = transformer_spec.TransformerSpec.from_config(
        (cfg.encoder_layers, cfg.decoder_layers), cfg.heads, pre_norm=cfg.pre_norm)
    weights = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    table = weights["embed.table.weight"]
    # explicit: CTranslate2's own start at 1 (a model converted from fairseq starts at its offset 2)
    positions = sinusoidal_positions(POSITIONS, cfg.d_model, start=cfg.position_offset).numpy()
    for side, stack in (("encoder", spec.encoder), ("decoder", spec.decoder)):
        embeddings = stack.embeddings[0] if isinstance(stack.embeddings, list) else stack.embeddings
        embeddings.weight = table
        stack.scale_embeddings = True  # kdgrid scales token embeddings by sqrt(d_model)
        stack.position_encodings.encodings = positions
        layers = cfg.encoder_layers if side == "encoder" else cfg.decoder_layers
        for i in range(layers):
            _set_block(stack.layer[i], weights, f"{side}.layers.{i}.", cross=side == "decoder")
        if cfg.pre_norm:
            _set_norm(stack.layer_norm, weights, f"{side}.norm.")
    spec.decoder.projection.weight = table  # shared with the embeddings (aliased when saved)
    if cfg.masked_outputs:  # a converted fairseq model's extra rows: never emitted, out of the softmax
        bias = np.zeros(table.shape[0], dtype=np.float32)
        bias[cfg.masked_outputs] = -1e9
        spec.decoder.projection.bias = bias
    spec.config.unk_token = vocab.sp.id_to_piece(UNK)
    spec.config.bos_token = vocab.sp.id_to_piece(BOS)
    spec.config.eos_token = vocab.sp.id_to_piece(EOS)
    spec.config.decoder_start_token = vocab.sp.id_to_piece(cfg.bos)  # eos for a model converted from fairseq
    spec.config.add_source_eos = source_eos  # kdgrid's sources end with eos
    pieces = [vocab.sp.id_to_piece(i) for i in range(len(vocab))]
    spec.register_source_vocabulary(pieces)
    spec.register_target_vocabulary(pieces)
    spec.validate()
    return spec


def _set_block(layer, w, prefix, cross):
    _set_attention(layer.self_attention, w, prefix + "self_attn.", fused_qkv=True)
    _set_norm(layer.self_attention.layer_norm, w, prefix + "norms.0.")
    if cross:
        _set_attention(layer.attention, w, prefix + "cross_attn.", fused_qkv=False)
        _set_norm(layer.attention.layer_norm, w, prefix + "norms.1.")
    _set_norm(layer.ffn.layer_norm, w, prefix + f"norms.{2 if cross else 1}.")
    _set_linear(layer.ffn.linear_0, w, prefix + "ffn.fc1.")
    _set_linear(layer.ffn.linear_1, w, prefix + "ffn.fc2.")


def _set_attention(spec, w, prefix, fused_qkv):
    import numpy as np

    q_w, q_b = w[prefix + "q.weight"], w[prefix + "q.bias"]
    kv_w, kv_b = w[prefix + "kv.weight"], w[prefix + "kv.bias"]  # rows: keys, then values
    if fused_qkv:
        spec.linear[0].weight, spec.linear[0].bias = np.concatenate([q_w, kv_w]), np.concatenate([q_b, kv_b])
    else:
        spec.linear[0].weight, spec.linear[0].bias = q_w, q_b
        spec.linear[1].weight, spec.linear[1].bias = kv_w, kv_b
    _set_linear(spec.linear[-1], w, prefix + "out.")


def _set_linear(spec, w, prefix):
    spec.weight, spec.bias = w[prefix + "weight"], w[prefix + "bias"]


def _set_norm(spec, w, prefix):
    spec.gamma, spec.beta = w[prefix + "weight"], w[prefix + "bias"]


def export(model, vocab, out_dir, quantization: str | None = None, source_eos: bool = True) -> None:
    """Write the CTranslate2 model directory `out_dir` (model.bin, config.json, a shared vocabulary
    of the sentencepiece pieces). source_eos: CTranslate2 appends eos to each source (so plain
    sentencepiece pieces translate); off, the caller passes it (Ct2Decoder does)."""
    spec = build_spec(model, vocab, source_eos)
    spec.optimize(quantization=quantization)  # aliases the shared embedding tables; stores int8 etc.
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    spec.save(str(out_dir))


class Ct2Decoder:
    """A kdgrid Transformer decoded by CTranslate2: `generate(src, method, ...)` takes the padded
    source ids that kdgrid.search takes and returns what it returns. It holds no reference to the
    torch model: once the caller drops it, only CTranslate2's copy of the weights stays in memory."""

    kind = "transformer"
    takes_rows = True  # generate() also takes the sources as lists of ids (eos ended, unpadded)

    def __init__(self, model, vocab, device: torch.device, compute_type: str = "default", threads: int = 1,
                 search: str = "exact"):
        ct2 = _import()
        if compute_type not in COMPUTE_TYPES:
            raise KdgridError(f"decoding.compute_type must be one of {', '.join(COMPUTE_TYPES)}, got {compute_type!r}")
        if search not in SEARCHES:
            raise KdgridError(f"decoding.ct2_search must be one of {', '.join(SEARCHES)}, got {search!r}")
        self.cfg, self.device, self.compute_type, self.search = model.cfg, torch.device("cpu"), compute_type, search
        self._ct2 = ct2
        self._dir = tempfile.TemporaryDirectory(prefix="kdgrid-ct2-")  # removed with this object
        export(model, vocab, self._dir.name, source_eos=False)
        where = "cuda" if device.type == "cuda" else "cpu"
        self._load = dict(device=where, device_index=(device.index or 0) if where == "cuda" else 0,
                          compute_type=compute_type, inter_threads=1, intra_threads=max(1, threads))
        # self.device: where generate() takes its input ids (CPU lists); runs_on: where it decodes
        self.runs_on = f"cuda:{self._load['device_index']}" if where == "cuda" else "cpu"
        self.translator = self._open()
        # sampling: whether this translator's worker has drawn (its generator is then seeded for
        # good), and the seed that would continue its stream (None: none would, e.g. after a failure)
        self._drawn, self._next_seed = False, None
        self._keep_torch(model)
        self.pieces = [vocab.sp.id_to_piece(i) for i in range(len(vocab))]
        self.ids = {p: i for i, p in enumerate(self.pieces)}
        # the search's never-emitted ids, unk aside (CTranslate2's disable_unk takes that one)
        self.never = [[self.pieces[i]] for i in _never(self.cfg, len(self.pieces)) if i != UNK]
        self._limits: dict = {}  # (max_len_a, max_len_b) -> {source tokens: length limit}

    def _keep_torch(self, model) -> None:
        """Torch decodes what CTranslate2 skips unrun (a source with no pieces, see generate), so
        the decoder must reach the model without holding it (its weights would stay in memory beside
        CTranslate2's for the whole run): a weak reference while the caller keeps the model (e.g.
        evaluate, which counts its parameters), else a copy of its weights in the temporary
        directory, rebuilt on first need."""
        param = next(model.parameters())
        self._model, self._torch = weakref.ref(model), None
        self._rebuild = (model.kind, dataclasses.asdict(model.cfg), param.device, param.dtype)
        torch.save(model.state_dict(), Path(self._dir.name) / "torch.pt")

    def _torch_model(self):
        model = self._model()
        model = self._torch if model is None else model
        if model is None:
            from kdgrid.models import build

            kind, cfg, device, dtype = self._rebuild
            model = build(kind, cfg)
            model.load_state_dict(torch.load(Path(self._dir.name) / "torch.pt", weights_only=True))
            self._torch = model = model.eval().to(device=device, dtype=dtype)
        return model

    def _open(self):
        try:
            return self._ct2.Translator(self._dir.name, **self._load)
        except (RuntimeError, ValueError) as e:
            raise KdgridError(f"CTranslate2 cannot load the model on {self._load['device']} with decoding.compute_type "
                              f"{self.compute_type!r} ({e}); choose another compute_type (int8 or default on CPU) "
                              "or decoding.backend torch") from None

    def _seed(self, seed: int) -> None:
        """Make the next sampling call draw from `seed`'s stream: continue the translator's own
        stream where `seed` follows the last call's, else seed a worker that has not drawn yet
        (reloading the translator if this one has)."""
        if seed == self._next_seed:
            return
        if self._drawn:
            self.translator = self._open()  # a fresh worker thread: its generator is not seeded yet
        self._ct2.set_random_seed(seed % 2**32)  # an unsigned 32-bit seed, read at the first draw
        self._drawn = True

    def _length_limits(self, tokens, a, b) -> list[int]:
        """kdgrid.search._max_lengths of each source, computed by it once per source length and
        (a, b), then remembered: its tensor ops (~0.1 ms) are a few percent of a batch-1 call."""
        known = self._limits.setdefault((a, b), {})
        new = sorted({len(t) for t in tokens} - known.keys())
        if new:  # a row of n tokens that are not pad (0) per new length n
            rows = (torch.arange(max(new)) < torch.tensor(new)[:, None]).long()
            known.update(zip(new, _max_lengths(rows, 0, a, b).tolist()))
        return [known[len(t)] for t in tokens]

    def _translate(self, tokens, rows, limit, options):
        return self.translator.translate_batch([tokens[i] for i in rows], max_decoding_length=limit, **options)

    def _beam_once(self, tokens, rows, limits, options, beam):
        """Beam search in one call at the batch's longest limit, with each sentence's result where
        it provably equals that of a call at its own limit: {row: result}; the other rows are for
        calls at their own limits. CTranslate2 (lenpen != 0) stops a sentence at the first step
        where `stop` = round(beam * patience) hypotheses have finished, or at the call's last step
        (limit - 1), which registers every live beam as it stands. Up to its own last step a
        sentence's search is the same at any longer limit, so where it stopped two or more steps
        before its own limit, a call at that limit would have registered the same hypotheses and
        stopped at the same step. That step is the length of the longest hypothesis among the
        best `stop` (what num_hypotheses may ask at most): a hypothesis ended by eos at step s
        holds s tokens, and fewer than `stop` had finished before the stopping step, so at least
        one of those that finished at it is among the best `stop`. A sentence whose limit is the
        call's needs no proof. Ranking, and so the n best, are a call's at its own limit: one sort
        of the same scores, cut to fewer."""
        stop = round(beam * options["patience"])  # CTranslate2's max_candidates
        longest = max(limits[i] for i in rows)
        proven = {}
        for i, result in zip(rows, self._translate(tokens, rows, longest, dict(options, num_hypotheses=stop))):
            hyps = result.hypotheses
            if limits[i] == longest or (len(hyps) == stop and max(map(len, hyps)) <= limits[i] - 2):
                proven[i] = result
        return proven

    def generate(self, src: torch.Tensor | list[list[int]], method: str = "beam", *, beam: int = 5, lenpen: float = 1.0,
                 temperature: float = 1.0, topk: int = 10, max_len_a: float = 1.2, max_len_b: int = 10,
                 seed: int | None = None, use_cache: bool = True, nbest: int = 0):
        if method not in METHODS:
            raise KdgridError(f"unknown decoding method {method!r}; known: {', '.join(METHODS)}")
        if nbest and method != "beam":
            raise KdgridError(f"nbest: an n-best list comes from beam search, not from {method!r}")
        if method == "beam" and (beam < 1 or not 0 <= nbest <= beam):
            raise KdgridError(f"beam {beam} must be positive and nbest {nbest} between 0 and it")
        if method in ("sample", "sample_topk") and temperature <= 0:
            raise KdgridError(f"temperature must be positive, got {temperature}")
        if method == "sample_topk" and topk < 1:
            raise KdgridError(f"topk must be positive, got {topk}")
        # the source as kdgrid has it, eos included (the decoder's export does not append it)
        pieces, pad = self.pieces, self.cfg.pad
        rows = src.tolist() if torch.is_tensor(src) else src
        tokens = [[pieces[i] for i in row if i != pad] for row in rows]
        limits = self._length_limits(tokens, max_len_a, max_len_b)
        width = max(map(len, tokens), default=0)
        if max(max(limits, default=0), width) >= POSITIONS:
            raise KdgridError(f"CTranslate2 backend: a source of {width} tokens or a length limit of "
                              f"{max(limits)} exceeds the exported position table ({POSITIONS}); lower "
                              "decoding.max_len_a/b or use decoding.backend torch")
        options = {"beam_size": beam if method == "beam" else 1, "length_penalty": lenpen,
                   "num_hypotheses": max(nbest, 1), "return_scores": bool(nbest), "disable_unk": True,
                   "suppress_sequences": self.never, "max_input_length": 0, "min_decoding_length": 0}
        # exact beam search and n-best lists: each sentence's result is that of a call at its own
        # limit (an n-best list never cut: cut hypotheses could repeat and keep the scores of their
        # uncut originals); else one call per batch at its longest limit: greedy and sampled
        # outputs cut to their own limit (a prefix), fast beam outputs past theirs decoded again at it
        grouped = method == "beam" and (self.search == "exact" or nbest > 0)
        sampled = method in ("sample", "sample_topk")
        if method == "beam":
            options.update(patience=PATIENCE if self.search == "exact" else 1)
        elif sampled:
            options.update(sampling_topk=topk if method == "sample_topk" else 0, sampling_temperature=temperature)
        out: list = [None] * len(tokens)
        empty = [i for i, t in enumerate(tokens) if len(t) <= 1]  # eos alone: CTranslate2 would return []
        if empty:
            model = self._torch_model()
            opts = dict(beam=beam, lenpen=lenpen, temperature=temperature, topk=topk, max_len_a=max_len_a,
                        max_len_b=max_len_b, seed=seed, nbest=nbest)
            batch = pad_stack([[t for t in rows[i] if t != pad] for i in empty], pad)
            for i, hyp in zip(empty, torch_generate(model, batch.to(next(model.parameters()).device), method, **opts)):
                out[i] = hyp
        todo = [i for i in range(len(tokens)) if out[i] is None]
        seed = 0 if seed is None else int(seed)
        if not todo:  # nothing drawn: a stream this call would have continued goes on after it
            if sampled and seed == self._next_seed:
                self._next_seed = seed + 1
            return out
        eos, ids = pieces[self.cfg.eos], self.ids

        def decoded(result, limit):
            hyps = [[ids[p] for p in h if p != eos][:limit] for h in result.hypotheses[:max(nbest, 1)]]
            return list(zip(result.scores, hyps)) if nbest else hyps[0]

        if sampled:
            self._seed(seed)
            self._next_seed = None  # until this call has drawn all it draws
        if grouped and (lenpen == 0 or len({limits[i] for i in todo}) == 1):
            # one limit (always at batch 1): one call at it is each sentence's own; lenpen 0:
            # CTranslate2 then stops once its best beam ends, and _beam_once's proof fails
            again = todo
        elif grouped:
            proven = self._beam_once(tokens, todo, limits, options, beam)
            for i, result in proven.items():
                out[i] = decoded(result, limits[i])
            again = [i for i in todo if i not in proven]
        else:
            results = self._translate(tokens, todo, max(limits[i] for i in todo), options)
            again = []  # beam outputs longer than their own limit: decoded again at it, not cut
            for i, result in zip(todo, results):
                hyp = [ids[p] for p in result.hypotheses[0] if p != eos]
                if method == "beam" and len(hyp) > limits[i]:
                    again.append(i)
                else:
                    out[i] = hyp[:limits[i]]  # greedy and sampled: the prefix the limit would give
        for limit in sorted({limits[i] for i in again}):
            group = [i for i in again if limits[i] == limit]
            for i, result in zip(group, self._translate(tokens, group, limit, options)):
                out[i] = decoded(result, limit)
        if sampled:
            self._next_seed = seed + 1
        return out


def for_decoding(model, vocab, backend: str, device, compute_type: str = "default", threads: int = 1,
                 ct2_search: str = "exact"):
    """The object to decode with: the torch model itself, or its CTranslate2 decoder where the
    backend asks for it and the model kind supports it (else the torch model, logged)."""
    from kdgrid.progress import log

    if backend not in BACKENDS:
        raise KdgridError(f"decoding.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return model
    if not supports(model):
        log(f"decoding.backend ctranslate2: model kind {model.kind!r} decodes with torch "
            "(CTranslate2 takes plain Transformers)")
        torch.set_num_threads(max(1, threads))  # the CLI gave torch one thread, for CTranslate2
        return model
    return Ct2Decoder(model, vocab, torch.device(device), compute_type, threads, ct2_search)
