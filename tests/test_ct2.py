"""The CTranslate2 backend (kdgrid.ct2): a kdgrid Transformer exported from its raw weights decodes
to the torch path's output (greedy: every sentence; beam: all but the rare sentences where the two
searches' stopping rules part, stated below), for pre- and post-norm models; sampling is seeded per
call, so a resumed distillation shard is byte-identical; `kdgrid export-ct2` writes a model that
CTranslate2 loads on its own; NAT kinds stay on torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import env, train_toy_teacher

from kdgrid.batching import pad_stack
from kdgrid.checkpoint import load_for_decoding
from kdgrid.corpus import read_lines
from kdgrid.errors import KdgridError
from kdgrid.translate import translate, translate_nbest
from kdgrid.vocab import EOS, PAD

ct2 = pytest.importorskip("ctranslate2")
from kdgrid import ct2 as backend  # noqa: E402

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


def run(*args):
    return subprocess.run([*PY, *map(str, args)], capture_output=True, text=True, env=env())


@pytest.fixture(scope="module", params=[True, False], ids=["pre_norm", "post_norm"])
def teacher(request, tmp_path_factory):
    return train_toy_teacher(tmp_path_factory.mktemp("ct2_teacher"), run, layers=2, updates=60, pre_norm=request.param)


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


def test_sampling_is_seeded_per_call(pair):
    _, decoder, vocab, src = pair
    opts = {"method": "sample_topk", "topk": 5, "temperature": 2.0, "seed": 7, **LENGTH}
    first, again = translate(decoder, vocab, src, opts)[0], translate(decoder, vocab, src, opts)[0]
    other = translate(decoder, vocab, src, {**opts, "seed": 8})[0]
    assert first == again and first != other


def test_a_resumed_sampling_shard_is_byte_identical(teacher, tmp_path, monkeypatch):
    from kdgrid import distill, methods

    params = {"kind": "sample", "temperature": 1.5, "seed": 3, "max_tokens": 400, "backend": "ctranslate2",
              **LENGTH}

    def shard(out):
        distill.distill_shard(teacher / "model.pt", teacher / "spm.model", teacher / "train.src", out, 0, 1, 40,
                              params, "cpu")

    shard(tmp_path / "whole.tgt")
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
    got = backend.split_options({"max_tokens": 9, "beam": 4, "backend": "ctranslate2", "ct2_search": "fast"})
    assert got == ({"backend": "ctranslate2", "compute_type": "default", "ct2_search": "fast"},
                   {"max_tokens": 9, "beam": 4})


def test_the_workflow_passes_backend_keys_only_when_they_are_not_the_defaults():
    sys.path.insert(0, str(__import__("conftest").ROOT / "workflow"))
    import method_kinds

    assert method_kinds.BACKEND_DEFAULTS == backend.BACKEND_OPTIONS  # the plan's copy (no torch import there)
    base = {"max_tokens": 10, "max_len_a": 1.2, "max_len_b": 10}
    assert method_kinds.decoding({**base, "backend": "torch", "compute_type": "default"}) == base
    assert method_kinds.decoding({**base, "backend": "ctranslate2", "compute_type": "int8"}) == {
        **base, "backend": "ctranslate2", "compute_type": "int8"}
    assert method_kinds.decoding({**base, "backend": "ctranslate2"}, autoregressive=False) == base
    assert method_kinds.decoding({**base, "backend": "ctranslate2", "ct2_search": "exact"}) == {
        **base, "backend": "ctranslate2"}
    assert method_kinds.decoding({**base, "backend": "ctranslate2", "ct2_search": "fast"}) == {
        **base, "backend": "ctranslate2", "ct2_search": "fast"}
    # CTranslate2's own keys mean nothing to the torch backend: its jobs stay as they were
    assert method_kinds.decoding({**base, "backend": "torch", "compute_type": "int8", "ct2_search": "fast"}) == base


def test_an_unexportable_model_kind_is_named(tmp_path):
    from conftest import model_config

    from kdgrid.models import build

    with pytest.raises(KdgridError, match="model kind 'cmlm' is not a plain Transformer"):
        backend.build_spec(build("cmlm", model_config("cmlm")), None)
