#!/usr/bin/env bash
# kube-assets.sh: build (once) and cache the Kubernetes test assets
# (kube-apiserver, etcd, kubectl) from the Go module proxy, then print the
# directory that holds them.
#
# stdout: exactly one line, the absolute directory (use it as
#         KUBEBUILDER_ASSETS, or envtest.Environment.BinaryAssetsDirectory).
# stderr: progress and errors.
#
#   export KUBEBUILDER_ASSETS="$(hack/kube-assets.sh)"
#
# Environment:
#   KUBE_VERSION  Kubernetes release to build   (default v1.37.2)
#   ETCD_VERSION  etcd release to build         (default v3.6.16)
#   XDG_CACHE_HOME / HOME  select the cache:
#                 ${XDG_CACHE_HOME:-$HOME/.cache}/moat/kube/<KUBE_VERSION>
#
# Flags:
#   --rebuild     build again even if the cache is complete.
#
# Nothing is fetched from GitHub or dl.k8s.io: everything is compiled from
# source that the Go module proxy serves (GOPROXY as configured), in a
# throwaway module under $TMPDIR, so no project go.mod is touched.  The
# first build takes ~10 minutes on 2 cores; afterwards the script answers
# from the cache without running go.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
[[ $KUBE_VERSION == v* ]] || KUBE_VERSION="v$KUBE_VERSION"
[[ $ETCD_VERSION == v* ]] || ETCD_VERSION="v$ETCD_VERSION"

log() { printf 'kube-assets: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

rebuild=0
for arg in "$@"; do
	case $arg in
	--rebuild) rebuild=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
		exit 0
		;;
	*) die "unknown argument: $arg (try --help)" ;;
	esac
done

