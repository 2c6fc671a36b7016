# kdgrid: teacher x decoding method x NAT student, as one workflow (see README.md).
# Rules only wire files to `python -m kdgrid VERB`; settings live in the validated config.

configfile: workflow.basedir + "/workflow/defaults.yaml"
if not workflow.config_settings.configfiles:  # no --configfile given: the demo config
    configfile: workflow.basedir + "/config.yaml"


# Jobs import kdgrid from this checkout even in environments that lack it (`--sdm conda` builds
# envs/kdgrid.yaml without the package, and clears PYTHONPATH, which a prefix survives).
import shlex

_src = shlex.quote(workflow.basedir + "/src").replace("{", "{{").replace("}", "}}")
# A custom prefix replaces Snakemake's own `set -euo pipefail`: keep it.
shell.prefix("set -euo pipefail; export PYTHONPATH=" + _src + "${{PYTHONPATH:+:$PYTHONPATH}}; ")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/student.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.aggregate.output,
