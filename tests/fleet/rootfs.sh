#!/usr/bin/env bash
# Builds, once, the Debian bookworm root filesystem that end-to-end test nodes boot from
# (systemd-nspawn --volatile=overlay: every node gets a throwaway writable layer over
# this one read-only tree), and prints its path on stdout.
#
#   tests/fleet/rootfs.sh            build if needed, print the path
#
# The tree is cached outside the repository, keyed by a hash of this script (the recipe):
#   ${HOSTSET_TEST_CACHE:-/var/cache/hostset-test}/rootfs-<hash>
# Changing the recipe builds a new tree next to the old ones (remove stale ones by hand).
# HOSTSET_TEST_ROOTFS=DIR uses DIR instead (built there when it does not exist yet).
# HOSTSET_TEST_MIRROR overrides the Debian mirror (default: deb.debian.org).
#
# Needs root, debootstrap and flock. A tree is built in a temporary directory beside its
# final place and renamed into place only when complete, so an interrupted build never
# leaves a half tree behind; concurrent callers wait on a lock and reuse the result.
set -euo pipefail

suite=bookworm
mirror=${HOSTSET_TEST_MIRROR:-http://deb.debian.org/debian}
# minbase already has coreutils (tail, df, sleep), dash (/bin/sh), util-linux and
# base-passwd (the user nobody); listed anyway where the example daemons rely on them.
# systemd-sysv gives /sbin/init; dbus is the system bus zbus needs (systemd's private
# socket does not work with zbus); procps for ps/pgrep when debugging a node.
packages=systemd,systemd-sysv,dbus,coreutils,dash,procps,util-linux

# Units that are useless or harmful in a test node: timers that would reach for the
# network or scan disks in the middle of a test, gettys on a console nobody reads (nodes
# get nspawn's read-only console), waiting for a network nobody configures. A node then
# boots to `running` with no failed unit.
masked_units=(
    apt-daily.timer
    apt-daily-upgrade.timer
    dpkg-db-backup.timer
    e2scrub_all.timer
    e2scrub_reap.service
    fstrim.timer
    systemd-networkd-wait-online.service
    console-getty.service
    container-getty@.service
    getty@.service
    getty-static.service
    serial-getty@.service
)

log() { printf 'rootfs.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

script=$(readlink -f "${BASH_SOURCE[0]}")
recipe_hash=$(sha256sum "$script" | cut -c1-16)

if [[ -n ${HOSTSET_TEST_ROOTFS:-} ]]; then
    target=$(readlink -m "$HOSTSET_TEST_ROOTFS")
else
    target=${HOSTSET_TEST_CACHE:-/var/cache/hostset-test}/rootfs-$recipe_hash
fi

if [[ -x $target/lib/systemd/systemd ]]; then
    printf '%s\n' "$target"
    exit 0
fi

[[ $(id -u) == 0 ]] || die "building the test rootfs needs root (target: $target)"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install -y debootstrap"
command -v flock >/dev/null || die "flock is missing: apt-get install -y util-linux"

parent=$(dirname "$target")
mkdir -p "$parent"
exec 9>"$parent/.$(basename "$target").lock"
flock 9
# Someone else may have built it while this one waited for the lock.
if [[ -x $target/lib/systemd/systemd ]]; then
    printf '%s\n' "$target"
    exit 0
fi
if [[ -e $target ]]; then
    die "$target exists but is not a root filesystem: remove it"
fi

# Never rm -rf a tree with something mounted inside it (debootstrap mounts /proc and /sys,
# and may bind the host's /dev, while it runs): unmount first, deepest first, then stay on
# this file system.
remove_tree() {
    local dir=$1 m
    for m in $(awk -v p="$dir/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
        umount -l "$m" || true
    done
    if awk -v p="$dir/" 'index($5, p) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        log "left $dir in place: something is still mounted below it"
        return
    fi
    rm -rf --one-file-system "$dir"
    rm -f "$dir.debootstrap.log"
}

# Leftovers of an interrupted build of this tree (no build of it runs: we hold the lock).
for stale in "$parent/.$(basename "$target").tmp."*; do
    if [[ -d $stale ]]; then
        remove_tree "$stale"
    fi
done

tmp=$(mktemp -d "$parent/.$(basename "$target").tmp.XXXXXX")
# mktemp makes it 0700; the tree is a root directory that every user must traverse.
chmod 0755 "$tmp"
trap 'remove_tree "$tmp"' EXIT
trap 'exit 130' INT TERM HUP

log "building $target (debootstrap $suite from $mirror; takes a minute)"
started=$SECONDS
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$tmp" "$mirror" \
    >"$tmp.debootstrap.log" 2>&1; then
    tail -n 30 "$tmp.debootstrap.log" >&2 || true
    if [[ -f $tmp/debootstrap/debootstrap.log ]]; then
        tail -n 30 "$tmp/debootstrap/debootstrap.log" >&2
    fi
    die "debootstrap failed"
fi
rm -f "$tmp.debootstrap.log"

# Each node gets its host name from nspawn (--hostname) and a machine ID of its own: an
# empty /etc/machine-id makes systemd take the random UUID nspawn passes at every boot
# (a machine ID baked into the tree would be shared by every node).
rm -f "$tmp/etc/hostname"
: >"$tmp/etc/machine-id"
rm -f "$tmp/var/lib/dbus/machine-id"

# The units below are masked in the tree itself (what systemctl mask writes).
for unit in "${masked_units[@]}"; do
    ln -sfn /dev/null "$tmp/etc/systemd/system/$unit"
done

# The system bus: socket-activated in bookworm (dbus.socket in sockets.target), which
# creates /run/dbus/system_bus_socket at boot. Start the daemon at boot as well, so a
# node is fully up when `systemctl is-system-running` says so.
[[ -f $tmp/lib/systemd/system/dbus.service ]] || die "dbus.service is missing from the tree"
mkdir -p "$tmp/etc/systemd/system/sockets.target.wants" "$tmp/etc/systemd/system/multi-user.target.wants"
ln -sfn /lib/systemd/system/dbus.socket "$tmp/etc/systemd/system/sockets.target.wants/dbus.socket"
ln -sfn /lib/systemd/system/dbus.service "$tmp/etc/systemd/system/multi-user.target.wants/dbus.service"
ln -sfn /lib/systemd/system/multi-user.target "$tmp/etc/systemd/system/default.target"

# Where the agent looks for its specs and its node file.
mkdir -p "$tmp/etc/hostset/daemonsets.d"

# debootstrap leaves its package cache; the tree is shared read-only by every node.
rm -rf --one-file-system "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*_Packages 2>/dev/null || true
printf '%s\n' "$recipe_hash" >"$tmp/etc/hostset-test-rootfs"

mv -T "$tmp" "$target"
trap - EXIT
log "built $target in $((SECONDS - started)) s ($(du -sh --one-file-system "$target" | cut -f1))"
printf '%s\n' "$target"
