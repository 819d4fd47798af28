#!/usr/bin/env bash
# rxe-setup.sh - create a soft-RoCE (rxe) RDMA device on a real Linux host
# whose kernel has the rdma_rxe module, so RDMA verbs code can run without
# RDMA hardware. (For hosts without RDMA support or without module loading,
# e.g. containers, use scripts/rxe-vm.sh instead.)
#
# Usage (as root):
#   scripts/rxe-setup.sh [NETDEV]    create $RXE_DEV (rxe0) on NETDEV; idempotent
#   scripts/rxe-setup.sh dummy       ... on a dummy netdev "rxedummy0" with
#                                    address $RXE_SETUP_ADDR (created if needed)
#   scripts/rxe-setup.sh --status    show rxe/RDMA state, change nothing
#   scripts/rxe-setup.sh --remove    delete $RXE_DEV (and rxedummy0 if we made it)
#   scripts/rxe-setup.sh --help
#
# Without NETDEV, the netdev of the default route is used, else the first UP
# non-loopback netdev with an IPv4 address, else lo. Running it again is a
# no-op when $RXE_DEV already exists (on the requested netdev, if one was
# given). It loads rdma_rxe (and a crc32 crypto provider, without which
# `rdma link add` fails with "No such file or directory"), runs
# `rdma link add $RXE_DEV type rxe netdev NETDEV`, waits for the port to be
# ACTIVE and verifies with `rdma link` and `ibv_devices`. It prints the GID
# index of the IPv4 RoCE v2 GID (what perftest's -x / verbs code wants).
#
# One-time setup: needs iproute2 (rdma), kmod (modprobe), and for the
# userspace side libibverbs1, ibverbs-providers (the rxe provider) and
# ibverbs-utils (ibv_devices); rdma-core and perftest are handy. As root on
# Debian/Ubuntu, missing packages are installed with apt-get (it says so).
# On Ubuntu, rdma_rxe lives in linux-modules-extra-$(uname -r).
# Non-root users of the device need a big enough locked-memory limit
# (ulimit -l) to register memory.
#
# Environment knobs:
#   RXE_DEV=rxe0                 name of the rxe device.
#   RXE_SETUP_ADDR=10.99.0.1/24  address for the "dummy" netdev mode.
#   RXE_SETUP_NO_INSTALL=1       never run apt-get; just report what is missing.
set -euo pipefail

PROG=rxe-setup
RXE_DEV=${RXE_DEV:-rxe0}
DUMMY_IF=rxedummy0
DUMMY_ADDR=${RXE_SETUP_ADDR:-10.99.0.1/24}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() {
    sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

MODE=up
WANT_IF=
while (($#)); do
    case $1 in
        -h | --help)
            usage
            exit 0
            ;;
        --status) MODE=status ;;
        --remove | --down) MODE=remove ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *)
            [[ -z $WANT_IF ]] || die "only one NETDEV may be given"
            WANT_IF=$1
            ;;
    esac
    shift
done
[[ $RXE_DEV =~ ^[A-Za-z0-9_.-]{1,63}$ ]] || die "bad RXE_DEV '$RXE_DEV'"

# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1; }

pkg_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

ensure_packages() {
    local -a missing=()
    have rdma || missing+=(iproute2)
    have modprobe || missing+=(kmod)
    if have dpkg-query; then
        local p
        for p in libibverbs1 ibverbs-providers ibverbs-utils rdma-core; do
            pkg_installed "$p" || missing+=("$p")
        done
    else
        have ibv_devices || missing+=("ibverbs-utils (rdma-core)")
    fi
    ((${#missing[@]})) || return 0
    if [[ $(id -u) == 0 && ${RXE_SETUP_NO_INSTALL:-0} != 1 ]] && have apt-get && have dpkg-query; then
        log "installing missing packages: ${missing[*]}"
        local aptlog
        aptlog=$(mktemp "${TMPDIR:-/tmp}/rxe-setup-apt.XXXXXX")
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y --no-install-recommends "${missing[@]}" >"$aptlog" 2>&1; then
            log "apt-get install failed; running apt-get update and retrying"
            if ! { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; } >>"$aptlog" 2>&1; then
                tail -n 20 "$aptlog" >&2
                rm -f "$aptlog"
                die "could not install: ${missing[*]}"
            fi
        fi
        rm -f "$aptlog"
        return 0
    fi
    have rdma || die "the 'rdma' tool is missing (package iproute2)"
    log "warning: missing packages: ${missing[*]} (userspace verbs may not work)"
}

rxe_exists() { [[ -e /sys/class/infiniband/$RXE_DEV ]]; }

# netdev an existing rxe device sits on (empty if unknown)
rxe_netdev() {
    rdma link show "$RXE_DEV/1" 2>/dev/null | sed -n 's/.* netdev \([^ ]*\).*/\1/p' | head -n 1
}

port_state() { cat "/sys/class/infiniband/$RXE_DEV/ports/1/state" 2>/dev/null || true; }

kernel_config_value() { # CONFIG_FOO -> y|m|n|"" (unknown)
    local cfg line
    for cfg in "/boot/config-$(uname -r)" /proc/config.gz; do
        [[ -r $cfg ]] || continue
        if [[ $cfg == *.gz ]]; then
            line=$(zcat "$cfg" 2>/dev/null | grep -E "^(# )?$1[= ]" || true)
        else
            line=$(grep -E "^(# )?$1[= ]" "$cfg" || true)
        fi
        case $line in
            "$1=y") echo y ;;
            "$1=m") echo m ;;
            *"is not set"*) echo n ;;
            *) echo "" ;;
        esac
        return 0
    done
    echo ""
}

