#!/usr/bin/env bash
# A Debian 13 (trixie) root holding Apptainer from Debian sid, for hosts without an Apptainer package
# (Debian 12): containers/apptainer.sh runs apptainer inside it. About a minute and 400 MB.
#   usage: bash containers/apptainer-root.sh ROOT          (root; installs mmdebstrap if missing)
set -euo pipefail
R=${1:?usage: apptainer-root.sh ROOT}
# sid moves: the version this project was tested with (`apt-cache policy apptainer` in the root)
APPTAINER_VERSION=${APPTAINER_VERSION:-1.4.5-2}
command -v mmdebstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null; }
tmp="$R.partial"
rm -rf "$tmp"
# the mirror's sid Release file may be past its Valid-Until: hence Check-Valid-Until false
mmdebstrap --mode=root --variant=minbase --quiet \
    --aptopt='APT::Default-Release "trixie"' --aptopt='Acquire::Check-Valid-Until "false"' \
    --include="apptainer=$APPTAINER_VERSION,debootstrap,ca-certificates,squashfs-tools,uidmap" \
    trixie "$tmp" "deb http://deb.debian.org/debian trixie main" "deb http://deb.debian.org/debian sid main"
echo 'root:100000:65536' > "$tmp/etc/subuid"   # for apptainer build --fakeroot
cp "$tmp/etc/subuid" "$tmp/etc/subgid"
rm -rf "$R"
mv "$tmp" "$R"
echo "apptainer root ready: $R (apptainer $(dpkg-query --admindir="$R/var/lib/dpkg" -W -f='${Version}' apptainer))"
