"""C(d) and F(d) on hand-made alignments; grow-diag-final-and; eflomal on real text."""

from __future__ import annotations

import math

import pytest

from kdgrid.corpus import write_lines
from kdgrid.errors import KdgridError
from kdgrid.metrics import bleu
from kdgrid.metrics.align import align, grow_diag_final_and, word_tokens
from kdgrid.metrics.complexity import Smoothing, Vocab, complexity, count_links, data_metrics, faithfulness


def corpus(tmp_path, name, triples):
    """Write (source, target, links) triples as three files; return their paths."""
    paths = [tmp_path / f"{name}.{k}" for k in ("src", "tgt", "links")]
    for path, column in zip(paths, zip(*triples)):
        write_lines(path, column)
    return paths


ONE_TO_ONE = [("a b", "x y", "0-0 1-1"), ("b a", "y x", "0-0 1-1"), ("a c", "x w", "0-0 1-1")]
SPLIT = [("a b", "x y", "0-0 1-1"), ("a b", "z y", "0-0 1-1")]  # a -> x|z evenly, b -> y


def test_one_to_one_corpus_has_zero_complexity(tmp_path):
    m = data_metrics(*corpus(tmp_path, "d", ONE_TO_ONE))
    assert m["complexity"] == 0.0 and m["complexity_types"] == 3 and m["links"] == 6


def test_even_split_contributes_ln2(tmp_path):
    table = count_links(*corpus(tmp_path, "d", SPLIT), Vocab())
    c, types = complexity(table)
    assert types == 2
    assert c == pytest.approx((math.log(2) + 0.0) / 2)


def test_identical_distilled_set_has_zero_faithfulness(tmp_path):
    s, t, a = corpus(tmp_path, "real", SPLIT)
    m = data_metrics(s, t, a, t, a)
    assert m["faithfulness"] == pytest.approx(0.0, abs=1e-12)
    assert m["complexity"] == pytest.approx(m["real"]["complexity"])


def test_known_kl_case(tmp_path):
    # real: a -> x 2, z 2 (1/2, 1/2); distilled: a -> x 3, z 1 (3/4, 1/4); b -> y in both (KL 0)
    real = [("a b", "x y", "0-0 1-1")] * 2 + [("a b", "z y", "0-0 1-1")] * 2
    dist = [("a b", "x y", "0-0 1-1")] * 3 + [("a b", "z y", "0-0 1-1")]
    vocab = Vocab()
    r = count_links(*corpus(tmp_path, "r", real), vocab)
    d = count_links(*corpus(tmp_path, "d", dist), vocab)
    kl_a = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # = 0.143841...
    f, types, dropped, f_both = faithfulness(r, d)
    assert (types, dropped) == (2, 0)
    assert f == pytest.approx(kl_a / 2) and f_both == f
    assert kl_a == pytest.approx(0.1438410362)


def pair_tables(tmp_path, real, dist):
    vocab = Vocab()
    return count_links(*corpus(tmp_path, "r", real), vocab), count_links(*corpus(tmp_path, "d", dist), vocab)


def test_floor_applies_when_the_distilled_set_drops_a_translation(tmp_path):
    r, d = pair_tables(tmp_path, [("a", "x", "0-0"), ("a", "z", "0-0")], [("a", "x", "0-0"), ("a", "x", "0-0")])
    f, _, _, _ = faithfulness(r, d, Smoothing("floor", floor=1e-10))
    assert f == pytest.approx(0.5 * math.log(0.5 / 1.0) + 0.5 * math.log(0.5 / 1e-10))


# real: a -> x, z (one link each), b -> y twice, c -> w (once); distilled: a -> x 3 times, b -> y
# twice, c never linked (the word is there, its link is not): a dropped type.
REAL3 = [("a b", "x y", "0-0 1-1"), ("a b c", "z y w", "0-0 1-1 2-2")]
DIST3 = [("a b", "x y", "0-0 1-1"), ("a b c", "x y x", "0-0 1-1 0-2")]


def test_dropped_source_types_stay_in_the_average_under_the_floor(tmp_path):
    r, d = pair_tables(tmp_path, REAL3, DIST3)
    f, types, dropped, f_both = faithfulness(r, d, Smoothing("floor", floor=1e-4))
    kl_a = 0.5 * math.log(0.5 / 1.0) + 0.5 * math.log(0.5 / 1e-4)  # z dropped
    kl_b = 0.0
    kl_c = 1.0 * math.log(1.0 / 1e-4)  # c -> w only; c never linked in d: p_d = floor
    assert (types, dropped) == (3, 1)
    assert f == pytest.approx((kl_a + kl_b + kl_c) / 3)
    assert f_both == pytest.approx((kl_a + kl_b) / 2)  # the old value, c silently left out


