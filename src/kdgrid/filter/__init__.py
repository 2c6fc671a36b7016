"""A distilled corpus filter: few-class pair classification distilled from the AT teacher.

noise: labelled clean/noisy pairs made from the training pairs. embed: the frozen teacher's pair
embeddings. head: its linear classifier on them. lelp: LELP's pseudo-subclass targets.
student: the tiny pair classifier (labels, vanilla KD or LELP). apply: keep_mask, the one
function data preparation calls.
"""
