"""Joint subword vocabulary: sentencepiece training, encoding and decoding.

Fixed special ids, the same in every model: pad 0, unk 1, bos 2, eos 3, <mask> 4 (a control
symbol, so the literal text "<mask>" in a corpus is not mistaken for it).
"""

from __future__ import annotations

import hashlib
import io
import itertools
from pathlib import Path

import sentencepiece as spm

from kdgrid.corpus import iter_lines
from kdgrid.errors import KdgridError, atomic_output

PAD, UNK, BOS, EOS, MASK = 0, 1, 2, 3, 4
MODEL_TYPES = ("unigram", "bpe", "char", "word")


class Vocab:
    def __init__(self, model_bytes: bytes, origin: str = "<bytes>"):
        self.proto = model_bytes
        self.origin = origin
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_bytes)
        except (RuntimeError, OSError) as e:
            raise KdgridError(f"{origin}: not a sentencepiece model ({e})") from None
        if self.sp.piece_to_id("<mask>") != MASK or self.sp.pad_id() != PAD:
            raise KdgridError(f"{origin}: sentencepiece model lacks kdgrid's special ids "
                              "(pad 0, <mask> 4); build it with `python -m kdgrid vocab`")
        self.sha256 = hashlib.sha256(model_bytes).hexdigest()

    @classmethod
    def load(cls, path) -> Vocab:
        try:
            return cls(Path(path).read_bytes(), str(path))
        except FileNotFoundError:
            raise KdgridError(f"{path}: sentencepiece model not found") from None

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, lines: list[str], threads: int = 1) -> list[list[int]]:
        return self.sp.encode(lines, out_type=int, num_threads=threads)

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.sp.decode(ids)

    def model_ids(self) -> dict:
        """The special-id fields every model config carries."""
        return {"vocab_size": len(self), "pad": PAD, "bos": BOS, "eos": EOS}


def train(text_files, model_path, size: int, model_type: str = "unigram",
          character_coverage: float = 1.0, max_sentences: int = 0, seed: int = 1,
          threads: int = 1) -> Vocab:
    """Train a joint model on the lines of `text_files` (e.g. train.src and train.tgt)."""
    if not isinstance(size, int) or size <= 5:
        raise KdgridError(f"vocab size (vocab.size) must exceed the 5 special symbols, got {size!r}")
    if model_type not in MODEL_TYPES:
        raise KdgridError(f"vocab model type (vocab.model_type) {model_type!r} is not one of "
                          f"{', '.join(MODEL_TYPES)}")
    if not 0 < character_coverage <= 1:
        raise KdgridError(f"vocab character coverage (vocab.character_coverage) must be in (0, 1], "
                          f"got {character_coverage}")
    for path in text_files:  # before training: name the empty file, not sentencepiece's internals
        if not any(line.strip() for line in iter_lines(path)):
            raise KdgridError(f"{path}: empty corpus (no non-blank line to train the vocabulary on)")
    lines = itertools.chain.from_iterable(iter_lines(p) for p in text_files)
    buf = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=(line for line in lines if line.strip()), model_writer=buf,
            vocab_size=size, model_type=model_type, character_coverage=character_coverage,
            pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS, control_symbols=["<mask>"],
            input_sentence_size=max_sentences, shuffle_input_sentence=max_sentences > 0,
            hard_vocab_limit=False, num_threads=threads, minloglevel=2,
        )
    except (RuntimeError, ValueError) as e:
        raise KdgridError(f"sentencepiece training on {', '.join(map(str, text_files))} failed: {e}") from None
    with atomic_output(model_path, "wb") as f:
        f.write(buf.getvalue())
    return Vocab(buf.getvalue(), str(model_path))