explain_no_rxe() { # modprobe output
    local out=$1 cfg kver
    kver=$(uname -r)
    log "error: cannot load the rdma_rxe kernel module: ${out:-modprobe failed}"
    if [[ ! -e /proc/modules ]]; then
        log "  this kernel ($kver) has no loadable module support (or this is a container"
        log "  without access to it); rxe cannot be added here."
    fi
    cfg=$(kernel_config_value CONFIG_RDMA_RXE)
    case $cfg in
        n) log "  the running kernel ($kver) is built without soft-RoCE (CONFIG_RDMA_RXE is not set)." ;;
        m) [[ -d /lib/modules/$kver ]] ||
            log "  CONFIG_RDMA_RXE=m but /lib/modules/$kver is missing (modules of the running kernel not installed)." ;;
    esac
    if [[ -d /lib/modules/$kver ]] && ! find "/lib/modules/$kver" -name 'rdma_rxe.ko*' -print -quit 2>/dev/null | grep -q .; then
        log "  no rdma_rxe.ko under /lib/modules/$kver (on Ubuntu: apt-get install linux-modules-extra-$kver)."
    fi
    if [[ -r /proc/1/cgroup ]] && grep -qE 'docker|containerd|kubepods|lxc' /proc/1/cgroup 2>/dev/null ||
        [[ -e /.dockerenv || -e /run/.containerenv ]]; then
        log "  this looks like a container: modules must be loaded on the host (modprobe rdma_rxe there)."
    fi
    log "  alternative: run RDMA code in a VM with scripts/rxe-vm.sh CMD..."
    exit 1
}

load_modules() {
    if [[ -d /sys/module/rdma_rxe ]]; then
        return 0
    fi
    have modprobe || die "rdma_rxe is not loaded and modprobe is missing (package kmod)"
    local out
    # A crc32 shash provider must exist before rxe is linked to a netdev.
    modprobe -q crc32_generic 2>/dev/null || true
    modprobe -q crc32-pclmul 2>/dev/null || true
    if ! out=$(modprobe rdma_rxe 2>&1); then
        explain_no_rxe "$out"
    fi
    modprobe -q ib_uverbs 2>/dev/null || true
    modprobe -q rdma_ucm 2>/dev/null || true
    [[ -d /sys/module/rdma_rxe ]] || explain_no_rxe "module did not appear in /sys/module"
}

