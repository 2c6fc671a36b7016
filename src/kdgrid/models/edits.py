"""The edit-distance expert of the edit-based students (LevT, InsT): the cheapest way to turn a
token sequence into the target using only deletions and insertions (a longest common
subsequence alignment), as deletion labels, per-slot insertion counts and the words to insert."""

from __future__ import annotations


def lcs_alignment(a: list[int], b: list[int]) -> list[tuple[int, int]]:
    """Matched (i, j) index pairs of a longest common subsequence of a and b; ties prefer earlier
    matches in `a`, so the expert is deterministic."""
    n, m = len(a), len(b)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, below = table[i], table[i + 1]
        for j in range(m - 1, -1, -1):
            row[j] = below[j + 1] + 1 if a[i] == b[j] else max(below[j], row[j + 1])
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        if a[i] == b[j]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def expert_edits(a: list[int], b: list[int]):
    """Turn `a` into `b`: returns (delete: 0/1 per token of a, kept: the tokens of a that stay,
    inserts: for each of the len(kept)+1 slots around the kept tokens (before the first, between
    neighbours, after the last) the list of words to insert there)."""
    pairs = lcs_alignment(a, b)
    matched_a = {i for i, _ in pairs}
    delete = [0 if i in matched_a else 1 for i in range(len(a))]
    kept = [a[i] for i, _ in pairs]
    inserts, prev = [], -1
    for _, j in pairs:
        inserts.append(b[prev + 1: j])
        prev = j
    inserts.append(b[prev + 1:])
    return delete, kept, inserts
