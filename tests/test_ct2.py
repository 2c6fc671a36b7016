"""The CTranslate2 backend (kdgrid.ct2): a kdgrid Transformer exported from its raw weights decodes
to the torch path's output (greedy: every sentence; beam: all but the rare sentences where the two
searches' stopping rules part, stated below), for pre- and post-norm models, and scores a sentence
as torch does (teacher-forced log-probabilities; beam scores normalized by length alike at any
lenpen); ct2_search fast never cuts a beam output into a sentence without its end; sampling is
seeded, loads the model once per run, and a distillation shard resumed in another process is
byte-identical; `kdgrid export-ct2` writes a model that CTranslate2 loads on its own; NAT kinds stay
on torch. Exact beam search decodes a batch in one call where that provably gives each sentence's
result at its own limit; the translator is loaded once, not per call; the decoder keeps no torch
model alive. ctranslate2 is a hard dependency: without it these tests fail, they do not skip."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref

import ctranslate2 as ct2  # a hard dependency (requirements.txt): these tests fail without it
import pytest
import torch
from conftest import env, train_toy_teacher

from kdgrid import ct2 as backend
from kdgrid.batching import pad_stack
from kdgrid.checkpoint import load_for_decoding
from kdgrid.corpus import read_lines
from kdgrid.decoding_backend import split_options, verb_params
from kdgrid.errors import KdgridError
from kdgrid.search import _never
from kdgrid.translate import translate, translate_nbest
from kdgrid.vocab import BOS, EOS, PAD

PY = [sys.executable, "-m", "kdgrid"]
LENGTH = {"max_len_a": 1.2, "max_len_b": 10}
# Beam search: the share of sentences whose output may differ. kdgrid stops a sentence once it
# holds `beam` finished hypotheses that no live one can beat at the current length; CTranslate2
# once 2 x beam have finished (kdgrid.ct2.PATIENCE). Measured: 5 of 1,000 Multi30k test sentences
# with a trained teacher (cpu_s, beam 5).
BEAM_TOLERANCE = 0.05
# ct2_search fast: CTranslate2's own rule (patience 1) and one call per batch at its longest
# limit. Measured: 47 of 1,000 Multi30k test sentences differ from torch's (teacher cpu_s, beam 5).
FAST_BEAM_TOLERANCE = 0.15
# Teacher-forced log p(y|x) per sentence, and beam scores against it: float32 kernels apart, the
# same numbers. Measured: at most 5e-6 nats on sentences of about 16 tokens.
SCORE_TOLERANCE = 1e-4
# Beam output at other length penalties (trained toy teacher, beam 4, 120 sentences): the share
# that may differ. Measured: 2 at lenpen 0.6, 19 at 1.4. At 1.4 CTranslate2 (patience 2) mostly
# finds a longer output that kdgrid's own score ranks higher: kdgrid stops once no live beam,
# normalized at its current length, beats the finished ones, and with lenpen > 1 a live beam's
# normalized score still rises as it grows (kdgrid.search, not the backend).
LENPEN_TOLERANCE = {0.6: 0.05, 1.4: 0.25}


def run(*args):
    return subprocess.run([*PY, *map(str, args)], capture_output=True, text=True, env=env())


@pytest.fixture(scope="module", params=[True, False], ids=["pre_norm", "post_norm"])
def teacher(request, tmp_path_factory):
    return train_toy_teacher(tmp_path_factory.mktemp("ct2_teacher"), run, layers=2, updates=60, pre_norm=request.param)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy teacher trained until its outputs follow the data (mean token log-probability about
    -1.2 nats against -4.2 for a uniform guess): greedy outputs are no runs of one piece."""
    d = train_toy_teacher(tmp_path_factory.mktemp("ct2_trained"), run, layers=2, updates=400)
    torch.set_num_threads(1)
    model, _, vocab = load_for_decoding(d / "model.pt", d / "spm.model")
    return model, backend.Ct2Decoder(model, vocab, torch.device("cpu")), vocab, d