pick_netdev() {
    local dev
    dev=$(ip -o route show default 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')
    if [[ -n $dev && -e /sys/class/net/$dev ]]; then
        printf '%s\n' "$dev"
        return
    fi
    dev=$(ip -o -4 addr show up 2>/dev/null | awk '$2 != "lo" { print $2; exit }')
    if [[ -n $dev ]]; then
        printf '%s\n' "$dev"
        return
    fi
    printf 'lo\n'
}

ensure_dummy() {
    if [[ ! -e /sys/class/net/$DUMMY_IF ]]; then
        if have modprobe; then modprobe -q dummy 2>/dev/null || true; fi
        ip link add "$DUMMY_IF" type dummy || die "cannot create dummy netdev $DUMMY_IF (is the dummy module available?)"
        log "created dummy netdev $DUMMY_IF"
    fi
    if ! ip -o -4 addr show dev "$DUMMY_IF" | grep -q " ${DUMMY_ADDR%/*}/"; then
        ip addr add "$DUMMY_ADDR" dev "$DUMMY_IF" || die "cannot add $DUMMY_ADDR to $DUMMY_IF"
    fi
    ip link set "$DUMMY_IF" up || die "cannot bring $DUMMY_IF up"
}

report() {
    local d t g idx=''
    echo "rdma link:"
    rdma link show 2>/dev/null | sed 's/^/  /' || true
    if have ibv_devices; then
        echo "ibv_devices:"
        ibv_devices 2>&1 | sed 's/^/  /' || true
    fi
    if rxe_exists; then
        echo "$RXE_DEV GIDs (port 1):"
        # The table has ~1024 slots: use the read builtin, not a cat per slot
        # (unused slots fail to read with EINVAL).
        for d in "/sys/class/infiniband/$RXE_DEV/ports/1/gid_attrs/types"/*; do
            read -r t 2>/dev/null <"$d" || continue
            read -r g 2>/dev/null <"/sys/class/infiniband/$RXE_DEV/ports/1/gids/${d##*/}" || continue
            [[ $g == 0000:0000:0000:0000:0000:0000:0000:0000 ]] && continue
            echo "  index ${d##*/}: $g ($t)"
            if [[ -z $idx && $t == "RoCE v2" && $g == 0000:0000:0000:0000:0000:ffff:* ]]; then
                idx=${d##*/}
            fi
        done
        if [[ -n $idx ]]; then
            echo "IPv4 RoCE v2 GID index: $idx (e.g. ib_write_lat -d $RXE_DEV -x $idx)"
        else
            echo "no IPv4 RoCE v2 GID yet (does the netdev have an IPv4 address?)"
        fi
    fi
    if [[ $(ulimit -l) != unlimited ]] && (($(ulimit -l) < 65536)); then
        echo "note: locked-memory limit is $(ulimit -l) KiB; non-root RDMA users may need more (ulimit -l / limits.conf)"
    fi
}

# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------
if [[ $MODE == status ]]; then
    have rdma || die "the 'rdma' tool is missing (package iproute2)"
    if [[ -d /sys/module/rdma_rxe ]]; then echo "rdma_rxe: loaded"; else echo "rdma_rxe: not loaded"; fi
    if rxe_exists; then
        echo "$RXE_DEV: present on netdev $(rxe_netdev), port state: $(port_state)"
    else
        echo "$RXE_DEV: absent"
    fi
    report
    exit 0
fi

[[ $(id -u) == 0 ]] || die "must run as root (try: sudo $0 ${WANT_IF:+$WANT_IF})"

if [[ $MODE == remove ]]; then
    have rdma || die "the 'rdma' tool is missing (package iproute2)"
    if rxe_exists; then
        rdma link delete "$RXE_DEV" || die "rdma link delete $RXE_DEV failed"
        log "deleted $RXE_DEV"
    else
        log "$RXE_DEV does not exist; nothing to delete"
    fi
    if [[ -e /sys/class/net/$DUMMY_IF ]]; then
        ip link delete "$DUMMY_IF" && log "deleted dummy netdev $DUMMY_IF"
    fi
    exit 0
fi

ensure_packages
load_modules

if [[ $WANT_IF == dummy ]]; then
    ensure_dummy
    WANT_IF=$DUMMY_IF
fi

if rxe_exists; then
    cur=$(rxe_netdev)
    if [[ -n $WANT_IF && -n $cur && $cur != "$WANT_IF" ]]; then
        die "$RXE_DEV already exists on netdev $cur, not $WANT_IF (remove it first: $0 --remove)"
    fi
    log "$RXE_DEV already exists on netdev ${cur:-?}; nothing to do"
else
    NETDEV=${WANT_IF:-$(pick_netdev)}
    [[ -e /sys/class/net/$NETDEV ]] || die "no such netdev '$NETDEV' (see: ip link)"
    # Is some other rxe device already bound to this netdev?
    other=$(rdma link show 2>/dev/null | awk -v nd="$NETDEV" '$0 ~ (" netdev " nd "( |$)") { sub(/\/.*/, "", $2); print $2; exit }')
    [[ -z $other ]] || die "netdev $NETDEV already carries RDMA link '$other' (use RXE_DEV=$other, or remove it)"
    if [[ $(cat "/sys/class/net/$NETDEV/operstate" 2>/dev/null) == down ]]; then
        log "warning: netdev $NETDEV is down; $RXE_DEV will stay DOWN until it is up"
    fi
    if ! out=$(rdma link add "$RXE_DEV" type rxe netdev "$NETDEV" 2>&1); then
        log "error: rdma link add $RXE_DEV type rxe netdev $NETDEV failed: $out"
        case $out in
            *"No such file or directory"*)
                log "  usually no crc32 crypto provider is available: modprobe crc32_generic, then retry" ;;
            *"Operation not supported"* | *"Unknown device type"* | *"Invalid argument"*)
                log "  the kernel's rdma_rxe does not support netlink link creation (kernel too old?)" ;;
        esac
        exit 1
    fi
    log "created $RXE_DEV on netdev $NETDEV"
fi

# Wait for the port to become ACTIVE (needs the netdev up).
for _ in $(seq 1 50); do
    [[ $(port_state) == *ACTIVE* ]] && break
    sleep 0.1
done
state=$(port_state)
[[ $state == *ACTIVE* ]] || log "warning: $RXE_DEV port 1 state is '${state:-unknown}', not ACTIVE (is netdev $(rxe_netdev) up?)"

if have ibv_devices; then
    ibv_devices 2>/dev/null | grep -qw "$RXE_DEV" ||
        die "ibv_devices does not list $RXE_DEV (is ibverbs-providers installed, and /dev/infiniband/uverbs* present?)"
fi
report
