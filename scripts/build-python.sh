#!/usr/bin/env bash
# build-python.sh — provision CPython 3.14 (release + Py_DEBUG build) for pyworkers' cgo code.
#
# It chooses, in this order:
#   1. native  — a CPython 3.14 already on this machine (pkg-config finds python-3.14-embed).
#   2. source  — PYWORKERS_PYTHON_SOURCE (a tarball path or URL) with PYWORKERS_PYTHON_SHA256:
#                builds from source into two prefixes (--enable-shared, and --with-pydebug).
#   3. root    — a Debian unstable root made with debootstrap holding python3.14-dev, python3.14-dbg,
#                python3.14-venv (venvs with pip), gcc and pkg-config; commands then run inside it
#                (scripts/with-python.sh does that).
#
# Everything is cached under ${XDG_CACHE_HOME:-$HOME/.cache}/pyworkers/. Running it again reuses
# what is complete and rebuilds what a killed run left half-made. The result is described in
# $CACHE/python.env, which scripts/with-python.sh reads.
#
# Environment:
#   PYWORKERS_PYTHON_MODE     force a mode: native | source | root (default: the order above)
#   PYWORKERS_PYTHON_SOURCE   CPython source tarball, local path or http(s) URL (source mode)
#   PYWORKERS_PYTHON_SHA256   its sha256 (required with PYWORKERS_PYTHON_SOURCE)
#   PYWORKERS_DEBIAN_MIRROR   Debian mirror for the root (default: read from this machine's apt config)
#   PYWORKERS_CACHE           cache directory (default: ${XDG_CACHE_HOME:-$HOME/.cache}/pyworkers)
#   PYWORKERS_NO_DEBUG=1      native/source modes: do not require/build the debug variant
set -Eeuo pipefail

readonly ROOT_PACKAGES="python3.14-dev,python3.14-dbg,python3.14-venv,gcc,libc6-dev,pkg-config,ca-certificates"
readonly ROOT_FORMAT=2 # bump when the root's contents change, forcing a rebuild (2: python3.14-venv)

CACHE="${PYWORKERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pyworkers}"
CACHE=$(realpath -m -- "$CACHE") # python.env records paths in it: absolute, wherever it is run from
ENV_FILE="$CACHE/python.env"

say() { printf 'build-python: %s\n' "$*" >&2; }
die() {
	printf 'build-python: error: %s\n' "$1" >&2
	[ $# -gt 1 ] && printf 'build-python: try: %s\n' "$2" >&2
	exit 1
}
trap 'die "command failed (line $LINENO): $BASH_COMMAND" "re-run the script; it resumes from what is complete. Set PYWORKERS_PYTHON_MODE to choose a path."' ERR

usage() {
	sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}

check=""
case "${1:-}" in
-h | --help) usage 0 ;;
--check) check=1 ;; # --check MODE DIR [DEBUG_DIR]: is what python.env describes still usable? (exit status; with-python.sh)
"") ;;
*) usage 2 ;;
esac

if [ -z "$check" ]; then
	mkdir -p "$CACHE"
	exec 9>"$CACHE/.lock"
	if ! flock -n 9; then
		say "another build-python.sh holds $CACHE/.lock; waiting for it"
		flock 9
	fi
fi

write_env() { # write_env KEY=VALUE... — atomically replace python.env
	local tmp="$ENV_FILE.tmp.$$"
	printf '%s\n' "# written by scripts/build-python.sh on $(date -u +%FT%TZ)" "$@" >"$tmp"
	mv -f "$tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------- native
native_ok() {
	command -v pkg-config >/dev/null 2>&1 || return 1
	pkg-config --exists python-3.14-embed 2>/dev/null || return 1
	if [ "${PYWORKERS_NO_DEBUG:-0}" != 1 ] && ! pkg-config --exists python-3.14d-embed 2>/dev/null; then
		say "found python-3.14-embed but no python-3.14d-embed (debug build); set PYWORKERS_NO_DEBUG=1 to use it anyway"
		return 1
	fi
	return 0
}

use_native() {
	say "using the CPython $(pkg-config --modversion python-3.14-embed) already on this machine ($(pkg-config --variable=prefix python-3.14-embed))"
	write_env "PYWORKERS_PY_MODE=native"
}

# ---------------------------------------------------------------- source
fetch_source() { # fetch_source SRC SHA256 DEST
	local src="$1" sum="$2" dest="$3"
	if [ -f "$dest" ] && echo "$sum  $dest" | sha256sum -c --status; then
		return 0
	fi
	case "$src" in
	http://* | https://*)
		say "downloading $src"
		curl -fL --retry 3 -o "$dest.part" "$src" || die "cannot download $src" "check the URL and the network, or pass a local path"
		;;
	*)
		[ -f "$src" ] || die "no such file: $src" "set PYWORKERS_PYTHON_SOURCE to a CPython 3.14 source tarball"
		cp -f "$src" "$dest.part"
		;;
	esac
	if ! echo "$sum  $dest.part" | sha256sum -c --status; then
		rm -f "$dest.part"
		die "sha256 mismatch for $src (expected $sum)" "check PYWORKERS_PYTHON_SHA256 against python.org's published checksum"
	fi
	mv -f "$dest.part" "$dest"
}

