#!/usr/bin/env bash
# rxe-vm.sh - run a command inside a throw-away VM that has a soft-RoCE (rxe)
# RDMA device, for hosts whose kernel has no RDMA support or cannot load
# modules.
#
# Usage:
#   scripts/rxe-vm.sh [-e NAME[=VALUE]]... [--] CMD [ARGS...]
#   scripts/rxe-vm.sh --prepare     # only install packages / build the cache
#   scripts/rxe-vm.sh --rebuild     # rebuild kernel + initramfs cache, then exit
#   scripts/rxe-vm.sh --help
#
# CMD runs as root inside a qemu VM (a stock Debian 12 kernel plus a busybox
# initramfs) that has `rxe0` ready (RoCE v2 over the guest's loopback, 127.0.0.1). The guest chroots into the host's root file system, shared
# read-only over virtio-9p, so host-built binaries and host libraries
# (libibverbs + the rxe provider) run unchanged. The caller's current
# directory is shared writable at the same path and is CMD's working
# directory. CMD's stdout/stderr are streamed to this script's stdout/stderr
# and its exit status becomes this script's exit status. Failures of the rig
# itself exit 125 (124 on RXE_VM_TIMEOUT) with a message on stderr.
#
# Under TCG, starting a process inside the VM costs ~0.05-0.1 s (exec over
# 9p), so keep guest-side shell loops short.
#
# As a cargo runner (each test binary then runs in its own VM, ~5-7 s boot):
#   CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/scripts/rxe-vm.sh cargo test ...
#
# Inside the VM: /tmp, /var/tmp, /run and /dev/shm are fresh tmpfs mounts; the
# rest of the host root is read-only. RXE_VM=1, RXE_DEV (rxe0), RXE_NETDEV
# (dummy0) and RXE_ADDR (its IPv4 address) are set for CMD. stdin is
# /dev/null. There is no external network.
#
# One-time setup: needs qemu-system-x86, busybox-static, cpio, xz-utils,
# iproute2, libibverbs1 + ibverbs-providers (and, recommended,
# ibverbs-utils, rdma-core, perftest, libibverbs-dev). When run as root on a
# Debian/Ubuntu host, missing packages are installed with apt-get (it says so
# on stderr). The first run downloads the newest linux-image-*-amd64 package
# apt offers (`apt-get download`, never installed), unpacks the kernel and
# the needed modules and builds an initramfs under the cache dir; later runs
# only boot.
#
# Environment knobs:
#   RXE_VM_TIMEOUT=600        overall limit in seconds for the whole VM run;
#                             on expiry the VM is killed and we exit 124.
#   RXE_VM_ACCEL=auto         auto | kvm | tcg. auto uses KVM only when /dev/kvm
#                             is usable and the CPU has vmx/svm and the KVM is
#                             not the PVM flavour; otherwise TCG.
#   RXE_VM_MEM=1024           guest memory in MiB.
#   RXE_VM_SMP=2              guest vCPUs.
#   RXE_VM_CACHE=DIR          cache dir (default ${XDG_CACHE_HOME:-~/.cache}/blockwire-rxe).
#   RXE_VM_KERNEL_PKG=NAME    kernel package to use (default: what linux-image-amd64
#                             depends on, i.e. the newest apt offers).
#   RXE_VM_BOOT=auto          auto | vmlinux | bzimage. auto boots the uncompressed
#                             vmlinux through PVH when it could be extracted
#                             (noticeably faster under TCG), else the bzImage.
#   RXE_VM_PASS_ENV=LIST      host variables passed to CMD, space-separated names or
#                             prefix globs (default: "PATH HOME USER LOGNAME LANG
#                             LANGUAGE LC_* TERM TZ RUST_* CARGO_* BLOCKWIRE_*").
#   RXE_VM_ENV=LIST           extra names/globs appended to RXE_VM_PASS_ENV.
#                             (-e NAME=VALUE / -e NAME on the command line also works.)
#   RXE_VM_RW_DIRS=A:B        extra host dirs shared writable (at the same path).
#   RXE_VM_RO_DIRS=A:B        extra host dirs shared read-only on top of the guest's
#                             tmpfs mounts (e.g. something under /tmp). The directory
#                             of CMD is added automatically when it lives under
#                             /tmp, /var/tmp, /run or /dev/shm.
#   RXE_VM_SHARE_CWD=1        0 = do not share the current directory writable.
#   RXE_VM_NETDEV=lo          lo | dummy: netdev carrying rxe0 (lo: rxe0's address is
#                             127.0.0.1, so no test traffic ever names another range).
#   RXE_VM_ADDR=10.99.0.1/24  IPv4 address/prefix of the dummy netdev (dummy mode only;
#                             the guest has no network device, so it never leaves the VM).
#   RXE_VM_VERBOSE=0          1 = echo the guest console to stderr and print timings.
#   RXE_VM_START_RETRIES=2    times a VM that died before CMD started is started again.
#   RXE_VM_CONSOLE_LOG=FILE   also keep the guest console log in FILE.
#   RXE_VM_APPEND=...         extra kernel command line arguments.
#   RXE_VM_BUSYBOX=PATH       static busybox to use (default /bin/busybox).
set -euo pipefail

