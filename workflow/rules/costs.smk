# Each rule's resources (memory and time per attempt) and the cost table's scopes: which share of
# costs.csv every rule's jobs are charged to (common.smk's grid facts; aggregate reads them).


def mem_mb(rule):
    """A rule's memory (compute.resources), doubled, tripled, ... on retries, up to max_mem_mb."""
    c = config["compute"]
    return per_attempt(c["resources"][rule]["mem_mb"], c["max_mem_mb"])


# Jobs that resume from their checkpoint or finished chunks when rerun: a retry needs no more time.
RESUMABLE = {"train_teacher", "train_ban", "train_student", "distill", "train_filter_teacher"}


def runtime(rule):
    """A rule's time limit in minutes (compute.resources), growing with the attempt up to
    max_runtime, except for jobs that resume."""
    c = config["compute"]
    return per_attempt(c["resources"][rule]["runtime"], c["max_runtime"], grows=rule not in RESUMABLE)


# The share of the cost table each rule's jobs are charged to, from the rule's wildcards: a cell,
# or, counted once, a training-data column, a teacher, or the setup. Built here whole (filter.smk
# adds nothing), so it does not depend on the order the rule files are included in.
COST_SCOPES = {
    "prepare": "setup",
    "vocab": "setup",
    "train_teacher": "teacher/{teacher}",
    "ensemble_teacher": "teacher/{teacher}",
    "import_teacher": "teacher/{teacher}",
    "evaluate_teacher": "teacher/{teacher}",
    "align_teacher_valid": "teacher/{teacher}",
    "teacher_valid_metrics": "teacher/{teacher}",
    "language_mix_teacher": "teacher/{teacher}",
    "align_raw": "data/raw",
    "data_metrics_raw": "data/raw",
    "train_ban": "data/{teacher}.{ban}",
    "distill": "data/{teacher}.{method}",
    "gather": "data/{teacher}.{method}",
    "import_distilled": "data/imported.{method}",
    "encode_distilled": "data/{teacher}.{method}",
    "align_distilled": "data/{teacher}.{method}",
    "data_metrics_distilled": "data/{teacher}.{method}",
    "train_student": "cell/{student}/{data}",
    "evaluate_student": "cell/{student}/{data}",
    "language_mix_student": "cell/{student}/{data}",
    "prepare_test_set": "setup",
    "evaluate_teacher_test_set": "teacher/{teacher}",
    "evaluate_student_test_set": "cell/{student}/{data}",
    # share.store (share.smk): a fetched product's own small job, charged where its maker's would be
    "fetch_teacher": "teacher/{teacher}",
    "fetch_distilled": "data/{data}",
    "fetch_alignment": "data/{data}",
    "fetch_raw_alignment": "data/raw",
    "store_put": "setup",
    # with corpus.clean.filter, the filter the grid trains behind is setup (filter_check.py)
    **filter_check.cost_scopes(CLEAN_FILTER),
}
# Wildcards a rule's cost pattern fixes: of the filter's students, the chosen one only.
COST_WILDCARDS = filter_check.cost_wildcards(CLEAN_FILTER)


def cost_params():
    """What aggregate needs to find the jobs' benchmark files and logs: per rule, their paths with
    wildcards (from the rules themselves) and its scope; call after every rule is defined."""
    patterns = [
        {
            "rule": name,
            "scope": scope,
            "benchmark": str(getattr(rules, name).benchmark),
            "log": str(getattr(rules, name).log[0]),
            **({"wildcards": COST_WILDCARDS[name]} if name in COST_WILDCARDS else {}),
        }
        for name, scope in COST_SCOPES.items()
        if name in {r.name for r in workflow.rules}  # language_mix_* only for multi-way corpora
    ]
    return {
        "patterns": patterns,
        "teachers": list(dict.fromkeys([*TEACHERS, *STUDENT_TEACHERS, *ENSEMBLE_MEMBERS])),
        "ensembles": ENSEMBLES,  # an ensemble's column is charged its members' training too
        # share.store: products taken from the store, charged the recorded cost of the jobs that made them
        # (only where there are: the params of a grid that takes none stay as they were)
        **({"reused": [{"record": r, "scope": scope} for r, scope in REUSED_RECORDS]} if REUSED_RECORDS else {}),
    }
