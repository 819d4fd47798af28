# Sourced by the scripts: installs missing Debian packages.
#
#   ensure_packages PROG PACKAGE...
#
# Installs those of PACKAGE... that are not installed, with apt-get, when running as root (and
# says so, prefixed with PROG); otherwise names them and exits 1.
ensure_packages() {
    local prog=$1
    shift
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) -eq 0 ]]; then
        echo "$prog: installing missing packages as root: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "$prog: not root, so cannot install missing packages: ${missing[*]}" >&2
        echo "$prog: run as root, or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
}