def test_add_alpha_smoothing_hand_checked(tmp_path):
    r, d = pair_tables(tmp_path, REAL3, DIST3)
    alpha = 0.5
    f, types, dropped, _ = faithfulness(r, d, Smoothing("add_alpha", alpha=alpha))
    # a: Y(a) = {x, z}; counts in d: x 3, z 0 -> p_d(x) = 3.5 / 4, p_d(z) = 0.5 / 4
    kl_a = 0.5 * math.log(0.5 / (3.5 / 4)) + 0.5 * math.log(0.5 / (0.5 / 4))
    # b: Y(b) = {y}; d: y 2 -> p_d(y) = 2.5 / 2.5 = 1
    kl_b = 0.0
    # c: dropped; Y(c) = {w} -> p_d(w) = 0.5 / 0.5 = 1: uniform over one type, KL = ln 1 - H = 0
    kl_c = 0.0
    assert (types, dropped) == (3, 1)
    assert f == pytest.approx((kl_a + kl_b + kl_c) / 3)
    assert kl_a == pytest.approx(0.5 * math.log(4 / 7) + 0.5 * math.log(4.0))


def test_add_alpha_dropped_type_costs_ln_support_minus_entropy(tmp_path):
    # real: c -> w 3 times, v once; distilled never links c
    real = [("c", "w", "0-0")] * 3 + [("c", "v", "0-0")]
    dist = [("c", "w", "")] * 4
    r, d = pair_tables(tmp_path, real, dist)
    f, types, dropped, f_both = faithfulness(r, d, Smoothing("add_alpha", alpha=0.1))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert (types, dropped, f_both) == (1, 1, 0.0)
    assert f == pytest.approx(math.log(2) - h)


def test_complexity_averages_over_types_not_links(tmp_path):
    # a -> x 1, z 1 (H = ln 2) in 2 links; b -> y in 6 links (H = 0). Mean over types: ln2 / 2;
    # over links it would be ln2 * 2 / 8.
    data = [("a b b b", "x y y y", "0-0 1-1 2-2 3-3"), ("a b b b", "z y y y", "0-0 1-1 2-2 3-3")]
    c, types = complexity(count_links(*corpus(tmp_path, "d", data), Vocab()))
    assert types == 2 and c == pytest.approx(math.log(2) / 2)


def test_faithfulness_averages_over_types_not_links(tmp_path):
    # a: real x/z evenly (2 links), distilled x 3, z 1 (KL 0.1438); b: 6 links, identical (KL 0)
    real = [("a b b b", "x y y y", "0-0 1-1 2-2 3-3")] * 2 + [("a b b b", "z y y y", "0-0 1-1 2-2 3-3")] * 2
    dist = [("a b b b", "x y y y", "0-0 1-1 2-2 3-3")] * 3 + [("a b b b", "z y y y", "0-0 1-1 2-2 3-3")]
    r, d = pair_tables(tmp_path, real, dist)
    f, *_ = faithfulness(r, d)
    assert f == pytest.approx(0.1438410362 / 2)  # over links: 0.1438 * 4 / 16


def test_a_links_file_shorter_than_its_corpus_is_an_error(tmp_path):
    s, t, a = corpus(tmp_path, "d", ONE_TO_ONE)
    write_lines(a, ["0-0 1-1", "0-0 1-1"])  # three sentences, two lines of links
    with pytest.raises(KdgridError, match=r"d.links: ends after line 2"):
        data_metrics(s, t, a)


def test_data_metrics_records_the_smoothing(tmp_path):
    s, t, a = corpus(tmp_path, "real", SPLIT)
    m = data_metrics(s, t, a, t, a, Smoothing("add_alpha", alpha=0.3))
    assert m["choices"]["faithfulness"] == {"smoothing": "add_alpha", "alpha": 0.3}
    assert m["faithfulness_dropped_types"] == 0


def test_links_outside_the_sentence_are_an_error(tmp_path):
    with pytest.raises(KdgridError, match=r"d.links: line 1: link 0-5 is outside"):
        data_metrics(*corpus(tmp_path, "d", [("a b", "x y", "0-5")]))


