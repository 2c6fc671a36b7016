"""Job resources that grow with Snakemake's attempt number (plain Python, imported by common.smk)."""


def per_attempt(amount: int):
    """A resource callable: `amount` on the first attempt, twice that on the first retry, ...
    A job killed for memory or time then asks for more instead of failing the same way again."""
    return lambda wildcards, attempt: amount * attempt
