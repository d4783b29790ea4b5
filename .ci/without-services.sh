#!/usr/bin/env bash
# Run a command as on a laptop without the services: no Slurm, Apptainer or PostgreSQL client on PATH, no
# Apptainer root of containers/apptainer.sh, and none of the test cluster's settings in the environment,
# even on a machine that has them (CI). The PATH is a folder of links to every program of the real PATH
# but those.
# Usage: bash .ci/without-services.sh COMMAND [ARGS...]
set -euo pipefail
HIDDEN="sbatch srun squeue sacct scancel sinfo scontrol salloc sacctmgr sattach sbcast sprio sreport sshare
sstat strigger slurmctld slurmd slurmdbd munge munged apptainer singularity psql pg_ctl pg_ctlcluster postgres"
farm=$(mktemp -d /tmp/without-services.XXXXXX)
trap 'rm -rf "$farm"' EXIT
IFS=: read -ra dirs <<< "$PATH"
for dir in "${dirs[@]}"; do
    [[ -d $dir ]] || continue
    for program in "$dir"/*; do
        name=${program##*/}
        [[ -x $program && ! -d $program && ! -e $farm/$name ]] || continue
        [[ " ${HIDDEN//$'\n'/ } " == *" $name "* ]] && continue
        ln -s "$program" "$farm/$name"
    done
done
env -u SLURM_CONF -u PIPELINE_TEST_PG_URL -u PIPELINE_REQUIRE_SERVICES -u PIPELINE_REQUIRE_IMAGE \
    PIPELINE_TEST_CLUSTER=/nonexistent PIPELINE_APPTAINER_ROOT=/nonexistent PATH="$farm" "$@"
