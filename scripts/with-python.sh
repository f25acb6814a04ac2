#!/usr/bin/env bash
# with-python.sh CMD [ARGS...] — run CMD where pyworkers' CPython 3.14 is usable.
#
#   scripts/with-python.sh go test ./...
#   scripts/with-python.sh go test -tags pydebug ./...      # link the Py_DEBUG build instead
#   scripts/with-python.sh go run ./cmd/pyworkers run -w 4 testdata/demo/isqrt.py
#   scripts/with-python.sh python3.14 -c 'import sys; print(sys.version)'
#
# It provisions first when needed (scripts/build-python.sh), then runs CMD:
#   native/source CPython: directly, with PATH/PKG_CONFIG_PATH/LD_LIBRARY_PATH pointing at it;
#   Debian root:           inside it with bubblewrap; the checkout keeps its path, the Go toolchain,
#                          module cache and build cache are shared, and the mounts live only in
#                          bubblewrap's own mount namespace (nothing is left mounted afterwards).
# CMD's exit status, stdin, stdout and stderr are passed through.
set -euo pipefail

if [ $# -eq 0 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
	sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
	[ $# -eq 0 ] && exit 2
	exit 0
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
CACHE="${PYWORKERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pyworkers}"
CACHE=$(realpath -m -- "$CACHE") # as build-python.sh, which records paths in it
ENV_FILE="$CACHE/python.env"

# Already inside the root (nested call): just run.
if [ "${PYWORKERS_IN_ROOT:-}" = 1 ]; then
	exec "$@"
fi

load_env() {
	PYWORKERS_PY_MODE="" PYWORKERS_PY_ROOT="" PYWORKERS_PY_PREFIX="" PYWORKERS_PY_DEBUG_PREFIX=""
	[ -f "$ENV_FILE" ] || return 1
	local k v
	while IFS='=' read -r k v; do
		case "$k" in
		PYWORKERS_PY_MODE | PYWORKERS_PY_ROOT | PYWORKERS_PY_PREFIX | PYWORKERS_PY_DEBUG_PREFIX) printf -v "$k" '%s' "$v" ;;
		esac
	done <"$ENV_FILE"
	"$here/scripts/build-python.sh" --check "$PYWORKERS_PY_MODE" "${PYWORKERS_PY_ROOT:-$PYWORKERS_PY_PREFIX}" "$PYWORKERS_PY_DEBUG_PREFIX"
}

# A rebuild of the Debian root (build-python.sh) waits for the commands using it to end, and a
# command for the rebuild: a shared lock on the cache's .in-use for as long as CMD runs (bwrap
# or CMD inherits it), under which the CPython found is checked.
mkdir -p "$CACHE"
if ! { exec 8>>"$CACHE/.in-use"; } 2>/dev/null; then
	echo "with-python: error: cannot open $CACHE/.in-use: the cache belongs to another user (was it provisioned with sudo?); run as that user, or set PYWORKERS_CACHE to a cache of your own" >&2
	exit 1
fi
flock -s 8
if ! load_env || [ -n "${PYWORKERS_PYTHON_MODE:-}" -a "${PYWORKERS_PYTHON_MODE:-}" != "$PYWORKERS_PY_MODE" ]; then
	flock -u 8 # a rebuild waits for the commands using the root: not for this one
	"$here/scripts/build-python.sh"
	flock -s 8
	load_env || {
		echo "with-python: error: provisioning finished but $ENV_FILE is unusable; run scripts/build-python.sh and read its output" >&2
		exit 1
	}
fi

case "$PYWORKERS_PY_MODE" in
native)
	exec "$@"
	;;
source)
	export PATH="$PYWORKERS_PY_PREFIX/bin:$PATH"
	debug_pc="" debug_lib="" # no debug build with PYWORKERS_NO_DEBUG=1: not /lib/pkgconfig, /lib
	if [ -n "$PYWORKERS_PY_DEBUG_PREFIX" ]; then
		debug_pc=":$PYWORKERS_PY_DEBUG_PREFIX/lib/pkgconfig" debug_lib=":$PYWORKERS_PY_DEBUG_PREFIX/lib"
	fi
	export PKG_CONFIG_PATH="$PYWORKERS_PY_PREFIX/lib/pkgconfig$debug_pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
	export LD_LIBRARY_PATH="$PYWORKERS_PY_PREFIX/lib$debug_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	exec "$@"
	;;
esac

# ---- root mode
root="$PYWORKERS_PY_ROOT"
command -v bwrap >/dev/null 2>&1 || {
	echo "with-python: error: bubblewrap (bwrap) is missing; run scripts/build-python.sh as root or apt-get install bubblewrap" >&2
	exit 1
}
gobin=$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)
[ -x "$gobin" ] || {
	echo "with-python: error: no Go toolchain found (go on PATH or /usr/local/go)" >&2
	exit 1
}
goroot=$("$gobin" env GOROOT)
gopath=$("$gobin" env GOPATH)
gopath=${gopath%%:*}
gocache=$("$gobin" env GOCACHE)
gomodcache=$("$gobin" env GOMODCACHE)
goenv=$("$gobin" env GOENV) # settings made with go env -w (GOPROXY, GOPRIVATE, GOFLAGS...)
mkdir -p "$gopath" "$gocache" "$gomodcache"
cwd=$(pwd -P)

args=(
	--bind "$root" /
	--dev /dev --proc /proc
	--bind /tmp /tmp
	--ro-bind "$goroot" "$goroot"
	--bind "$gopath" "$gopath"
	--bind "$gocache" "$gocache"
	--bind "$gomodcache" "$gomodcache"
	--bind "$here" "$here"
	--die-with-parent
)
# The host's trust store and resolver: the root's own ca-certificates may lack this machine's CA.
[ -d /etc/ssl/certs ] && args+=(--ro-bind /etc/ssl/certs /etc/ssl/certs)
[ -e /etc/resolv.conf ] && args+=(--ro-bind /etc/resolv.conf /etc/resolv.conf)
[ -e /etc/hosts ] && args+=(--ro-bind /etc/hosts /etc/hosts)
[ -f "$goenv" ] && args+=(--ro-bind "$goenv" "$goenv" --setenv GOENV "$goenv")
case "$cwd/" in
"$here"/* | /tmp/* | //) ;; # / itself: the root's own
*) args+=(--bind "$cwd" "$cwd") ;;
esac
# A temporary folder elsewhere than /tmp (TMPDIR, GOTMPDIR) is CMD's too: go test's t.TempDir.
for d in "${TMPDIR:-}" "${GOTMPDIR:-}"; do
	case "$d/" in
	/ | // | /tmp/* | "$here"/*) ;;
	*) [ -d "$d" ] && args+=(--bind "$d" "$d") ;;
	esac
done
args+=(
	--chdir "$cwd"
	--setenv PATH "$goroot/bin:$gopath/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	--setenv GOCACHE "$gocache"
	--setenv GOMODCACHE "$gomodcache"
	--setenv GOPATH "$gopath"
	--setenv PYWORKERS_IN_ROOT 1
	--unsetenv LD_LIBRARY_PATH
	--unsetenv PKG_CONFIG_PATH
	--unsetenv PYTHONPATH
	--unsetenv PYTHONHOME
)
exec bwrap "${args[@]}" -- "$@"
