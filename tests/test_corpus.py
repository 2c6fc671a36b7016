"""Reading parallel text strictly, and the synthetic multimodal corpus."""

from __future__ import annotations

import collections
import gzip

import pytest

from kdgrid import synthetic
from kdgrid.corpus import read_lines, read_parallel, write_lines
from kdgrid.errors import KdgridError


def test_plain_and_gz_read_the_same(tmp_path):
    lines = ["ein Haus .", "zwei Häuser", ""]
    write_lines(tmp_path / "a.txt", lines)
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    assert read_lines(tmp_path / "a.txt") == read_lines(tmp_path / "a.txt.gz") == lines


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_a_byte_order_mark_does_not_enter_the_first_sentence(tmp_path, suffix):
    data = "\ufeffZwei Männer .\n\ufeffbleibt\n".encode("utf-8")  # only the file's first BOM goes
    path = tmp_path / f"bom.txt{suffix}"
    path.write_bytes(gzip.compress(data) if suffix else data)
    assert read_lines(path) == ["Zwei Männer .", "\ufeffbleibt"]


def test_invalid_utf8_names_file_and_line(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"fine\nalso fine\nbroken \xff here\n")
    with pytest.raises(KdgridError, match=r"bad.txt: line 3: invalid UTF-8"):
        read_lines(tmp_path / "bad.txt")


def test_truncated_gzip_is_reported(tmp_path):
    data = gzip.compress(("a line of text\n" * 5000).encode())
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(KdgridError, match=r"cut.gz: corrupt or truncated gzip"):
        read_lines(tmp_path / "cut.gz")
    (tmp_path / "notgz.gz").write_bytes(b"plain text, not gzip\n")
    with pytest.raises(KdgridError, match=r"notgz.gz: corrupt or truncated gzip"):
        read_lines(tmp_path / "notgz.gz")


def test_mismatched_line_counts_name_both_files(tmp_path):
    write_lines(tmp_path / "s", ["a", "b", "c"])
    write_lines(tmp_path / "t", ["x", "y"])
    with pytest.raises(KdgridError, match=r"s: has 3 lines but .*t has 2.*first unmatched line: 3"):
        read_parallel(tmp_path / "s", tmp_path / "t")
    with pytest.raises(KdgridError, match=r"s: has 3 lines but .*t has 2"):  # either order
        read_parallel(tmp_path / "t", tmp_path / "s")


def test_empty_and_missing_corpora(tmp_path):
    (tmp_path / "e1").write_text("")
    (tmp_path / "e2").write_text("")
    with pytest.raises(KdgridError, match="empty corpus"):
        read_parallel(tmp_path / "e1", tmp_path / "e2")
    with pytest.raises(KdgridError, match="nope: file not found"):
        read_lines(tmp_path / "nope")


def test_failed_write_leaves_nothing(tmp_path):
    def lines():
        yield "ok"
        raise RuntimeError("job died")

    with pytest.raises(RuntimeError):
        write_lines(tmp_path / "out.txt", lines())
    assert list(tmp_path.iterdir()) == []


SPEC = synthetic.SyntheticSpec(seed=5, train=3000, valid=100, test=100, vocab_size=60)


def test_synthetic_corpus_is_deterministic_and_seeded():
    a, b = synthetic.generate(SPEC), synthetic.generate(SPEC)
    assert a == b
    other = synthetic.generate(synthetic.SyntheticSpec(**{**SPEC.__dict__, "seed": 6}))
    assert other["train"][:20] != a["train"][:20]


def test_synthetic_splits_sizes_lengths_and_no_leakage():
    data = synthetic.generate(SPEC)
    assert [len(data[s]) for s in ("train", "valid", "test")] == [3000, 100, 100]
    train_src = {s for s, _ in data["train"]}
    assert not train_src & {s for s, _ in data["valid"] + data["test"]}
    for s, _ in data["train"]:
        assert SPEC.min_len <= len(s.split()) - 1 <= SPEC.max_len  # minus the final "."


def test_synthetic_targets_are_multimodal_and_modes_skewed():
    data = synthetic.generate(SPEC)
    # each mode ends its sentences with its own marker word: three modes, skewed 1 : 1/2 : 1/3
    ends = collections.Counter(t.split()[-1] for _, t in data["train"])
    counts = [c for _, c in ends.most_common()]
    assert len(counts) == 3
    assert counts[0] / 3000 == pytest.approx(6 / 11, abs=0.04)
    assert counts[2] / 3000 == pytest.approx(2 / 11, abs=0.04)
    # the same source word type is translated in several ways across the corpus
    grammar = synthetic.Grammar(SPEC)
    noun = grammar.src["N"][0]
    translations = {tuple(m["lex"][noun]) for m in grammar.modes}
    assert len(translations) == 3


def test_one_mode_without_synonyms_is_a_function_of_the_source():
    spec = synthetic.SyntheticSpec(seed=2, train=2000, valid=10, test=10, vocab_size=20, modes=1,
                                   synonym_rate=0.0, max_len=6)
    mapping = collections.defaultdict(set)
    for s, t in synthetic.generate(spec)["train"]:
        mapping[s].add(t)
    assert max(len(v) for v in mapping.values()) == 1
    assert sum(len(v) for v in mapping.values()) < 2000  # repeated sources exist and agree


def test_synthetic_spec_rejects_bad_knobs():
    with pytest.raises(ValueError, match="max_len 4 is below min_len 6"):
        synthetic.SyntheticSpec(min_len=6, max_len=4)
    with pytest.raises(ValueError, match="synonym_rate"):
        synthetic.SyntheticSpec(synonym_rate=1.5)


def test_progress_rates_keep_three_significant_digits():
    from kdgrid.progress import rate_text

    assert [rate_text(r) for r in (0.0, 0.338, 33.8, 338.4, 3384.0, 33840.0, 3.384e6)] == \
        ["0.00", "0.34", "33.8", "338", "3.38k", "33.8k", "3.38M"]
    assert [rate_text(r) for r in (9.996, 99.96, 999.0, 999.6, 999_600.0)] == ["10.0", "100", "999", "1.00k", "1.00M"]
