"""Job resources that grow with Snakemake's attempt number (plain Python, imported by common.smk, used by costs.smk)."""


def per_attempt(amount: int, cap: int, grows: bool = True):
    """A resource callable: `amount` on the first attempt, twice that on the first retry, ...,
    never above `cap` (a partition's limit: a larger request would pend forever). A job killed
    for memory or time then asks for more instead of failing the same way again. `grows=False`
    for the time of jobs that resume (training, distillation): the retry continues where the
    killed attempt stopped, so the same limit serves."""
    return lambda wildcards, attempt: min(amount * (attempt if grows else 1), cap)
