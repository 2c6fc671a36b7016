# kdgrid: teacher x decoding method x NAT student, as one workflow (see README.md).
# Rules only wire files to `kdgrid VERB` (python -m kdgrid, see workflow/rules/common.smk);
# settings live in the validated config.

import os


configfile: os.path.join(workflow.basedir, "workflow", "defaults.yaml")


if not workflow.config_settings.configfiles:  # no --configfile given: the demo config

    configfile: os.path.join(workflow.basedir, "config.yaml")


# `snakemake --report results/<name>/report.html` (or .zip): this description, the grid, plots and
# tables marked with report() in workflow/rules/report.smk, their captions in workflow/report/.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/costs.smk"
include: "workflow/rules/cells.smk"
include: "workflow/rules/methods.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/ban.smk"
include: "workflow/rules/student.smk"
include: "workflow/rules/test_sets.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/report.smk"


if FILTER:  # a `filter:` section: the corpus filter's classifiers (and with corpus.clean.filter, the filter)

    include: "workflow/rules/filter.smk"


include: "workflow/rules/share_plan.smk"  # share.store: teachers, sets and alignments between grids
include: "workflow/rules/share.smk"


# Jobs too small for a cluster queue: run by Snakemake itself, also under --profile slurm.
localrules:
    all,
    gather,
    aggregate,


rule all:
    default_target: True
    input:
        rules.aggregate.output,
        FILTER_TARGETS if FILTER else [],
        SHARE_TARGETS,  # share.store: this grid's products put into the store
