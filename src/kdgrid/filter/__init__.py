"""A distilled corpus filter: few-class pair classification distilled from the AT teacher.

noise: labelled clean/noisy pairs made from the training pairs (held-out kinds left out of
training), and corpus.noise's injection into the training data itself (inject_noise, for
prepare). embed: the frozen teacher's pair embeddings, read through its public encode and
states. head: its linear classifier on them. lelp: LELP's pseudo-subclass targets. student: the
tiny pair classifier (labels, vanilla KD or LELP). prior: the posterior corrected to the corpus's
class prior (configured or estimated by EM). evaluate: valid scores, and the noisy class's
precision and recall at a corpus prior. table: the classifier comparison (mean ± std over seeds)
and the applied filter's counts. apply: keep_pairs, the one function data preparation calls.
The CLI verbs (kdgrid.cli_filter) only parse arguments, read and write files, and call these.
"""