PROG=rxe-vm
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
RXE_DIR=$SCRIPT_DIR/rxe

TIMEOUT=${RXE_VM_TIMEOUT:-600}
ACCEL=${RXE_VM_ACCEL:-auto}
MEM=${RXE_VM_MEM:-1024}
SMP=${RXE_VM_SMP:-2}
CACHE=${RXE_VM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/blockwire-rxe}
BOOT=${RXE_VM_BOOT:-auto}
PASS_ENV=${RXE_VM_PASS_ENV:-PATH HOME USER LOGNAME LANG LANGUAGE LC_* TERM TZ RUST_* CARGO_* BLOCKWIRE_*}
PASS_ENV="$PASS_ENV ${RXE_VM_ENV:-}"
SHARE_CWD=${RXE_VM_SHARE_CWD:-1}
NETDEV_KIND=${RXE_VM_NETDEV:-lo}
ADDR_CIDR=${RXE_VM_ADDR:-10.99.0.1/24}
VERBOSE=${RXE_VM_VERBOSE:-0}
BUSYBOX=${RXE_VM_BUSYBOX:-/bin/busybox}
RXE_DEV=rxe0

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
vlog() { if [[ $VERBOSE == 1 ]]; then log "$@"; fi; }
die() {
    log "error: $*"
    exit 125
}

usage() {
    sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# ----------------------------------------------------------------------------
# Argument parsing
# ----------------------------------------------------------------------------
MODE=run
EXTRA_ENV=()
while (($#)); do
    case $1 in
        -h | --help)
            usage
            exit 0
            ;;
        --prepare)
            MODE=prepare
            shift
            ;;
        --rebuild)
            MODE=rebuild
            shift
            ;;
        -e)
            (($# >= 2)) || die "-e needs NAME or NAME=VALUE"
            EXTRA_ENV+=("$2")
            shift 2
            ;;
        -e*)
            EXTRA_ENV+=("${1#-e}")
            shift
            ;;
        --)
            shift
            break
            ;;
        -*)
            # Not ours: treat it as the command (odd, but do not swallow it).
            break
            ;;
        *) break ;;
    esac