def test_grow_diag_final_and_hand_checked():
    fwd = {(0, 0), (1, 1), (2, 1), (3, 3), (2, 0)}
    rev = {(0, 0), (1, 1), (1, 2)}
    # intersection (0,0) (1,1); grow from (1,1): (2,1) covers source 2, (1,2) covers target 2;
    # (2,0) is a neighbour too but both its words are aligned by then; final-and adds (3,3).
    assert grow_diag_final_and(fwd, rev) == [(0, 0), (1, 1), (1, 2), (2, 1), (3, 3)]
    assert grow_diag_final_and(set(), set()) == []
    assert grow_diag_final_and({(0, 1)}, {(0, 1)}) == [(0, 1)]


def test_word_level_text_is_13a_tokenized_and_lowercased():
    assert word_tokens("Zwei Männer, die Bier trinken.") == ["zwei", "männer", ",", "die", "bier", "trinken", "."]


def test_eflomal_alignment_of_a_deterministic_corpus_has_low_complexity(tmp_path):
    from kdgrid import synthetic

    spec = synthetic.SyntheticSpec(seed=4, train=1500, valid=1, test=1, vocab_size=30, modes=1,
                                   synonym_rate=0.0, max_len=8)
    pairs = synthetic.generate(spec)["train"]
    write_lines(tmp_path / "s", [p[0] for p in pairs])
    write_lines(tmp_path / "t", [p[1] for p in pairs])
    multi = synthetic.generate(synthetic.SyntheticSpec(**{**spec.__dict__, "modes": 3, "synonym_rate": 0.5}))
    write_lines(tmp_path / "t3", [p[1] for p in multi["train"]])
    write_lines(tmp_path / "s3", [p[0] for p in multi["train"]])
    stats = align([(tmp_path / "s", tmp_path / "t", tmp_path / "l"),
                   (tmp_path / "s3", tmp_path / "t3", tmp_path / "l3")])
    assert stats["sentences"] == [1500, 1500]
    one = data_metrics(tmp_path / "s", tmp_path / "t", tmp_path / "l")
    three = data_metrics(tmp_path / "s3", tmp_path / "t3", tmp_path / "l3")
    assert one["complexity"] < 0.3  # a word-for-word lexicon: alignment noise only
    assert three["complexity"] > one["complexity"] + 0.5  # three languages and synonyms


def test_language_mix_hand_checked(tmp_path):
    from kdgrid.metrics.language import LanguageModels, language_mix

    write_lines(tmp_path / "tgt", ["ein haus", "das haus", "une maison", "la maison"])
    write_lines(tmp_path / "lang", ["de", "de", "fr", "fr"])
    models = LanguageModels.train(tmp_path / "tgt", tmp_path / "lang")
    # add-one over the joint vocabulary (ein das haus une la maison + unseen = 7): p(haus|de) = 3/11
    assert models.token_logprobs(["haus"])[0].tolist() == pytest.approx([math.log(3 / 11), math.log(1 / 11)])
    write_lines(tmp_path / "hyp", ["das haus", "la maison", "das maison"])
    mix = language_mix(models, tmp_path / "hyp")
    assert mix["languages"] == ["de", "fr"]
    p = mix["p"]
    assert p[0][0] > 0.8 and p[1][1] > 0.8
    # "das maison": p(de) = (2/11)(1/11) / ((2/11)(1/11) + (1/11)(3/11)) = 2/5, one token of each
    assert p[2][0] == pytest.approx(0.4, abs=1e-4)
    assert mix["token_mixing"] == pytest.approx((0 + 0 + 0.5) / 3)
    assert mix["pure_sentences"] == 0.0


