#!/usr/bin/env bash
# `apptainer "$@"`: the host's Apptainer when it has one; otherwise Debian sid's Apptainer inside a
# Debian 13 root made once by containers/apptainer-root.sh (Debian 12 has no Apptainer package, and
# sid's needs glibc ≥ 2.38). That root is entered in private mount and PID namespaces with pivot_root
# (Apptainer refuses a plain chroot); every existing absolute path named in the arguments, the
# current directory and those in PIPELINE_APPTAINER_BIND (colon-separated) are bound into it at the
# same place, so `apptainer exec --bind RUN IMAGE python …` sees what it would on the host.
# The environment passes through (Slurm's SLURM_* variables reach the task). Root only.
#   PIPELINE_APPTAINER_ROOT   the Debian 13 root (default /var/tmp/pipeline-apptainer-root)
#   PIPELINE_APPTAINER_HOST=0 use the root even where the host has Apptainer
set -euo pipefail
if [ "${PIPELINE_APPTAINER_HOST:-1}" != 0 ] && command -v apptainer >/dev/null 2>&1; then
    exec apptainer "$@"
fi
R=${PIPELINE_APPTAINER_ROOT:-/var/tmp/pipeline-apptainer-root}
[ -x "$R/usr/bin/apptainer" ] || bash "$(dirname "${BASH_SOURCE[0]}")/apptainer-root.sh" "$R" >&2

paths=("$PWD")
IFS=: read -r -a extra <<< "${PIPELINE_APPTAINER_BIND:-}"
paths+=("${extra[@]}")
for arg in "$@"; do  # --bind a:b,c and plain paths: every absolute host path that exists
    for part in ${arg//[:,=]/ }; do
        [[ $part == /* && -e $part ]] && paths+=("$part")
    done
done
cert=/etc/ssl/certs/ca-certificates.crt  # the host's CAs (a proxy's), for pip inside a build

exec unshare --mount --pid --fork --propagation private /bin/bash -ec '
    R=$1 CERT=$2; shift 2
    n=$1; shift; paths=("${@:1:$n}"); shift "$n"
    mount --bind "$R" "$R"
    mount --rbind /dev "$R/dev"; mount --rbind /sys "$R/sys"
    mount -t tmpfs tmpfs "$R/tmp"
    [ -f "$CERT" ] && cp "$CERT" "$R/etc/host-ca.crt"
    for p in "${paths[@]}"; do
        p=$(realpath "$p")
        case "$p" in /|/proc*|/dev*|/sys*) continue;; esac
        if [ -d "$p" ]; then mkdir -p "$R$p"; else mkdir -p "$R$(dirname "$p")"; touch "$R$p"; fi
        mount --bind "$p" "$R$p"
    done
    mkdir -p "$R/.oldroot"
    cd "$R"; pivot_root . .oldroot; mount -t proc proc /proc; umount -l /.oldroot
    cd "$OLDPWD" 2>/dev/null || cd /
    export PATH=/usr/sbin:/usr/bin:/sbin:/bin APPTAINER_TMPDIR=${APPTAINER_TMPDIR:-/var/tmp}
    exec apptainer "$@"
' bash "$R" "$cert" "${#paths[@]}" "${paths[@]}" "$@"
