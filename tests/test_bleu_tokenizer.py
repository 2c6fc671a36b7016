"""Sequence-level interpolation picks candidates by sentence BLEU; the grid reports corpus BLEU. Both
must split text the same way (one home: kdgrid.metrics.bleu.TOKENIZE), or "closest to the
reference" would mean something else than the score it is meant to raise."""

from __future__ import annotations

import pytest
from sacrebleu.metrics import BLEU

from kdgrid.errors import KdgridError
from kdgrid.methods import interpolate
from kdgrid.metrics import bleu

# Punctuation glued to words in the hypothesis, apart in the reference: 13a splits both alike, a
# whitespace split ("none") does not. Every n-gram order has a match, so neither sentence BLEU's
# smoothing nor its effective order changes the score of this one pair.
HYP = "the cat, sat on the red mat."
REF = "the cat , sat on the mat ."


def test_interpolation_and_the_reported_bleu_use_one_tokenizer():
    corpus = bleu.score([HYP], [REF])
    sentence = interpolate.scorer("bleu")
    assert f"tok:{bleu.TOKENIZE}" in corpus["bleu_signature"]
    assert interpolate.record("bleu")["tokenize"] == bleu.TOKENIZE == sentence.tokenizer_signature


def test_on_one_sentence_the_sentence_bleu_interpolation_maximizes_is_the_reported_bleu():
    corpus = bleu.score([HYP], [REF])["bleu"]
    sentence = interpolate.scorer("bleu").sentence_score(HYP, [REF]).score
    assert round(sentence, 2) == corpus
    # the example tells tokenizers apart: a whitespace split would score the pair lower
    whitespace = BLEU(tokenize="none", smooth_method="exp", effective_order=True)
    assert whitespace.sentence_score(HYP, [REF]).score < sentence - 10


def test_streamed_bleu_uses_the_same_tokenizer(tmp_path):
    (tmp_path / "hyp").write_text(HYP + "\n")
    (tmp_path / "ref").write_text(REF + "\n")
    streamed = bleu.streamed_bleu(tmp_path / "hyp", tmp_path / "ref")
    assert streamed["bleu"] == bleu.score([HYP], [REF])["bleu"]
    assert f"tok:{bleu.TOKENIZE}" in streamed["bleu_signature"]


def test_the_interpolation_record_names_its_metric_and_settings():
    assert interpolate.record("bleu") == {"metric": "sentence BLEU (sacrebleu)", "tokenize": bleu.TOKENIZE,
                                          "lowercase": False, "smooth_method": "exp", "effective_order": True}
    chrf = interpolate.record("chrf")
    assert chrf["metric"] == "sentence chrF (sacrebleu)" and chrf["char_order"] == 6
    with pytest.raises(KdgridError, match="metric must be one of bleu, chrf"):
        interpolate.record("ter")