def teacher_forced(model, src_ids, hyps, renormalize=False) -> list[float]:
    """torch's log p(y|x) per sentence, eos included; renormalize: over the tokens the search may
    emit, as CTranslate2's search does (kdgrid.search masks them after its softmax)."""
    src = pad_stack(src_ids, PAD, suffix=EOS)
    prev, gold = pad_stack([[BOS] + h for h in hyps], PAD), pad_stack([h + [EOS] for h in hyps], PAD)
    with torch.no_grad():
        memory, src_pad = model.encode(src)
        if not renormalize:
            return model.sequence_logprob(prev, gold, memory, src_pad).tolist()
        logits = model.decode(prev, memory, src_pad).float()
        logits[..., _never(model.cfg, logits.size(-1))] = float("-inf")
        tok = logits.log_softmax(-1).gather(-1, gold.unsqueeze(-1)).squeeze(-1)
        return tok.masked_fill(gold.eq(PAD), 0.0).sum(1).tolist()


@pytest.fixture
def pair(teacher):
    torch.set_num_threads(1)
    model, _, vocab = load_for_decoding(teacher / "model.pt", teacher / "spm.model")
    decoder = backend.Ct2Decoder(model, vocab, torch.device("cpu"))
    return model, decoder, vocab, read_lines(teacher / "train.src")[:120]


def test_greedy_output_equals_the_torch_path(pair):
    model, decoder, vocab, src = pair
    opts = {"method": "greedy", **LENGTH}
    assert translate(decoder, vocab, src, opts)[0] == translate(model, vocab, src, opts)[0]


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_a_source_without_pieces_decodes_as_torch_does(pair, method):
    """CTranslate2 returns an empty output for an input of eos alone without running the model;
    the backend decodes such rows with torch."""
    model, decoder, vocab, src = pair
    lines = ["", src[0], "", src[1]]
    opts = {"method": method, "beam": 3, **LENGTH}
    assert translate(decoder, vocab, lines, opts)[0] == translate(model, vocab, lines, opts)[0]


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_id_lists_decode_as_the_padded_tensor_does(pair, method):
    """translate() hands the decoder unpadded id lists (no tensor built to be read back); a padded
    tensor, what every other caller passes, gives the same outputs, an empty source included."""
    _, decoder, vocab, src = pair
    rows = [ids + [EOS] for ids in vocab.encode(["", *src[:12]])]
    opts = {"method": method, "beam": 3, **LENGTH}
    as_lists = decoder.generate(rows, **opts)
    assert as_lists == decoder.generate(pad_stack(rows, PAD), **opts)
    assert all(hyp is not None for hyp in as_lists) and len(as_lists) == 13


def test_greedy_equals_at_every_batch_size(pair):
    """Length-sorted batches of 1 and of many sentences, and per-sentence length limits, give the
    same lines (a sentence's limit does not depend on its batch neighbours)."""
    _, decoder, vocab, src = pair
    opts = {"method": "greedy", "max_len_a": 0.5, "max_len_b": 1}  # limits bite: every line is cut
    whole, _ = translate(decoder, vocab, src[:30], opts, max_tokens=4096)
    single, _ = translate(decoder, vocab, src[:30], opts, max_tokens=1)
    assert whole == single
    assert whole == translate(pair[0], vocab, src[:30], opts)[0]


@pytest.mark.parametrize("beam", [1, 4])
def test_beam_output_equals_the_torch_path_within_the_stated_tolerance(pair, beam):
    model, decoder, vocab, src = pair
    opts = {"method": "beam", "beam": beam, "lenpen": 1.0, **LENGTH}
    ours, theirs = translate(model, vocab, src, opts)[0], translate(decoder, vocab, src, opts)[0]
    differ = sum(a != b for a, b in zip(ours, theirs))
    assert differ <= BEAM_TOLERANCE * len(src), f"{differ} of {len(src)} sentences differ"
    if beam == 1:  # beam 1 is greedy in both: no stopping rule to part on
        assert differ == 0


