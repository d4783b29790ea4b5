#!/usr/bin/env bash
# Build the Apptainer image of containers/pipeline.def, labelled with the source commit (`-dirty`: a
# tree with uncommitted changes), through containers/apptainer.sh (the host's Apptainer, or Debian
# sid's inside a Debian 13 root on a host without one). Written to OUT.partial, renamed when complete.
#   usage: bash containers/build.sh cpu|cuda OUT.sif
#   TORCH_CPU_WHEELS  a folder holding the CPU torch wheel (default /opt/wheels when it exists; else
#                     the def takes it from PyTorch's CPU index)
#   FAKEROOT          default --fakeroot (a root without every capability, as in containers and CI,
#                     stops at %post otherwise); FAKEROOT= for a plain build
#   APPTAINER_FLAGS   more flags for apptainer build
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
lock=${1:?usage: build.sh cpu|cuda OUT.sif}
out=${2:?usage: build.sh cpu|cuda OUT.sif}
[ "$lock" = cpu ] || [ "$lock" = cuda ] || { echo "build.sh: lock must be cpu or cuda, not '$lock'" >&2; exit 2; }
commit=$(git rev-parse HEAD)$(git diff --quiet HEAD || echo -dirty)
binds=()
cert=/etc/ssl/certs/ca-certificates.crt  # the host's CAs, so that pip inside the build trusts what it does
[ -f "$cert" ] && binds+=(--bind "$cert:$cert")
wheels=${TORCH_CPU_WHEELS:-/opt/wheels}
[ "$lock" = cpu ] && [ -d "$wheels" ] && binds+=(--bind "$(realpath "$wheels"):/wheels")
start=$(date +%s)
rm -f "$out.partial"
# shellcheck disable=SC2086
bash containers/apptainer.sh build ${FAKEROOT---fakeroot} --force "${binds[@]}" \
    --build-arg SOURCE_COMMIT="$commit" --build-arg LOCK="$lock" ${APPTAINER_FLAGS:-} \
    "$out.partial" containers/pipeline.def
mv "$out.partial" "$out"
echo "built $out ($(du -h "$out" | cut -f1), $lock lock) in $(( $(date +%s) - start )) s from $commit"