done
if [[ $MODE == run ]] && (($# == 0)); then
    usage >&2
    exit 125
fi

[[ $TIMEOUT =~ ^[0-9]+$ && $TIMEOUT -gt 0 ]] || die "RXE_VM_TIMEOUT must be a positive integer (seconds), got '$TIMEOUT'"
[[ $MEM =~ ^[0-9]+$ && $MEM -ge 256 ]] || die "RXE_VM_MEM must be a number of MiB >= 256, got '$MEM'"
[[ $SMP =~ ^[0-9]+$ && $SMP -ge 1 ]] || die "RXE_VM_SMP must be a positive integer, got '$SMP'"
case $NETDEV_KIND in
    dummy)
        NETDEV=dummy0
        [[ $ADDR_CIDR =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$ ]] ||
            die "RXE_VM_ADDR must look like 10.99.0.1/24, got '$ADDR_CIDR'"
        ADDR=${ADDR_CIDR%/*}
        ;;
    lo)
        NETDEV=lo
        ADDR=127.0.0.1
        ADDR_CIDR=127.0.0.1/8
        ;;
    *) die "RXE_VM_NETDEV must be 'dummy' or 'lo', got '$NETDEV_KIND'" ;;
esac
[[ -r $RXE_DIR/init && -r $RXE_DIR/modules.list ]] ||
    die "helper files missing: expected $RXE_DIR/init and $RXE_DIR/modules.list"

# ----------------------------------------------------------------------------
# Host packages
# ----------------------------------------------------------------------------
pkg_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

busybox_is_static() {
    [[ -x $BUSYBOX ]] || return 1
    # ldd prints "not a dynamic executable" (and fails) for static binaries.
    ! ldd "$BUSYBOX" >/dev/null 2>&1
}

ensure_host_packages() {
    local -a required=() recommended=() missing=()
    command -v qemu-system-x86_64 >/dev/null || required+=(qemu-system-x86)
    busybox_is_static || required+=(busybox-static)
    command -v cpio >/dev/null || required+=(cpio)
    command -v xz >/dev/null || required+=(xz-utils)
    { command -v rdma && command -v ip; } >/dev/null || required+=(iproute2)
    command -v dpkg-deb >/dev/null || required+=(dpkg)
    if command -v dpkg-query >/dev/null; then
        pkg_installed libibverbs1 || required+=(libibverbs1)
        pkg_installed ibverbs-providers || required+=(ibverbs-providers)
        local p
        for p in ibverbs-utils rdma-core perftest libibverbs-dev; do
            pkg_installed "$p" || recommended+=("$p")
        done
    fi
    missing=("${required[@]}" "${recommended[@]}")
    ((${#missing[@]})) || return 0

    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing missing host packages: ${missing[*]}"
        local aptlog
        aptlog=$(mktemp "${TMPDIR:-/tmp}/rxe-vm-apt.XXXXXX")
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
        busybox_is_static || die "$BUSYBOX is not a static busybox even after installing busybox-static"
        return 0
    fi
    if ((${#required[@]})); then
        die "missing host packages: ${required[*]} (install them, e.g. 'sudo apt-get install ${missing[*]}'; run as root to have this script do it)"
    fi
    vlog "note: recommended packages not installed: ${recommended[*]}"
}

# ----------------------------------------------------------------------------
# Kernel + initramfs cache
# ----------------------------------------------------------------------------
# Extract the uncompressed ELF vmlinux from a bzImage by locating the
# compressed payload (same idea as the kernel's scripts/extract-vmlinux).
extract_vmlinux() {
    local in=$1 out=$2 spec magic dec off
    for spec in 'xz|\xfd7zXZ\x00|xz -dc --single-stream' \
        'zstd|\x28\xb5\x2f\xfd|zstd -dcq' \
        'gzip|\x1f\x8b\x08|gzip -dc' \
        'lz4|\x02\x21\x4c\x18|lz4 -dc' \
        'bzip2|BZh|bzip2 -dc' \
        'lzma|\x5d\x00\x00\x00|xz -dc --format=lzma'; do
        IFS='|' read -r _ magic dec <<<"$spec"
        command -v "${dec%% *}" >/dev/null || continue
        while read -r off; do
            [[ -n $off ]] || continue
            tail -c +$((off + 1)) "$in" | $dec >"$out" 2>/dev/null || true
            if [[ $(head -c 4 "$out" | od -An -c | tr -d ' ') == '177ELF' ]]; then
                return 0
            fi
        done < <(LC_ALL=C grep -obUaP "$magic" "$in" 2>/dev/null | cut -d: -f1 | head -n 20)
    done
    rm -f "$out"
    return 1
}

# Does this ELF carry the Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY=18)?
has_pvh_note() {
    LC_ALL=C grep -qaP '\x04\x00\x00\x00[\x04\x08]\x00\x00\x00\x12\x00\x00\x00Xen\x00' "$1"
}

# A fresh machine may have empty apt lists: as root, refresh them once.
APT_REFRESHED=0
apt_refresh_once() {
    [[ $APT_REFRESHED == 0 && $(id -u) == 0 ]] && command -v apt-get >/dev/null || return 1
    APT_REFRESHED=1
    log "refreshing the apt package lists (apt-get update)"
    apt-get update -qq >/dev/null 2>&1
}

find_kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

pick_kernel_pkg() {
    local pkg=${RXE_VM_KERNEL_PKG:-}
    if [[ -z $pkg ]]; then
        command -v apt-cache >/dev/null || die "apt-cache not found; set RXE_VM_KERNEL_PKG and make 'apt-get download' work"
        pkg=$(find_kernel_pkg)
        if [[ -z $pkg ]] && apt_refresh_once; then
            pkg=$(find_kernel_pkg)
        fi
        if [[ -z $pkg ]]; then
            pkg=$(apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-amd64$' 2>/dev/null |
                awk '{ print $1 }' | sort -V | tail -n 1)
        fi
        [[ -n $pkg ]] || die "apt offers no linux-image-*-amd64 package (try 'apt-get update', or set RXE_VM_KERNEL_PKG)"
    fi
    printf '%s\n' "$pkg"
}

# Module name as the kernel sees it: basename without .ko[.xz|.zst|.gz], '-' -> '_'.
modname() {
    local b=${1##*/}
    b=${b%%.ko*}
    printf '%s\n' "${b//-/_}"
}