def test_score_batch_equals_the_torch_teacher_forced_log_probability(trained, teacher):
    """CTranslate2's Translator.score_batch on the reference targets, per sentence, against the torch
    model's teacher-forced log-probability: the trained teacher, and both norm placements."""
    model, _, vocab, d = trained
    for teacher_dir in (d, teacher):
        if teacher_dir != d:
            model, _, vocab = load_for_decoding(teacher_dir / "model.pt", teacher_dir / "spm.model")
        decoder = backend.Ct2Decoder(model, vocab, torch.device("cpu"))
        src = vocab.encode(read_lines(teacher_dir / "train.src")[:120])
        tgt = vocab.encode(read_lines(teacher_dir / "train.tgt")[:120])
        want = teacher_forced(model, src, tgt)
        pieces = [[vocab.sp.id_to_piece(i) for i in row] for row in (*[x + [EOS] for x in src], *tgt)]
        results = decoder.translator.score_batch(pieces[:len(src)], pieces[len(src):], max_input_length=0)
        assert [len(r.log_probs) for r in results] == [len(y) + 1 for y in tgt]  # eos scored too
        assert max(abs(sum(r.log_probs) - w) for r, w in zip(results, want)) <= SCORE_TOLERANCE
        if teacher_dir == d:  # trained: far from a uniform guess
            per_token = sum(want) / sum(len(y) + 1 for y in tgt)
            assert per_token < 0 and per_token > -0.5 * torch.log(torch.tensor(float(len(vocab)))).item()


@pytest.mark.parametrize("lenpen", [0.6, 1.4])
def test_beam_scores_are_length_normalized_as_the_torch_search_at_other_length_penalties(trained, lenpen):
    """Each n-best hypothesis' score is kdgrid's ranking score, sum(log p) / (tokens + eos) **
    lenpen, of its teacher-forced log-probability (over the tokens the search may emit); the
    outputs equal torch's within the stated tolerance."""
    model, decoder, vocab, d = trained
    src = vocab.encode(read_lines(d / "train.src")[:120])
    rows, opts = pad_stack(src, PAD, suffix=EOS), {"beam": 4, "lenpen": lenpen, **LENGTH}
    nbests = decoder.generate(rows, "beam", nbest=4, **opts)
    which = [i for i, n in enumerate(nbests) for _ in n]
    hyps, scores = [h for n in nbests for _, h in n], [s for n in nbests for s, _ in n]
    assert len(hyps) > len(src)
    lps = teacher_forced(model, [src[i] for i in which], hyps, renormalize=True)
    assert max(abs(s - lp / (len(h) + 1) ** lenpen) for s, lp, h in zip(scores, lps, hyps)) <= SCORE_TOLERANCE
    ours, theirs = model.generate(rows, "beam", **opts), [n[0][1] for n in nbests]
    differ = sum(a != b for a, b in zip(ours, theirs))
    assert differ <= LENPEN_TOLERANCE[lenpen] * len(src), f"{differ} of {len(src)} sentences differ"


def test_fast_beam_decodes_an_output_past_its_limit_again_at_that_limit(trained):
    """ct2_search fast decodes a batch at its longest limit. A short sentence's beam output that
    ran past its own limit there is decoded again at that limit, as a batch of its own would be,
    not cut into a sentence without its end; one that ended within its limit is kept."""
    model, _, vocab, d = trained
    fast = backend.Ct2Decoder(model, vocab, torch.device("cpu"), search="fast")
    ids = sorted(vocab.encode(read_lines(d / "train.src")[:120]), key=len)
    cut, opts = {"max_len_a": 0.5, "max_len_b": 1}, {"beam": 4, "lenpen": 1.0}

    def limit(x):
        return int((len(x) + 1) * cut["max_len_a"]) + cut["max_len_b"]

    ran_past = cut_differs = 0
    for short, long_ in zip(ids[:20], ids[-20:]):
        assert limit(short) < limit(long_)
        batch = fast.generate(pad_stack([short, long_], PAD, suffix=EOS), "beam", **opts, **cut)[0]
        alone = pad_stack([short], PAD, suffix=EOS)
        at_long = fast.generate(alone, "beam", max_len_a=0, max_len_b=limit(long_), **opts)[0]
        at_own = fast.generate(alone, "beam", **opts, **cut)[0]
        if len(at_long) > limit(short):
            ran_past += 1
            cut_differs += at_long[:limit(short)] != at_own
            assert batch == at_own
        else:
            assert batch == at_long
    assert ran_past and cut_differs  # the case arises, and cutting would have given another output