def test_distillation_by_a_trained_teacher_lowers_complexity(tmp_path):
    """Finding 1 on the synthetic corpus: C(raw) > C(beam-distilled), with a real small teacher."""
    import torch

    from kdgrid import synthetic, vocab
    from kdgrid.batching import Ids
    from kdgrid.models import build
    from kdgrid.train import TrainConfig, Trainer
    from kdgrid.translate import translate

    data = synthetic.generate(synthetic.SyntheticSpec(seed=8, train=3000, valid=100, test=1, vocab_size=40,
                                                      modes=3, mode_decay=0.5, max_len=8))
    for split in ("train", "valid"):
        write_lines(tmp_path / f"{split}.src", [s for s, _ in data[split]])
        write_lines(tmp_path / f"{split}.tgt", [t for _, t in data[split]])
    v = vocab.train([tmp_path / "train.src", tmp_path / "train.tgt"], tmp_path / "spm.model", 600, "bpe")
    ids = {f"{s}.{side}": Ids.from_lists(v.encode([x[k] for x in data[s]]))
           for s in ("train", "valid") for k, side in enumerate(("src", "tgt"))}
    torch.manual_seed(1)
    model = build("transformer", dict(v.model_ids(), d_model=64, ffn=256, encoder_layers=2, decoder_layers=2,
                                      heads=4, dropout=0.0))
    cfg = TrainConfig(max_tokens=2048, lr=3e-3, warmup_updates=50, max_updates=400, valid_every=200,
                      log_every=100)
    Trainer(model, (ids["train.src"], ids["train.tgt"]), (ids["valid.src"], ids["valid.tgt"]), cfg,
            tmp_path / "work", {}).run(tmp_path / "teacher.pt")
    model.eval()
    measured = data["train"][:1000]  # C(d) of a third of the training set: the same finding, a third of the decoding
    write_lines(tmp_path / "part.src", [s for s, _ in measured])
    write_lines(tmp_path / "part.tgt", [t for _, t in measured])
    hyps, _ = translate(model, v, [s for s, _ in measured], {"method": "beam", "beam": 4})
    write_lines(tmp_path / "beam.tgt", hyps)
    align([(tmp_path / "part.src", tmp_path / "part.tgt", tmp_path / "real.links"),
           (tmp_path / "part.src", tmp_path / "beam.tgt", tmp_path / "beam.links")], n_samplers=1)
    m = data_metrics(tmp_path / "part.src", tmp_path / "part.tgt", tmp_path / "real.links",
                     tmp_path / "beam.tgt", tmp_path / "beam.links")
    assert m["real"]["complexity"] > m["complexity"] + 0.3
    assert m["faithfulness"] > 0.0


# -- chrF++ and TER beside BLEU and chrF (kdgrid.metrics.bleu) --------------------------------

SCORE_HYPS = ["the cat sat on a mat .", "a dog runs in the park", "two men are talking"]
SCORE_REFS = ["the cat sat on the mat .", "a dog is running in the park .", "two men talk ."]


def test_score_adds_chrfpp_and_ter_as_sacrebleu_computes_them():
    from sacrebleu.metrics import BLEU, CHRF, TER

    s = bleu.score(SCORE_HYPS, SCORE_REFS)
    assert s["chrfpp"] == round(CHRF(word_order=2).corpus_score(SCORE_HYPS, [SCORE_REFS]).score, 2)
    assert s["ter"] == round(TER().corpus_score(SCORE_HYPS, [SCORE_REFS]).score, 2)
    assert s["chrfpp"] != s["chrf"] and 0 < s["ter"] < 100
    assert s["chrfpp_signature"].startswith("nrefs:1") and "nw:2" in s["chrfpp_signature"]
    assert "tok:tercom" in s["ter_signature"]
    # the keys that were there keep their values
    assert s["bleu"] == round(BLEU().corpus_score(SCORE_HYPS, [SCORE_REFS]).score, 2)
    assert s["chrf"] == round(CHRF().corpus_score(SCORE_HYPS, [SCORE_REFS]).score, 2)
    assert {"bleu_signature", "chrf_signature", "bleu_detail"} <= set(s)


def test_ter_is_lower_for_the_better_hypothesis():
    perfect, worse = bleu.score(SCORE_REFS, SCORE_REFS), bleu.score(SCORE_HYPS, SCORE_REFS)
    assert perfect["ter"] == 0.0 and worse["ter"] > 0 and perfect["bleu"] > worse["bleu"]
    assert bleu.HIGHER_IS_BETTER == {"bleu": True, "chrf": True, "chrfpp": True, "ter": False}
    assert set(bleu.METRICS) == set(bleu.HIGHER_IS_BETTER)


def test_sacrebleu_metric_by_name():
    assert bleu.sacrebleu_metric("bleu").tokenizer.signature() == bleu.TOKENIZE
    assert bleu.sacrebleu_metric("chrfpp").word_order == 2 and bleu.sacrebleu_metric("chrf").word_order == 0
    assert type(bleu.sacrebleu_metric("ter")).__name__ == "TER"
    with pytest.raises(KdgridError, match="unknown metric"):
        bleu.sacrebleu_metric("meteor")