build_variant() { # build_variant TARBALL PREFIX CONFIGURE_FLAGS...
	local tarball="$1" prefix="$2"
	shift 2
	if [ -f "$prefix/.pyworkers-complete" ]; then
		say "reusing $prefix"
		return 0
	fi
	rm -rf "$prefix" "$prefix.build"
	mkdir -p "$prefix.build"
	tar -xf "$tarball" -C "$prefix.build" --strip-components=1
	say "configuring into $prefix ($*)"
	(cd "$prefix.build" && ./configure --prefix="$prefix" --enable-shared "LDFLAGS=-Wl,-rpath,$prefix/lib" "$@" >config.out 2>&1) ||
		die "configure failed; see $prefix.build/config.out" "install CPython's build dependencies (gcc, make, libssl-dev, zlib1g-dev, libffi-dev)"
	say "building (make -j$(nproc)); this takes several minutes"
	(cd "$prefix.build" && make -j"$(nproc)" >make.out 2>&1 && make install >install.out 2>&1) ||
		die "make failed; see $prefix.build/make.out" "install CPython's build dependencies, then re-run"
	rm -rf "$prefix.build"
	touch "$prefix/.pyworkers-complete"
}

use_source() {
	local src="$PYWORKERS_PYTHON_SOURCE" sum="${PYWORKERS_PYTHON_SHA256:-}"
	[ -n "$sum" ] || die "PYWORKERS_PYTHON_SOURCE is set but PYWORKERS_PYTHON_SHA256 is not" "pin the tarball: export PYWORKERS_PYTHON_SHA256=<sha256 from python.org>"
	local base="$CACHE/source-${sum:0:16}"
	mkdir -p "$base"
	fetch_source "$src" "$sum" "$base/cpython.tar"
	build_variant "$base/cpython.tar" "$base/release"
	if [ "${PYWORKERS_NO_DEBUG:-0}" != 1 ]; then
		build_variant "$base/cpython.tar" "$base/debug" --with-pydebug
	fi
	"$base/release/bin/python3.14" -c 'import sys; assert sys.version_info[:2] == (3, 14), sys.version' ||
		die "$src is not CPython 3.14" "use a Python-3.14.x tarball"
	say "CPython from source ready in $base"
	local debug=""
	[ "${PYWORKERS_NO_DEBUG:-0}" = 1 ] || debug=$base/debug
	write_env "PYWORKERS_PY_MODE=source" "PYWORKERS_PY_PREFIX=$base/release" "PYWORKERS_PY_DEBUG_PREFIX=$debug"
}