def test_fast_search_greedy_is_exact_and_beam_within_its_tolerance(pair):
    """ct2_search fast changes beam search only; each output keeps within its own length limit."""
    model, _, vocab, src = pair
    fast = backend.Ct2Decoder(model, vocab, torch.device("cpu"), search="fast")
    cut = {"max_len_a": 0.5, "max_len_b": 1}  # every line reaches its limit
    greedy = {"method": "greedy", **cut}
    assert translate(fast, vocab, src, greedy)[0] == translate(model, vocab, src, greedy)[0]
    opts = {"method": "beam", "beam": 4, "lenpen": 1.0, **LENGTH}
    ours, theirs = translate(model, vocab, src, opts)[0], translate(fast, vocab, src, opts)[0]
    differ = sum(a != b for a, b in zip(ours, theirs))
    assert differ <= FAST_BEAM_TOLERANCE * len(src), f"{differ} of {len(src)} sentences differ"
    ids = vocab.encode(src[:40])
    rows = pad_stack(ids, PAD, suffix=EOS)
    limits = [int((len(x) + 1) * 0.5) + 1 for x in ids]  # the source's tokens with its eos
    for lenpen in (1.0, 5.0):  # 5: long hypotheses win, so some reach their limit
        short = fast.generate(rows, "beam", beam=4, lenpen=lenpen, **cut)
        assert all(len(h) <= n for h, n in zip(short, limits))


def test_the_decode_stats_name_the_device_ctranslate2_runs_on(pair):
    model, decoder, vocab, src = pair
    assert translate(decoder, vocab, src[:4], {"method": "greedy"})[1]["device"] == "cpu"
    decoder.runs_on = "cuda:1"  # what a decoder loaded on the second GPU says
    assert translate(decoder, vocab, src[:4], {"method": "greedy"})[1]["device"] == "cuda:1"


def test_fast_search_nbest_lists_hold_distinct_hypotheses(pair):
    """n-best lists take the grouped calls in fast mode too: cut to a shorter limit, two
    hypotheses could become one."""
    model, _, vocab, src = pair
    fast = backend.Ct2Decoder(model, vocab, torch.device("cpu"), search="fast")
    opts = {"method": "beam", "beam": 4, "nbest": 4, "max_len_a": 0.5, "max_len_b": 1}
    for lenpen in (1.0, 5.0):
        nbests, _ = translate_nbest(fast, vocab, src[:60], {**opts, "lenpen": lenpen})
        assert all(len({h for _, h in n}) == len(n) for n in nbests)


def test_an_unknown_ct2_search_names_the_key(pair):
    model, _, vocab, _ = pair
    with pytest.raises(KdgridError, match="decoding.ct2_search"):
        backend.Ct2Decoder(model, vocab, torch.device("cpu"), search="fastest")


def test_nbest_entry_zero_is_the_plain_output(pair):
    _, decoder, vocab, src = pair
    nbests, _ = translate_nbest(decoder, vocab, src[:40], {"method": "beam", "beam": 4, "nbest": 3, **LENGTH})
    plain, _ = translate(decoder, vocab, src[:40], {"method": "beam", "beam": 4, **LENGTH})
    assert [n[0][1] for n in nbests] == plain
    assert all(len(n) == 3 and [s for s, _ in n] == sorted((s for s, _ in n), reverse=True) for n in nbests)