ko_cat() {
    case $1 in
        *.ko.xz) xz -dc -- "$1" ;;
        *.ko.zst) zstd -dcq -- "$1" ;;
        *.ko.gz) gzip -dc -- "$1" ;;
        *) cat -- "$1" ;;
    esac
}

# Drop the appended module signature (verifying it under TCG costs time; the
# kernel only taints itself for an unsigned module, it does not refuse it).
strip_module_signature() {
    local f=$1 size siglen
    [[ $(tail -c 28 "$f") == '~Module signature appended~' ]] || return 0
    size=$(stat -c %s "$f")
    # struct module_signature (12 bytes) precedes the marker; sig_len is its
    # last field, a big-endian u32.
    siglen=$(tail -c 32 "$f" | head -c 4 | od -An -tu1 | awk '{ print (($1 * 256 + $2) * 256 + $3) * 256 + $4 }')
    ((siglen > 0 && siglen < size)) || return 0
    truncate -s $((size - 28 - 12 - siglen)) "$f"
}

# Download (once; the .deb is kept under $CACHE/debs) and unpack kernel
# package $1 into $CACHE/kernels/$1: vmlinuz, vmlinux, and the modules of
# modules.list plus their dependencies, decompressed, with their load order.
fetch_kernel() {
    local pkg=$1 kdir=$CACHE/kernels/$1 tmp deb
    tmp=$(mktemp -d "$CACHE/tmp.XXXXXX")
    mkdir -p "$CACHE/debs"
    deb=$(find "$CACHE/debs" -maxdepth 1 -name "${pkg}_*.deb" | sort -V | tail -n 1)
    if [[ -z $deb ]]; then
        command -v apt-get >/dev/null || die "apt-get not found; cannot download $pkg"
        log "downloading $pkg (one-time; unpacked under $CACHE, not installed)"
        if ! (cd "$tmp" && apt-get download "$pkg") >"$tmp/apt.log" 2>&1 &&
            ! { apt_refresh_once && (cd "$tmp" && apt-get download "$pkg") >>"$tmp/apt.log" 2>&1; }; then
            tail -n 5 "$tmp/apt.log" >&2
            die "'apt-get download $pkg' failed (try 'apt-get update', or set RXE_VM_KERNEL_PKG)"
        fi
        deb=$(find "$tmp" -maxdepth 1 -name '*.deb' | head -n 1)
        [[ -n $deb ]] || die "apt-get download produced no .deb"
        # Keep only one kernel package around.
        find "$CACHE/debs" -maxdepth 1 -name '*.deb' -delete
        mv "$deb" "$CACHE/debs/"
        deb=$CACHE/debs/${deb##*/}
    fi
    log "unpacking $deb"
    mkdir -p "$tmp/x"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/x" --wildcards '*/vmlinuz-*' '*/modules/*' ||
        die "cannot unpack $deb (delete it to download it again)"

    local vmlinuz moddir kver
    vmlinuz=$(find "$tmp/x" -path '*/boot/vmlinuz-*' -type f | head -n 1)
    [[ -n $vmlinuz ]] || die "$pkg contains no /boot/vmlinuz-*"
    kver=${vmlinuz##*/vmlinuz-}
    moddir=$(find "$tmp/x" -type d -path "*/modules/$kver" | head -n 1)
    [[ -n $moddir && -d $moddir/kernel ]] || die "$pkg contains no modules for $kver"

    # Map every module name to its file.
    local -A path_of=()
    local f name
    while IFS= read -r f; do
        path_of[$(modname "$f")]=$f
    done < <(find "$moddir/kernel" -name '*.ko*' -type f)
    local -A builtin=()
    if [[ -r $moddir/modules.builtin ]]; then
        while IFS= read -r f; do builtin[$(modname "$f")]=1; done <"$moddir/modules.builtin"
    fi

    # Resolve the load order: dependencies (from .modinfo "depends=") first.
    local -a order=()
    local -A seen=()
    visit() { # NAME OPTIONAL
        local n=$1 opt=$2 d deps
        [[ -z ${seen[$n]:-} ]] || return 0
        seen[$n]=1
        if [[ -n ${builtin[$n]:-} ]]; then return 0; fi
        if [[ -z ${path_of[$n]:-} ]]; then
            [[ $opt == 1 ]] && return 0
            die "kernel $kver has no module '$n' (needed by the rxe VM)"
        fi
        deps=$(ko_cat "${path_of[$n]}" | tr '\0' '\n' | LC_ALL=C grep -a -m1 '^depends=' || true)
        deps=${deps#depends=}
        for d in ${deps//,/ }; do visit "$(modname "$d")" "$opt"; done
        if [[ $opt == 1 ]]; then order+=("?$n"); else order+=("$n"); fi
    }
    local line opt
    while IFS= read -r line; do
        line=${line%%#*}
        line=${line//[[:space:]]/}
        [[ -n $line ]] || continue
        opt=0
        if [[ $line == \?* ]]; then
            opt=1
            line=${line#\?}
        fi
        visit "$(modname "$line")" "$opt"
    done <"$RXE_DIR/modules.list"

    local new=$kdir.new
    rm -rf "$new"
    mkdir -p "$new/modules"
    cp "$vmlinuz" "$new/vmlinuz"
    printf '%s\n' "$kver" >"$new/kver"
    : >"$new/modules/load-order"
    local m n
    for m in "${order[@]}"; do
        n=${m#\?}
        ko_cat "${path_of[$n]}" >"$new/modules/$n.ko"
        strip_module_signature "$new/modules/$n.ko"
        printf '%s%s.ko\n' "${m%"$n"}" "$n" >>"$new/modules/load-order"
    done
    # The module list is part of the kernel dir; remember which one it was.
    sha256sum <"$RXE_DIR/modules.list" | cut -d' ' -f1 >"$new/modules.list.sha"

    if extract_vmlinux "$new/vmlinuz" "$new/vmlinux.tmp"; then
        if has_pvh_note "$new/vmlinux.tmp"; then
            mv "$new/vmlinux.tmp" "$new/vmlinux"
        else
            log "note: extracted vmlinux has no PVH entry note; booting the bzImage"
            rm -f "$new/vmlinux.tmp"
        fi
    else
        log "note: could not extract vmlinux from the bzImage; booting the bzImage"
    fi
    rm -rf "$tmp" "$kdir"
    mv "$new" "$kdir"
    vlog "kernel $kver ready in $kdir (${#order[@]} modules)"
}

build_initramfs() { # KDIR OUT
    local kdir=$1 out=$2 root
    root=$(mktemp -d "$CACHE/tmp.XXXXXX")
    mkdir -p "$root"/{bin,dev,proc,sys,ctl,newroot,tmp,lib/modules}
    cp "$BUSYBOX" "$root/bin/busybox"
    ln -s busybox "$root/bin/sh"
    cp "$RXE_DIR/init" "$root/init"
    chmod 755 "$root/init" "$root/bin/busybox"
    cp "$kdir"/modules/*.ko "$kdir/modules/load-order" "$root/lib/modules/"
    # Uncompressed: unpacking it is cheaper under TCG than decompressing.
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$out.tmp" ||
        die "cpio failed building the initramfs"
    mv "$out.tmp" "$out"
    rm -rf "$root"
}

# Sets KDIR, KERNEL_IMAGE, KERNEL_IS_PVH, INITRAMFS.
prepare_cache() {
    local force=${1:-0}
    mkdir -p "$CACHE/kernels" || die "cannot create cache dir $CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
    # Leftovers of an interrupted build (we hold the lock, so none is running).
    rm -rf "$CACHE"/tmp.* "$CACHE"/kernels/*.new

    local pkg=${RXE_VM_KERNEL_PKG:-}
    if [[ -z $pkg && -r $CACHE/current && $force == 0 ]]; then
        pkg=$(<"$CACHE/current")
    fi
    [[ -n $pkg ]] || pkg=$(pick_kernel_pkg)
    [[ $pkg =~ ^[A-Za-z0-9.+_-]+$ ]] || die "bad kernel package name '$pkg'"
    KDIR=$CACHE/kernels/$pkg

    local list_sha
    list_sha=$(sha256sum <"$RXE_DIR/modules.list" | cut -d' ' -f1)
    if [[ $force == 1 || ! -r $KDIR/kver || ! -r $KDIR/vmlinuz ||
        $(cat "$KDIR/modules.list.sha" 2>/dev/null) != "$list_sha" ]]; then
        [[ $force == 1 ]] && rm -f "$CACHE/debs/${pkg}"_*.deb
        fetch_kernel "$pkg"
    fi
    printf '%s\n' "$pkg" >"$CACHE/current"

    local sha
    sha=$(cat "$RXE_DIR/init" "$KDIR/modules/load-order" "$BUSYBOX" | sha256sum | cut -c1-16)
    INITRAMFS=$CACHE/initramfs-$pkg-$sha.cpio
    if [[ $force == 1 || ! -r $INITRAMFS ]]; then
        vlog "building $INITRAMFS"
        rm -f "$CACHE"/initramfs-"$pkg"-*.cpio
        build_initramfs "$KDIR" "$INITRAMFS"
    fi

    case $BOOT in
        auto) if [[ -r $KDIR/vmlinux ]]; then BOOT=vmlinux; else BOOT=bzimage; fi ;;
        vmlinux) [[ -r $KDIR/vmlinux ]] || die "RXE_VM_BOOT=vmlinux but no PVH-capable vmlinux could be extracted" ;;
        bzimage) ;;
        *) die "RXE_VM_BOOT must be auto, vmlinux or bzimage, got '$BOOT'" ;;
    esac
    if [[ $BOOT == vmlinux ]]; then KERNEL_IMAGE=$KDIR/vmlinux; else KERNEL_IMAGE=$KDIR/vmlinuz; fi
    flock -u 9
    exec 9>&-
}

# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------
T0=$(now)
ensure_host_packages
if [[ $MODE == rebuild ]]; then
    prepare_cache 1
    log "cache ready: $KERNEL_IMAGE, $INITRAMFS"
    exit 0
fi
prepare_cache 0
if [[ $MODE == prepare ]]; then
    log "cache ready: $KERNEL_IMAGE, $INITRAMFS"
    exit 0
fi

# --- accelerator ---
kvm_usable() {
    [[ -r /dev/kvm && -w /dev/kvm ]] || return 1
    grep -qwE 'vmx|svm' /proc/cpuinfo 2>/dev/null || return 1
    # PVM ("pagetable-based virtual machine") cannot boot a stock kernel.
    [[ ! -d /sys/module/kvm_pvm ]] || return 1
}
case $ACCEL in
    auto) if kvm_usable; then ACCEL=kvm; else ACCEL=tcg; fi ;;
    kvm | tcg) ;;
    *) die "RXE_VM_ACCEL must be auto, kvm or tcg, got '$ACCEL'" ;;
esac
if [[ $ACCEL == kvm ]]; then
    ACCEL_ARGS=(-accel kvm -cpu host)
else
    ACCEL_ARGS=(-accel "tcg,thread=multi" -cpu max)
fi

# --- per-run control dir ---
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/rxe-vm.XXXXXX")
CTL=$RUN_DIR/ctl
mkdir -p "$CTL"
VM_PID='' TAIL_PIDS=()
# shellcheck disable=SC2317 # invoked through trap
cleanup() {
    local p
    if [[ -n $VM_PID ]] && kill -0 "$VM_PID" 2>/dev/null; then
        kill -TERM "$VM_PID" 2>/dev/null || true
        wait "$VM_PID" 2>/dev/null || true
    fi
    for p in "${TAIL_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${TAIL_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ -n ${RXE_VM_CONSOLE_LOG:-} && -r $RUN_DIR/console.log ]]; then
        cp "$RUN_DIR/console.log" "$RXE_VM_CONSOLE_LOG" 2>/dev/null || true
    fi
    rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

# --- shares: tag mode path ---
SHARE_ARGS=()
: >"$CTL/shares"
declare -A SHARED=()
NSHARE=0
add_share() { # MODE PATH
    local mode=$1 p=$2
    [[ -d $p ]] || die "cannot share '$p': not a directory"
    p=$(cd -- "$p" && pwd -P)
    [[ $p != / ]] || { log "not sharing / writable"; return 0; }
    [[ $p != *$'\n'* ]] || die "cannot share '$p': paths with newlines are not supported"
    [[ -z ${SHARED[$p]:-} ]] || return 0
    SHARED[$p]=$mode
    local tag=share$NSHARE
    NSHARE=$((NSHARE + 1))
    local ro=
    [[ $mode == rw ]] || ro=,readonly=on
    # (qemu option values escape ',' as ',,')
    SHARE_ARGS+=(-fsdev "local,id=$tag,path=${p//,/,,},security_model=none,multidevs=remap$ro"
        -device "virtio-9p-pci,fsdev=$tag,mount_tag=$tag")
    printf '%s %s %s\n' "$tag" "$mode" "$p" >>"$CTL/shares.unsorted"
}
if [[ $SHARE_CWD == 1 ]]; then
    add_share rw "$PWD"
fi
IFS=: read -r -a _dirs <<<"${RXE_VM_RW_DIRS:-}"
for d in "${_dirs[@]}"; do [[ -z $d ]] || add_share rw "$d"; done
IFS=: read -r -a _dirs <<<"${RXE_VM_RO_DIRS:-}"
for d in "${_dirs[@]}"; do [[ -z $d ]] || add_share ro "$d"; done
# CMD itself may live where the guest mounts a fresh tmpfs.
CMD0=$1
if [[ $CMD0 == */* ]]; then
    _abs=$(cd -- "$(dirname -- "$CMD0")" 2>/dev/null && pwd -P) || _abs=
    case $_abs in
        /tmp | /tmp/* | /var/tmp | /var/tmp/* | /run | /run/* | /dev/shm | /dev/shm/*)
            covered=0
            for p in "${!SHARED[@]}"; do [[ $_abs == "$p" || $_abs == "$p"/* ]] && covered=1; done
            [[ $covered == 1 ]] || add_share ro "$_abs"
            ;;
    esac
fi
if [[ -r $CTL/shares.unsorted ]]; then
    # Parents before children: sort by path length.
    awk '{ p = $0; sub(/^[^ ]+ [^ ]+ /, "", p); print length(p), $0 }' "$CTL/shares.unsorted" |
        sort -n -k1,1 | cut -d' ' -f2- >"$CTL/shares"
    rm -f "$CTL/shares.unsorted"
fi

# --- guest config (values validated above; sourced by busybox sh) ---
cat >"$CTL/config" <<EOF
RXE_DEV=$RXE_DEV
RXE_NETDEV=$NETDEV
RXE_NETDEV_KIND=$NETDEV_KIND
RXE_ADDR_CIDR=$ADDR_CIDR
EOF

# --- the command script (runs under the host's bash inside the chroot) ---
read -r -a PASS_PATTERNS <<<"$PASS_ENV" # (no pathname expansion, unlike a bare $PASS_ENV)
env_matches() { # NAME
    local pat
    for pat in "${PASS_PATTERNS[@]}"; do
        # shellcheck disable=SC2053 # glob match intended
        [[ $1 == $pat ]] && return 0
    done
    return 1
}
{
    echo '# generated by rxe-vm.sh'
    while IFS= read -r name; do
        env_matches "$name" || continue
        printf 'export %s=%q\n' "$name" "${!name}"
    done < <(compgen -e)
    for kv in "${EXTRA_ENV[@]}"; do
        name=${kv%%=*}
        [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "bad -e argument '$kv'"
        if [[ $kv == *=* ]]; then
            printf 'export %s=%q\n' "$name" "${kv#*=}"
        elif [[ -n ${!name+x} ]]; then
            printf 'export %s=%q\n' "$name" "${!name}"
        fi
    done
    printf 'export RXE_VM=1 RXE_DEV=%q RXE_NETDEV=%q RXE_ADDR=%q\n' "$RXE_DEV" "$NETDEV" "$ADDR"
    [[ -n ${PATH:-} ]] && env_matches PATH || echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    printf 'cd -- %q || exit 125\n' "$PWD"
    printf 'exec'
    printf ' %q' "$@"
    printf '\n'
} >"$CTL/run.sh"
: >"$CTL/stdout"
: >"$CTL/stderr"

# --- qemu ---
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found"
# pci=noacpi (PCI IRQ routing from the BIOS table instead of ACPI AML) saves
# ~0.5 s of boot under TCG. The guest ends with a reboot, which -no-reboot
# turns into a qemu exit.
APPEND="console=ttyS0 quiet loglevel=4 panic=-1 pci=noacpi mitigations=off tsc=reliable no_timer_check"
APPEND+=" i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd rdinit=/init"
[[ $VERBOSE == 1 ]] && APPEND+=" rxe_vm_trace"
APPEND+=" ${RXE_VM_APPEND:-}"
QEMU=(qemu-system-x86_64
    -name rxe-vm -machine pc "${ACCEL_ARGS[@]}"
    -m "$MEM" -smp "$SMP"
    -nodefaults -no-user-config -display none -vga none -no-reboot
    -chardev "file,id=con,path=${RUN_DIR//,/,,}/console.log" -serial chardev:con
    -kernel "$KERNEL_IMAGE" -initrd "$INITRAMFS" -append "$APPEND"
    -fsdev "local,id=hostroot,path=/,security_model=none,multidevs=remap,readonly=on"
    -device "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"
    -fsdev "local,id=rxectl,path=${CTL//,/,,},security_model=none"
    -device "virtio-9p-pci,fsdev=rxectl,mount_tag=rxectl"
    "${SHARE_ARGS[@]}")
vlog "accel=$ACCEL boot=$BOOT kernel=$KERNEL_IMAGE"
vlog "host prep took $(elapsed "$T0" "$(now)") s"

# A VM that dies before CMD starts is started again (qemu under TCG has, rarely, crashed while
# booting): CMD has not run, so this changes nothing it could see. RXE_VM_START_RETRIES (2).
START_RETRIES=${RXE_VM_START_RETRIES:-2}
attempt=0
while :; do
    T_BOOT=$(now)
    timeout -k 5 "$TIMEOUT" "${QEMU[@]}" </dev/null >"$RUN_DIR/qemu.log" 2>&1 &
    VM_PID=$!

    tail -n +1 -s 0.1 --pid="$VM_PID" -f "$CTL/stdout" &
    TAIL_PIDS+=($!)
    tail -n +1 -s 0.1 --pid="$VM_PID" -f "$CTL/stderr" >&2 &
    TAIL_PIDS+=($!)
    if [[ $VERBOSE == 1 ]]; then
        tail -n +1 -s 0.1 --pid="$VM_PID" -F "$RUN_DIR/console.log" 2>/dev/null | sed -u 's/^/[guest] /' >&2 &
        TAIL_PIDS+=($!)
    fi

    # Once the guest has reported CMD's exit status, give qemu 10 s to go away.
    grace=0
    while kill -0 "$VM_PID" 2>/dev/null; do
        if [[ -e $CTL/rc ]]; then
            grace=$((grace + 1))
            if ((grace > 50)); then
                log "warning: VM did not exit after the command finished; killing it"
                kill -TERM "$VM_PID" 2>/dev/null || true
                break
            fi
        fi
        sleep 0.2
    done
    vm_rc=0
    wait "$VM_PID" || vm_rc=$?
    VM_PID=''
    T_END=$(now)
    for p in "${TAIL_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    TAIL_PIDS=()
    if [[ -e $CTL/rc || -e $CTL/ready || -s $CTL/error ]] || ((vm_rc == 124 || vm_rc == 137)) ||
        ((attempt >= START_RETRIES)); then
        break
    fi
    attempt=$((attempt + 1))
    log "warning: the VM exited (status $vm_rc) before CMD started; starting it again ($attempt of $START_RETRIES)"
    [[ -s $RUN_DIR/qemu.log ]] && tail -n 5 "$RUN_DIR/qemu.log" >&2
    : >"$CTL/stdout"
    : >"$CTL/stderr"
    : >"$RUN_DIR/console.log"
done

if [[ -r $CTL/ready ]]; then
    T_READY=$(date -r "$CTL/ready" +%s.%N)
    vlog "boot to rxe0 ready: $(elapsed "$T_BOOT" "$T_READY") s (guest uptime $(<"$CTL/ready") s); total VM time $(elapsed "$T_BOOT" "$T_END") s"
fi

if [[ -r $CTL/rc ]]; then
    rc=$(<"$CTL/rc")
    [[ $rc =~ ^[0-9]+$ ]] || die "guest wrote a bad exit status '$rc'"
    exit "$rc"
fi

# No exit status: the rig failed.
if ((vm_rc == 124 || vm_rc == 137)); then
    log "error: VM killed after RXE_VM_TIMEOUT=$TIMEOUT s"
    code=124
else
    code=125
fi
if [[ -s $CTL/error ]]; then
    log "error: guest setup failed: $(<"$CTL/error")"
elif ((code == 125)); then
    log "error: VM exited (status $vm_rc) without reporting CMD's exit status"
fi
if [[ -s $RUN_DIR/qemu.log ]]; then
    log "qemu output:"
    tail -n 20 "$RUN_DIR/qemu.log" >&2
fi
if [[ $VERBOSE != 1 && -s $RUN_DIR/console.log ]]; then
    log "last guest console lines:"
    tail -n 30 "$RUN_DIR/console.log" >&2
fi
exit "$code"