# --- where the cache lives ---------------------------------------------------
# XDG: a relative XDG_CACHE_HOME is invalid and must be ignored.
cache_home="${XDG_CACHE_HOME:-}"
if [[ $cache_home != /* ]]; then
	[[ ${HOME:-} == /* ]] || die "neither XDG_CACHE_HOME nor HOME is set to an absolute path"
	cache_home="$HOME/.cache"
fi
root="$cache_home/moat/kube"
dir="$root/$KUBE_VERSION"
stamp_want="kube=$KUBE_VERSION etcd=$ETCD_VERSION"

# ready: the three binaries exist and the stamp says they were built from the
# requested versions.  Pure bash, so the cached path costs a few milliseconds.
ready() {
	local f stamp
	for f in kube-apiserver etcd kubectl; do
		[[ -f $dir/$f && -x $dir/$f ]] || return 1
	done
	[[ -f $dir/.stamp ]] || return 1
	stamp="$(<"$dir/.stamp")"
	[[ $stamp == "$stamp_want" ]]
}

if ((!rebuild)) && ready; then
	printf '%s\n' "$dir"
	exit 0
fi

# --- slow path: build ----------------------------------------------------------
[[ $KUBE_VERSION =~ ^v1\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] ||
	die "KUBE_VERSION=$KUBE_VERSION: want a Kubernetes release like v1.37.2"
[[ $ETCD_VERSION =~ ^v3\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] ||
	die "ETCD_VERSION=$ETCD_VERSION: want an etcd release like v3.6.16"
# The staging modules (k8s.io/api, k8s.io/apiserver, ...) are published as
# v0.X.Y for Kubernetes v1.X.Y.
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"

command -v go >/dev/null 2>&1 || die "go is not in PATH"
command -v flock >/dev/null 2>&1 || die "flock (util-linux) is not in PATH"

mkdir -p "$root"

# One builder per version: a second caller waits, then finds the cache ready.
exec {lock_fd}>"$root/.$KUBE_VERSION.lock"
if ! flock -n "$lock_fd"; then
	log "another kube-assets build of $KUBE_VERSION is running; waiting for it (lock $root/.$KUBE_VERSION.lock)…"
	flock "$lock_fd"
fi
if ((!rebuild)) && ready; then
	printf '%s\n' "$dir"
	exit 0
fi

# We hold the lock, so leftovers of an interrupted build are nobody's.
rm -rf "$root/.tmp-$KUBE_VERSION".* "$root/.old-$KUBE_VERSION".*

work=""
out=""
cleanup() { rm -rf "$work" "$out"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The throwaway modules live in $TMPDIR; the binaries are built next to the
# final directory (same file system) so that the last step is a rename.
work="$(mktemp -d "${TMPDIR:-/tmp}/moat-kube-assets.XXXXXX")"
out="$(mktemp -d "$root/.tmp-$KUBE_VERSION.XXXXXX")"

# A clean go environment: ignore the caller's GOFLAGS (-mod=vendor, tags,
# ...), workspaces and cross-compilation settings; keep GOPROXY, GOCACHE,
# GOMODCACHE, GOTOOLCHAIN etc. so caches are shared.
gocmd=(env -u GOOS -u GOARCH -u GOARM -u GOAMD64 -u GOEXPERIMENT
	GOWORK=off GO111MODULE=on GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0)
# Be polite to whatever else is running: compiling Kubernetes takes minutes.
if command -v nice >/dev/null 2>&1; then
	gocmd+=(nice -n 10)
fi
gocmd+=(go)

elapsed() {
	local s=$((SECONDS - $1))
	printf '%dm%02ds' $((s / 60)) $((s % 60))
}
t_all=$SECONDS

# gomod_path MODULE@VERSION: download the module, print the path of its go.mod.
gomod_path() {
	local json path
	json="$("${gocmd[@]}" mod download -json "$1")" || {
		printf '%s\n' "$json" >&2
		die "go mod download $1 failed"
	}
	path="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
	[[ -n $path && -f $path ]] || die "go mod download $1: no go.mod in: $json"
	printf '%s\n' "$path"
}

# go_directive GOMOD: the "go" line of a go.mod file.
go_directive() {
	awk '$1 == "go" && NF == 2 { print $2; exit }' "$1"
}

# --- kube-apiserver and kubectl ------------------------------------------------
log "fetching k8s.io/kubernetes $KUBE_VERSION from the Go module proxy…"
kube_gomod="$(cd "$work" && gomod_path "k8s.io/kubernetes@$KUBE_VERSION")"

# k8s.io/kubernetes replaces its staging modules with ./staging/src/k8s.io/*,
# which is not in the module zip and is ignored in a dependency anyway: point
# every one of them at the published staging module instead.
staging="$(awk '
	{ sub(/\/\/.*/, "") }
	/=>/ {
		n = 0
		for (i = 1; i <= NF; i++) if ($i == "=>") n = i
		if (n == 0) next
		old = ($1 == "replace") ? $2 : $1
		new = $(n + 1)
		if (new ~ /^\.\.?\//) print old, new
	}' "$kube_gomod")"
[[ -n $staging ]] || die "found no staging replace directives in $kube_gomod"

kmod="$work/kube"
mkdir -p "$kmod"
{
	printf 'module moat.local/kube-assets\n\ngo %s\n\n' "$(go_directive "$kube_gomod")"
	# Same run-time defaults (GODEBUG) as the upstream build of these binaries.
	awk '
		$1 == "godebug" && $2 == "(" { inblock = 1; next }
		inblock && $1 == ")" { inblock = 0; next }
		inblock && NF { print "godebug " $1; next }
		$1 == "godebug" && NF >= 2 { print "godebug " $2 }' "$kube_gomod"
	printf '\nrequire k8s.io/kubernetes %s\n\n' "$KUBE_VERSION"
	while read -r old new; do
		[[ $new == "./staging/src/$old" ]] ||
			die "unexpected local replace in k8s.io/kubernetes go.mod: $old => $new"
		printf 'replace %s => %s %s\n' "$old" "$old" "$STAGING_VERSION"
	done <<<"$staging"
} >"$kmod/go.mod"
log "throwaway module $kmod: k8s.io/kubernetes $KUBE_VERSION + $(wc -l <<<"$staging") staging modules at $STAGING_VERSION"

kube_date="$("${gocmd[@]}" -C "$kmod" list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' "k8s.io/kubernetes@$KUBE_VERSION" 2>/dev/null || true)"
minor="${KUBE_VERSION#v1.}"
minor="${minor%%.*}"
kube_ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
	kube_ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	kube_ldflags+=" -X $pkg.gitTreeState=archive"
	[[ -z $kube_date ]] || kube_ldflags+=" -X $pkg.buildDate=$kube_date"
done
# Tags as in kubernetes/hack/lib/golang.sh for release builds.
kube_tags="selinux,notest,grpcnotrace"

# kubectl shares most of its packages with kube-apiserver, so it is quick.
hint=" (first time: ~10 minutes)"
for bin in kube-apiserver kubectl; do
	t=$SECONDS
	log "building $bin $KUBE_VERSION from the Go module proxy$hint…"
	hint=""
	"${gocmd[@]}" -C "$kmod" build -trimpath -tags="$kube_tags" -ldflags="$kube_ldflags" \
		-o "$out/$bin" "k8s.io/kubernetes/cmd/$bin" >&2 ||
		die "building $bin $KUBE_VERSION failed (throwaway module: $kmod)"
	log "built $bin in $(elapsed "$t")"
done

# --- etcd ----------------------------------------------------------------------
# go.etcd.io/etcd/server/v3 is etcd's main package; its go.mod has replace
# directives, so "go install ...@version" refuses it: use a throwaway module.
t=$SECONDS
log "building etcd $ETCD_VERSION from the Go module proxy…"
etcd_gomod="$(cd "$work" && gomod_path "go.etcd.io/etcd/server/v3@$ETCD_VERSION")"
emod="$work/etcd"
mkdir -p "$emod"
printf 'module moat.local/etcd-assets\n\ngo %s\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
	"$(go_directive "$etcd_gomod")" "$ETCD_VERSION" >"$emod/go.mod"
"${gocmd[@]}" -C "$emod" build -trimpath \
	-ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
	-o "$out/etcd" go.etcd.io/etcd/server/v3 >&2 ||
	die "building etcd $ETCD_VERSION failed (throwaway module: $emod)"
log "built etcd in $(elapsed "$t")"

# --- check, stamp, publish -------------------------------------------------------
"$out/kube-apiserver" --version >&2 || die "the new kube-apiserver does not run"
"$out/etcd" --version >&2 || die "the new etcd does not run"
"$out/kubectl" version --client >&2 || die "the new kubectl does not run"

{
	printf 'built %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	printf 'by %s\n' "$(go version)"
	printf 'k8s.io/kubernetes %s (staging modules %s)\n' "$KUBE_VERSION" "$STAGING_VERSION"
	printf 'go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION"
} >"$out/BUILDINFO"
printf '%s\n' "$stamp_want" >"$out/.stamp"
chmod 755 "$out"

# Atomic publish: the directory appears complete or not at all.
if [[ -e $dir ]]; then
	old="$(mktemp -d "$root/.old-$KUBE_VERSION.XXXXXX")"
	mv "$dir" "$old/"
fi
mv -T "$out" "$dir"
out=""
rm -rf "$root/.old-$KUBE_VERSION".*

log "done in $(elapsed "$t_all"): $dir ($(du -sh "$dir" | cut -f1))"
printf '%s\n' "$dir"