def counting_translators(monkeypatch) -> list:
    """Patch ctranslate2.Translator to count its loads: the list grows by one per load."""
    loads, real = [], ct2.Translator

    def counted(*args, **kw):
        loads.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(ct2, "Translator", counted)
    return loads


def test_sampling_is_seeded_and_loads_the_model_once_per_run(pair, monkeypatch):
    """Same seed, same lines; another seed, other lines. The translator is loaded when the decoder
    is built and not again for the run's batches (a batch's seed follows the one before: the
    stream goes on); a second run with the same seed starts a fresh stream: one load."""
    model, _, vocab, src = pair
    loads = counting_translators(monkeypatch)
    decoder = backend.Ct2Decoder(model, vocab, torch.device("cpu"))
    batches, generate = [], decoder.generate
    decoder.generate = lambda *args, **kw: batches.append(1) or generate(*args, **kw)
    opts = {"method": "sample_topk", "topk": 5, "temperature": 2.0, "seed": 7, **LENGTH}
    first = translate(decoder, vocab, src, opts, max_tokens=200)[0]
    assert len(batches) >= 4 and len(loads) == 1
    again = translate(decoder, vocab, src, opts, max_tokens=200)[0]
    assert first == again and len(loads) == 2
    other = translate(decoder, vocab, src, {**opts, "seed": 8}, max_tokens=200)[0]
    assert first != other and len(loads) == 3


