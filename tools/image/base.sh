#!/bin/sh
# The base image of `make image`, without any registry: a Debian root filesystem made by
# debootstrap from the mirror apt already uses, python3 and python3-venv installed in it by chroot,
# imported into podman. Needs root (debootstrap, chroot).
#
#   tools/image/base.sh IMAGE SUITE ROOTFS
#
# ROOTFS is a scratch directory, removed before and after. The mirrors are the ones apt uses here
# for SUITE and SUITE-security (DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR override them; with no
# security mirror the image has no security updates). `make image` names the image after this
# file's hash, so editing it builds a new base.
set -eu

image=$1
suite=$2
rootfs=$3

repo_of() {
    apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' "Codename: $1" 2>/dev/null | head -n1
}
mirror=${DEBIAN_MIRROR:-$(repo_of "$suite")}
mirror=${mirror:-http://deb.debian.org/debian/}
security=${DEBIAN_SECURITY_MIRROR-$(repo_of "$suite-security")}

rm -rf "$rootfs"
mkdir -p "$(dirname "$rootfs")"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror"

# Like Debian's own slim images: no documentation, manual pages or translations (about 50 MB).
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/excludes" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
find "$rootfs/usr/share/man" "$rootfs/usr/share/info" "$rootfs/usr/share/lintian" \
    "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true

{
    echo "deb $mirror $suite main"
    echo "deb $mirror $suite-updates main"
    if [ -n "$security" ]; then echo "deb $security $suite-security main"; fi
} > "$rootfs/etc/apt/sources.list"

# Name resolution for apt in the chroot, from the host; emptied again before the import (podman
# writes a container's /etc/resolv.conf itself).
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive sh -euc '
    apt-get update -q
    apt-get upgrade -y -q
    apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log /var/cache/debconf/*-old
'
: > "$rootfs/etc/resolv.conf"

tar --numeric-owner -C "$rootfs" -c . \
    | podman import --change 'ENV=LANG=C.UTF-8' --change 'CMD=["python3"]' - "$image"
rm -rf "$rootfs"