# ---------------------------------------------------------------- root
# Sets mirror to the Debian archive this machine's apt uses (not in a $(...): die there would
# be reported twice, once more by the ERR trap), and exports apt's HTTP proxy for debootstrap.
find_debian_mirror() {
	local list parts proxy sproxy
	eval "$(apt-config shell list Dir::Etc::sourcelist/f parts Dir::Etc::sourceparts/d proxy Acquire::http::Proxy sproxy Acquire::https::Proxy 2>/dev/null || true)"
	if [ -n "${proxy:-}" ] && [ "$proxy" != DIRECT ] && [ -z "${http_proxy:-}" ]; then
		export http_proxy=$proxy
	fi
	if [ -n "${sproxy:-}" ] && [ "$sproxy" != DIRECT ] && [ -z "${https_proxy:-}" ]; then
		export https_proxy=$sproxy
	fi
	if [ -n "${PYWORKERS_DEBIAN_MIRROR:-}" ]; then
		mirror=$(printf '%s' "$PYWORKERS_DEBIAN_MIRROR" | tr -d '[:space:]')
		mirror=${mirror%/}
		case "$mirror" in
		http://?* | https://?* | file:///?*) ;;
		*) die "PYWORKERS_DEBIAN_MIRROR=$PYWORKERS_DEBIAN_MIRROR is not a URL" "set it to a Debian archive's URL (http://, https:// or file://)" ;;
		esac
		return
	fi
	list=${list:-/etc/apt/sources.list} parts=${parts:-/etc/apt/sources.list.d/}
	# The first main archive: an enabled "deb" source with the component main and a suite with
	# no "-" (not -security, -updates, -backports), deb822 sources first, then one-line ones.
	# Other vendors' repositories may end in /debian too (Docker's), but none has main.
	local uri
	uri=$(awk '
		function flush() {
			if (deb && enabled && main && suite) for (i = 1; i <= n; i++) print u[i]
			deb = 0; enabled = 1; main = 0; suite = 0; n = 0; field = ""
		}
		BEGIN { flush() }
		FNR == 1 { flush() } # a stanza ends with its file, blank line or not
		/^[ \t]*#/ { next }
		/^[ \t]*$/ { flush(); next }
		{
			if ($0 ~ /^[^ \t]/) { field = tolower($1); sub(/:$/, "", field); from = 2 } else from = 1
			for (i = from; i <= NF; i++) {
				if (field == "types" && $i == "deb") deb = 1
				else if (field == "enabled" && tolower($i) ~ /^(no|false|off|without|disable|0)$/) enabled = 0
				else if (field == "components" && $i == "main") main = 1
				else if (field == "suites" && $i !~ /-/) suite = 1
				else if (field == "uris") u[++n] = $i
			}
		}
		END { flush() }' "$parts"/*.sources 2>/dev/null | resolve_mirror_lists | grep -E '/debian/?$' | head -n1 || true)
	if [ -z "$uri" ]; then
		uri=$(cat "$list" "$parts"/*.list 2>/dev/null |
			awk '$1 == "deb" {
				for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:/ && $i !~ /^\[/) break
				if (i + 1 > NF || $(i + 1) ~ /-/) next
				for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; next }
			}' |
			resolve_mirror_lists | grep -E '/debian/?$' | head -n1 || true)
	fi
	[ -n "$uri" ] || die "no Debian mirror found in apt's sources ($list, $parts) (not a Debian machine?)" "set PYWORKERS_DEBIAN_MIRROR to a Debian archive URL"
	mirror=${uri%/}
}

# apt URIs on stdin, one a line, to stdout; mirror+file:PATH (Debian's cloud images) stands for
# the archive URLs listed in PATH.
resolve_mirror_lists() {
	local u
	while read -r u; do
		case "$u" in
		mirror+file:*) grep -Eo '^[a-z]+://[^[:space:]]+' "${u#mirror+file:}" 2>/dev/null || true ;;
		*) echo "$u" ;;
		esac
	done
}

# Unmount anything still mounted below $1 (a killed debootstrap can leave /proc or /sys mounted).
unmount_below() {
	local dir
	dir=$(readlink -f "$1")
	awk -v d="$dir/" 'index($2 "/", d) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
		say "unmounting leftover $m"
		umount -l "$m" || true
	done
}

need_host_tool() { # need_host_tool CMD PACKAGE — CMD on PATH, or an absolute path to a file
	case "$1" in
	/*) [ -e "$1" ] && return 0 ;;
	*) command -v "$1" >/dev/null 2>&1 && return 0 ;;
	esac
	[ "$(id -u)" = 0 ] || die "$1 is not installed and this is not root" "sudo apt-get install -y $2"
	say "installing $2 on the host (apt-get)"
	# a fresh VM's unattended upgrades may hold dpkg's lock for a while: wait for it
	if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "$2" >/dev/null 2>&1; }; then
		apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null 2>&1 || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "$2" >/dev/null ||
			die "cannot install $2 with apt-get" "install $2 by hand"
	fi
}

root_python_version() { # the python3.14 package version inside root $1 (its binaries need the root's glibc)
	awk '/^Package: python3.14$/ { p = 1 } p && /^Version:/ { print $2; exit }' "$1/var/lib/dpkg/status" 2>/dev/null || true
}

root_ready() { # root_ready DIR — the root is complete and still has what we need
	[ -f "$1/.pyworkers-complete" ] && [ "$(cat "$1/.pyworkers-complete")" = "format=$ROOT_FORMAT" ] &&
		[ -x "$1/usr/bin/python3.14" ] && [ -x "$1/usr/bin/python3.14d" ] && [ -d "$1/usr/lib/python3.14/ensurepip" ] &&
		[ -n "$(find "$1/usr/lib" -maxdepth 3 -name python-3.14-embed.pc -print -quit 2>/dev/null)" ]
}

use_root() {
	local root="$CACHE/root" partial="$CACHE/root.partial"
	[ "$(uname -s)" = Linux ] || die "the Debian root needs Linux" "install CPython 3.14 yourself, or set PYWORKERS_PYTHON_SOURCE"
	if root_ready "$root"; then
		say "reusing the Debian unstable root at $root (python3.14 $(root_python_version "$root"))"
	else
		[ "$(id -u)" = 0 ] || die "making the Debian root needs root (debootstrap)" "run as root, or install CPython 3.14 with python-3.14-embed.pc, or set PYWORKERS_PYTHON_SOURCE"
		need_host_tool debootstrap debootstrap
		need_host_tool bwrap bubblewrap
		# Debian's signing keys: debootstrap checks the archive's Release file with them (a
		# Debian host has them; elsewhere it would go on unverified)
		local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
		need_host_tool "$keyring" debian-archive-keyring
		local mirror
		find_debian_mirror
		if [ -e "$root" ]; then
			# not under commands still using it (scripts/with-python.sh holds .in-use shared);
			# held until this script ends, so none starts on a root half made
			exec 8>"$CACHE/.in-use"
			if ! flock -n -x 8; then
				say "waiting for the commands using the root at $root to end"
				flock -x 8
			fi
			say "the root at $root is incomplete or outdated; rebuilding it"
			unmount_below "$root"
			# the mark first: a removal cut short must not leave a root that looks complete
			rm -f "$root/.pyworkers-complete"
			rm -rf --one-file-system "$root"
		fi
		if [ -e "$partial" ]; then
			say "removing a half-made root left by an interrupted run"
			unmount_below "$partial"
			rm -rf --one-file-system "$partial"
		fi
		say "debootstrapping Debian unstable into $partial (about a minute; needs ~1.5 GB)"
		# A private mount namespace: the mounts debootstrap makes vanish with it, even if it is killed.
		if ! unshare --mount --propagation private \
			debootstrap --keyring="$keyring" --variant=minbase --include="$ROOT_PACKAGES" sid "$partial" "$mirror" \
			>"$CACHE/debootstrap.log" 2>&1; then
			tail -n 15 "$CACHE/debootstrap.log" >&2 || true
			die "debootstrap failed; full log in $CACHE/debootstrap.log" "check the mirror ($mirror) is reachable, or set PYWORKERS_DEBIAN_MIRROR"
		fi
		unmount_below "$partial"
		rm -rf --one-file-system "$partial/var/cache/apt/archives/"*.deb
		echo "format=$ROOT_FORMAT" >"$partial/.pyworkers-complete"
		root_ready "$partial" || die "the new root lacks python3.14/python3.14d, ensurepip or python-3.14-embed.pc" "see $CACHE/debootstrap.log"
		mv "$partial" "$root"
		say "root ready at $root (python3.14 $(root_python_version "$root"))"
	fi
	command -v bwrap >/dev/null 2>&1 || need_host_tool bwrap bubblewrap
	write_env "PYWORKERS_PY_MODE=root" "PYWORKERS_PY_ROOT=$root"
}

usable() { # usable MODE DIR [DEBUG_DIR] — the one test of a provisioned CPython, here and for with-python.sh
	case "$1" in
	native) return 0 ;;
	source) # its debug build too, unless PYWORKERS_NO_DEBUG=1
		[ -f "$2/.pyworkers-complete" ] && { [ "${PYWORKERS_NO_DEBUG:-0}" = 1 ] || [ -f "${3:-/nonexistent}/.pyworkers-complete" ]; } ;;
	root) root_ready "$2" ;;
	*) return 1 ;;
	esac
}
if [ -n "$check" ]; then
	usable "${2:-}" "${3:-}" "${4:-}" && exit 0 || exit 1
fi

mode="${PYWORKERS_PYTHON_MODE:-}"
if [ -z "$mode" ]; then
	if native_ok; then
		mode=native
	elif [ -n "${PYWORKERS_PYTHON_SOURCE:-}" ]; then
		mode=source
	else
		mode=root
	fi
fi
case "$mode" in
native)
	native_ok || die "PYWORKERS_PYTHON_MODE=native but pkg-config finds no python-3.14-embed" "install CPython 3.14 with its pkg-config files, or unset PYWORKERS_PYTHON_MODE"
	use_native
	;;
source)
	[ -n "${PYWORKERS_PYTHON_SOURCE:-}" ] || die "source mode needs PYWORKERS_PYTHON_SOURCE" "export PYWORKERS_PYTHON_SOURCE=/path/or/url/Python-3.14.x.tar.xz"
	use_source
	;;
root) use_root ;;
*) die "unknown PYWORKERS_PYTHON_MODE=$mode" "use native, source or root" ;;
esac