def test_a_resumed_sampling_shard_is_byte_identical_to_a_whole_run_in_another_process(teacher, tmp_path,
                                                                                       monkeypatch):
    from kdgrid import distill, methods

    params = {"kind": "sample", "temperature": 1.5, "seed": 3, "max_tokens": 100, "backend": "ctranslate2",
              **LENGTH}  # several batches per 40-sentence chunk
    proc = run("distill", "--model", teacher / "model.pt", "--vocab", teacher / "spm.model", "--src",
               teacher / "train.src", "--out", tmp_path / "whole.tgt", "--params", json.dumps(params),
               "--chunk", 40)
    assert proc.returncode == 0, proc.stderr

    def shard(out):
        distill.distill_shard(teacher / "model.pt", teacher / "spm.model", teacher / "train.src", out, 0, 1, 40,
                              params, "cpu")

    real, calls = methods.distill, []

    def stop_after_two(*args, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(methods, "distill", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        shard(tmp_path / "0.tgt")
    monkeypatch.setattr(methods, "distill", real)
    shard(tmp_path / "0.tgt")
    assert (tmp_path / "0.tgt").read_bytes() == (tmp_path / "whole.tgt").read_bytes()


def test_export_ct2_writes_a_model_ctranslate2_loads_on_its_own(teacher, tmp_path):
    proc = run("export-ct2", "--model", teacher / "model.pt", "--vocab", teacher / "spm.model",
               "--out", tmp_path / "ct2")
    assert proc.returncode == 0, proc.stderr
    translator = ct2.Translator(str(tmp_path / "ct2"))
    model, _, vocab = load_for_decoding(teacher / "model.pt", teacher / "spm.model")
    src = read_lines(teacher / "train.src")[:20]
    pieces = vocab.sp.encode(src, out_type=str)  # plain sentencepiece pieces: the source eos is added by it
    got = [vocab.sp.decode(r.hypotheses[0]) for r in translator.translate_batch(pieces, beam_size=1,
                                                                              max_decoding_length=30)]
    want, _ = translate(model, vocab, src, {"method": "greedy", "max_len_a": 0, "max_len_b": 30})
    assert got == want


def test_int8_compute_type_decodes(pair):
    model, _, vocab, src = pair
    int8 = backend.Ct2Decoder(model, vocab, torch.device("cpu"), compute_type="int8")
    out, _ = translate(int8, vocab, src, {"method": "beam", "beam": 4, **LENGTH})
    ref, _ = translate(model, vocab, src, {"method": "beam", "beam": 4, **LENGTH})
    assert sum(a == b for a, b in zip(out, ref)) >= 0.5 * len(src)  # quantized: close, not equal


def test_nat_kinds_and_the_moe_teacher_decode_with_torch(tmp_path):
    from conftest import model_config

    from kdgrid.models import build

    nat = build("nat", model_config("nat"))
    assert backend.for_decoding(nat, None, "ctranslate2", "cpu") is nat
    assert backend.for_decoding(nat, None, "torch", "cpu") is nat
    with pytest.raises(KdgridError, match="decoding.backend must be one of torch, ctranslate2"):
        backend.for_decoding(nat, None, "onnx", "cpu")


def test_backend_options_are_split_from_the_decoder_options():
    got = split_options({"max_tokens": 9, "beam": 4, "backend": "ctranslate2", "ct2_search": "fast"})
    assert got == ({"backend": "ctranslate2", "compute_type": "default", "ct2_search": "fast"},
                   {"max_tokens": 9, "beam": 4})


def test_the_workflow_passes_backend_keys_only_when_they_are_not_the_defaults():
    base = {"max_tokens": 10, "max_len_a": 1.2, "max_len_b": 10}
    assert verb_params({**base, "backend": "torch", "compute_type": "default"}) == base
    assert verb_params({**base, "backend": "ctranslate2", "compute_type": "int8"}) == {
        **base, "backend": "ctranslate2", "compute_type": "int8"}
    assert verb_params({**base, "backend": "ctranslate2"}, autoregressive=False) == base
    assert verb_params({**base, "backend": "ctranslate2", "ct2_search": "exact"}) == {
        **base, "backend": "ctranslate2"}
    assert verb_params({**base, "backend": "ctranslate2", "ct2_search": "fast"}) == {
        **base, "backend": "ctranslate2", "ct2_search": "fast"}
    # CTranslate2's own keys mean nothing to the torch backend: its jobs stay as they were
    assert verb_params({**base, "backend": "torch", "compute_type": "int8", "ct2_search": "fast"}) == base


def test_an_unexportable_model_kind_is_named(tmp_path):
    from conftest import model_config

    from kdgrid.models import build

    with pytest.raises(KdgridError, match="model kind 'cmlm' is not a plain Transformer"):
        backend.build_spec(build("cmlm", model_config("cmlm")), None)


def test_decoding_calls_reuse_the_translator_loaded_with_the_decoder(pair, monkeypatch):
    """Greedy, exact and fast beam search, n-best lists and empty sources, in batches of one and of
    many sentences: the translator the decoder loaded decodes them all (no load, export or
    conversion per call). translate() of a line at a time (sentencepiece one call per line, no
    thread pool per call) gives the text of the whole file's batch calls."""
    model, _, vocab, src = pair
    loads = counting_translators(monkeypatch)
    decoders = [backend.Ct2Decoder(model, vocab, torch.device("cpu"), search=s) for s in ("exact", "fast")]
    translators, lines = [d.translator for d in decoders], ["", *src[:40]]
    for decoder in decoders:
        for opts in ({"method": "greedy", **LENGTH}, {"method": "beam", "beam": 4, **LENGTH}):
            whole = translate(decoder, vocab, lines, opts, max_tokens=200)[0]
            one = [translate(decoder, vocab, [line], opts)[0][0] for line in lines]
            if opts["method"] == "greedy":  # beam: a batch neighbour's float noise could flip a near-tie
                assert one == whole
        translate_nbest(decoder, vocab, lines, {"method": "beam", "beam": 4, "nbest": 2, **LENGTH}, max_tokens=200)
    assert len(loads) == 2 and [d.translator for d in decoders] == translators


def test_exact_beam_search_in_one_call_equals_calls_at_each_sentence_own_limit(trained, monkeypatch):
    """Exact beam search takes a batch of several length limits in one call where that provably
    gives each sentence the result of a call at its own limit (kdgrid.ct2.Ct2Decoder._beam_once),
    and decodes the rest at their own limits: the outputs and n-best lists (scores to float noise)
    are those of one call per limit, for limits that rarely bite and for limits that cut most
    outputs; a trained teacher's batch mostly takes the one call."""
    model, decoder, vocab, d = trained
    ids = vocab.encode(read_lines(d / "train.src")[:120])
    rows = pad_stack(ids, PAD, suffix=EOS)
    calls, proven = [], []
    real_translate, real_once = decoder._translate, decoder._beam_once
    monkeypatch.setattr(decoder, "_translate", lambda *a: calls.append(1) or real_translate(*a))
    monkeypatch.setattr(decoder, "_beam_once", lambda *a: proven.append(real_once(*a)) or proven[-1])
    for cut in (LENGTH, {"max_len_a": 0.5, "max_len_b": 1}):
        limits = {int((len(x) + 1) * cut["max_len_a"]) + cut["max_len_b"] for x in ids}
        assert len(limits) > 1
        for lenpen, nbest in ((1.0, 0), (1.4, 0), (1.0, 3)):
            opts = {"beam": 4, "lenpen": lenpen, "nbest": nbest, **cut}
            with monkeypatch.context() as m:  # the former way: one call per distinct limit
                m.setattr(decoder, "_beam_once", lambda *a: {})
                want = decoder.generate(rows, "beam", **opts)
            calls.clear()
            got = decoder.generate(rows, "beam", **opts)
            if nbest:
                assert [[h for _, h in n] for n in got] == [[h for _, h in n] for n in want]
                assert max(abs(a - b) for n, w in zip(got, want) for (a, _), (b, _) in zip(n, w)) <= SCORE_TOLERANCE
            else:
                assert got == want
            if cut is LENGTH:  # limits that rarely bite: nearly every sentence proven, fewer calls
                assert len(proven[-1]) >= 0.9 * len(ids) and len(calls) < len(limits)
    assert any(len(p) < 0.5 * len(ids) for p in proven)  # limits that bite: most decoded again


def test_the_decoder_keeps_no_torch_model_alive_and_still_decodes_an_empty_source(teacher):
    """Once the caller drops the torch model it is freed (CTranslate2 holds its own copy of the
    weights); a source with no pieces, which CTranslate2 skips unrun, still decodes as torch does."""
    model, _, vocab = load_for_decoding(teacher / "model.pt", teacher / "spm.model")
    lines = ["", read_lines(teacher / "train.src")[0], ""]
    opts = {"method": "beam", "beam": 3, **LENGTH}
    want = translate(model, vocab, lines, opts)[0]
    decoder, alive = backend.Ct2Decoder(model, vocab, torch.device("cpu")), weakref.ref(model)
    assert translate(decoder, vocab, lines, opts)[0] == want  # the caller's model, while it has one
    del model
    gc.collect()
    assert alive() is None
    assert translate(decoder, vocab, lines, opts)[0] == want  # rebuilt from the decoder's own copy


def test_exact_beam_search_at_one_length_limit_is_one_plain_call(trained, monkeypatch):
    """A batch whose sentences share one length limit (always at batch 1) is one call at that
    limit, asking no extra hypotheses for _beam_once's proof; each output is the one it gets in a
    batch of many limits."""
    _, decoder, vocab, d = trained
    ids = vocab.encode(read_lines(d / "train.src")[:60])
    many = decoder.generate(pad_stack(ids, PAD, suffix=EOS), "beam", beam=4, **LENGTH)
    calls = []
    real_translate = decoder._translate
    monkeypatch.setattr(decoder, "_translate", lambda *a: calls.append(a[3]) or real_translate(*a))
    monkeypatch.setattr(decoder, "_beam_once", lambda *a: pytest.fail("one limit needs no proof"))
    for i in (0, 7, 31):
        calls.clear()
        assert decoder.generate(pad_stack([ids[i]], PAD, suffix=EOS), "beam", beam=4, **LENGTH) == [many[i]]
        assert len(calls) == 1 and calls[0]["num_hypotheses"] == 1
