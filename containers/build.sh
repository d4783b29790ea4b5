#!/usr/bin/env bash
# Build the Apptainer image of containers/pipeline.def, labelled with the source commit (`-dirty`: a
# tree with uncommitted changes), through containers/apptainer.sh (the host's Apptainer, or Debian
# sid's inside a Debian 13 root on a host without one). Written to OUT.partial, renamed when complete.
#   usage: bash containers/build.sh cpu|cuda OUT.sif      (bash containers/build.sh --key cpu|cuda: the key only)
#   TORCH_CPU_WHEELS  a folder holding the CPU torch wheel (default /opt/wheels when it exists; else
#                     the def takes it from PyTorch's CPU index)
#   FAKEROOT          default --fakeroot (a root without every capability, as in containers and CI,
#                     stops at %post otherwise); FAKEROOT= for a plain build
#   APPTAINER_FLAGS   more flags for apptainer build
#   PIPELINE_IMAGE_CACHE  a folder of images by the sha256 of their sources (CI keeps one between runs)
# An image is built only when what goes into it changed: OUT.key holds the sha256 of its sources (containers/,
# the lock, pyproject.toml, README.md, the package, configs/, slurm/profiles/) and the build's settings; OUT
# with the same key is up to date, and one in PIPELINE_IMAGE_CACHE under that key is copied. Its revision
# label stays the commit it was built from (tasks compare the package's files, not commits:
# pipeline/infra/versions.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
print_key=0
[ "${1:-}" = --key ] && { print_key=1; shift; }  # build.sh --key cpu|cuda: the sources' sha256 only
lock=${1:?usage: build.sh [--key] cpu|cuda OUT.sif}
[ "$lock" = cpu ] || [ "$lock" = cuda ] || { echo "build.sh: lock must be cpu or cuda, not '$lock'" >&2; exit 2; }
key=$( { echo "$lock ${FAKEROOT---fakeroot} ${APPTAINER_FLAGS:-}"
        find containers requirements/"$lock".txt pyproject.toml README.md pipeline configs slurm/profiles -type f \
            ! -name '*.md' ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum
        sha256sum README.md; } | sha256sum | cut -c1-64)
[ "$print_key" = 1 ] && { echo "$key"; exit 0; }
out=${2:?usage: build.sh [--key] cpu|cuda OUT.sif}
if [ -f "$out" ] && [ "$(cat "$out.key" 2>/dev/null)" = "$key" ]; then
    echo "$out is up to date (sources sha256 $key)"
    exit 0
fi
cache=${PIPELINE_IMAGE_CACHE:-}
if [ -n "$cache" ] && [ -f "$cache/$key.sif" ]; then
    cp "$cache/$key.sif" "$out.partial" && mv "$out.partial" "$out" && echo "$key" > "$out.key"
    echo "$out copied from $cache (sources sha256 $key, built before)"
    exit 0
fi
commit=$(git rev-parse HEAD)$(git diff --quiet HEAD || echo -dirty)
binds=()
cert=/etc/ssl/certs/ca-certificates.crt  # the host's CAs, so that pip inside the build trusts what it does
[ -f "$cert" ] && binds+=(--bind "$cert:$cert")
wheels=${TORCH_CPU_WHEELS:-/opt/wheels}
[ "$lock" = cpu ] && [ -d "$wheels" ] && binds+=(--bind "$(realpath "$wheels"):/wheels")
start=$(date +%s)
rm -f "$out.partial" "$out.key"
# shellcheck disable=SC2086
bash containers/apptainer.sh build ${FAKEROOT---fakeroot} --force "${binds[@]}" \
    --build-arg SOURCE_COMMIT="$commit" --build-arg LOCK="$lock" ${APPTAINER_FLAGS:-} \
    "$out.partial" containers/pipeline.def
mv "$out.partial" "$out"
echo "$key" > "$out.key"
if [ -n "$cache" ]; then  # keep this one and the one before it
    mkdir -p "$cache" && cp "$out" "$cache/.$key.sif.partial" && mv "$cache/.$key.sif.partial" "$cache/$key.sif"
    ls -t "$cache"/*.sif | tail -n +3 | xargs -r rm -f
fi
echo "built $out ($(du -h "$out" | cut -f1), $lock lock) in $(( $(date +%s) - start )) s from $commit"
