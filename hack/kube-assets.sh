#!/usr/bin/env bash
# kube-assets.sh: fetch (once) and cache the Kubernetes test assets
# (kube-apiserver, etcd, kubectl), then print the directory that holds them.
#
# stdout: exactly one line, the absolute directory (use it as
#         KUBEBUILDER_ASSETS, or envtest.Environment.BinaryAssetsDirectory).
# stderr: progress and errors.
#
#   export KUBEBUILDER_ASSETS="$(hack/kube-assets.sh)"
#
# Sources (--kube-assets-source, else MOAT_KUBE_ASSETS_SOURCE, else auto):
#   download  the envtest release archive for KUBE_VERSION and this machine,
#             found in the release index that setup-envtest reads, and used
#             only if its sha512 matches the index (seconds; needs curl, tar
#             and sha512sum or shasum).
#   build     compile from source that the Go module proxy serves (GOPROXY as
#             configured), in a throwaway module under $TMPDIR, so no project
#             go.mod is touched: ~10-20 minutes on 2 cores, needs Go.  Nothing
#             else is fetched.
#   auto      download; on any failure (index unreachable, no archive for
#             the version, checksum mismatch) say why, then build.
# The source decides how a missing cache is filled: a complete cache answers
# whichever way it was filled, in a few milliseconds and without network.
#
# Environment:
#   KUBE_VERSION  Kubernetes release to fetch   (default v1.37.2)
#   ETCD_VERSION  etcd release to build         (default v3.6.16; a download
#                 brings the etcd of its envtest release)
#   MOAT_KUBE_ASSETS_SOURCE  download, build or auto (default auto)
#   MOAT_KUBE_ASSETS_INDEX   URL of the envtest release index (default
#                 setup-envtest's, under raw.githubusercontent.com)
#   MOAT_KUBE_ASSETS_BUILD_CMD  test hook: an executable that replaces the
#                 build from the module proxy; it gets the directory to fill
#                 with kube-apiserver, etcd and kubectl as its argument.
#   XDG_CACHE_HOME / HOME  select the cache:
#                 ${XDG_CACHE_HOME:-$HOME/.cache}/moat/kube/<KUBE_VERSION>
#
# Flags:
#   --kube-assets-source=download|build|auto
#   --kube-assets-index=URL   (overrides MOAT_KUBE_ASSETS_INDEX)
#   --rebuild     fetch again even if the cache is complete.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
[[ $KUBE_VERSION == v* ]] || KUBE_VERSION="v$KUBE_VERSION"
[[ $ETCD_VERSION == v* ]] || ETCD_VERSION="v$ETCD_VERSION"
source_mode="${MOAT_KUBE_ASSETS_SOURCE:-auto}"
index_url="${MOAT_KUBE_ASSETS_INDEX:-https://raw.githubusercontent.com/kubernetes-sigs/controller-tools/HEAD/envtest-releases.yaml}"

log() { printf 'kube-assets: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

rebuild=0
while (($#)); do
	case $1 in
	--rebuild) rebuild=1 ;;
	--kube-assets-source=*) source_mode="${1#*=}" ;;
	--kube-assets-index=*) index_url="${1#*=}" ;;
	--kube-assets-source | --kube-assets-index)
		(($# >= 2)) || die "$1 needs a value"
		if [[ $1 == --kube-assets-source ]]; then source_mode="$2"; else index_url="$2"; fi
		shift
		;;
	-h | --help)
		sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
		exit 0
		;;
	*) die "unknown argument: $1 (try --help)" ;;
	esac
	shift
done
case $source_mode in
download | build | auto) ;;
*) die "--kube-assets-source=$source_mode: want download, build or auto" ;;
esac

# --- where the cache lives ---------------------------------------------------
# XDG: a relative XDG_CACHE_HOME is invalid and must be ignored.
cache_home="${XDG_CACHE_HOME:-}"
if [[ $cache_home != /* ]]; then
	[[ ${HOME:-} == /* ]] || die "neither XDG_CACHE_HOME nor HOME is set to an absolute path"
	cache_home="$HOME/.cache"
fi
root="$cache_home/moat/kube"
dir="$root/$KUBE_VERSION"
# The stamp says where the binaries came from: a build records the versions
# it compiled, a download the archive it verified.
build_stamp="kube=$KUBE_VERSION etcd=$ETCD_VERSION"
download_stamp_prefix="kube=$KUBE_VERSION source=download "

# ready: the three binaries exist and the stamp says they are the requested
# versions, built or downloaded.  Pure bash, so the cached path costs a few
# milliseconds.
ready() {
	local f stamp
	for f in kube-apiserver etcd kubectl; do
		[[ -f $dir/$f && -x $dir/$f ]] || return 1
	done
	[[ -f $dir/.stamp ]] || return 1
	stamp="$(<"$dir/.stamp")"
	[[ $stamp == "$build_stamp" || $stamp == "$download_stamp_prefix"* ]]
}

if ((!rebuild)) && ready; then
	printf '%s\n' "$dir"
	exit 0
fi

# --- slow path -------------------------------------------------------------------
[[ $KUBE_VERSION =~ ^v1\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] ||
	die "KUBE_VERSION=$KUBE_VERSION: want a Kubernetes release like v1.37.2"
[[ $ETCD_VERSION =~ ^v3\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] ||
	die "ETCD_VERSION=$ETCD_VERSION: want an etcd release like v3.6.16"
command -v flock >/dev/null 2>&1 || die "flock (util-linux) is not in PATH"

mkdir -p "$root"

# One filler per version: a second caller waits, then finds the cache ready.
exec {lock_fd}>"$root/.$KUBE_VERSION.lock"
if ! flock -n "$lock_fd"; then
	log "another kube-assets run for $KUBE_VERSION is filling the cache; waiting for it (lock $root/.$KUBE_VERSION.lock)…"
	flock "$lock_fd"
fi
if ((!rebuild)) && ready; then
	printf '%s\n' "$dir"
	exit 0
fi

# We hold the lock, so leftovers of an interrupted run are nobody's.
rm -rf "$root/.tmp-$KUBE_VERSION".* "$root/.old-$KUBE_VERSION".*

work=""
out=""
cleanup() { rm -rf "$work" "$out"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Downloads and throwaway modules live in $TMPDIR; the binaries are put next
# to the final directory (same file system) so that the last step is a rename.
work="$(mktemp -d "${TMPDIR:-/tmp}/moat-kube-assets.XXXXXX")"
out="$(mktemp -d "$root/.tmp-$KUBE_VERSION.XXXXXX")"

elapsed() {
	local s=$((SECONDS - $1))
	printf '%dm%02ds' $((s / 60)) $((s % 60))
}
t_all=$SECONDS

# runs DIR: the three binaries in DIR start and report their versions.
runs() {
	"$1/kube-apiserver" --version >&2 &&
		"$1/etcd" --version >&2 &&
		"$1/kubectl" version --client >&2
}

# --- download ----------------------------------------------------------------------
# The envtest release index (the one setup-envtest reads) is YAML of this shape:
#   releases:
#     v1.30.0:
#       envtest-v1.30.0-linux-amd64.tar.gz:
#         hash: <sha512 of the archive, hex>
#         selfLink: <URL of the archive>
# and each archive holds controller-tools/envtest/{kube-apiserver,etcd,kubectl}.

# envtest_platform: this machine as envtest names it (linux-amd64, darwin-arm64, ...).
envtest_platform() {
	local os arch
	case "$(uname -s)" in
	Linux) os=linux ;;
	Darwin) os=darwin ;;
	*) return 1 ;;
	esac
	case "$(uname -m)" in
	x86_64 | amd64) arch=amd64 ;;
	aarch64 | arm64) arch=arm64 ;;
	ppc64le) arch=ppc64le ;;
	s390x) arch=s390x ;;
	*) return 1 ;;
	esac
	printf '%s-%s\n' "$os" "$arch"
}

# index_entry ARCHIVE < INDEX: prints "HASH URL" of ARCHIVE's entry, or nothing.
index_entry() {
	awk -v want="$1" '
		function unquote(s) { gsub(/^[[:space:]"'\'']+|[[:space:]"'\'']+$/, "", s); return s }
		{ sub(/\r$/, "") }
		/^[[:space:]]*(#|$)/ { next }
		{
			match($0, /^ */); indent = RLENGTH
			line = substr($0, indent + 1)
		}
		inside && indent <= entry_indent { inside = 0 }
		!inside && line ~ /:$/ && unquote(substr(line, 1, length(line) - 1)) == want {
			inside = 1; entry_indent = indent; next
		}
		inside && line ~ /^hash:/ { sub(/^hash:/, "", line); hash = unquote(line) }
		inside && line ~ /^selfLink:/ { sub(/^selfLink:/, "", line); link = unquote(line) }
		END { if (hash != "" && link != "") print hash, link }'
}

# curl_progress LABEL: turns curl's progress meter (a line a second, ended by
# \r) into a line every few seconds with bytes and percent, or none without a
# LABEL; passes curl's other messages (errors) through.
curl_progress() {
	tr '\r' '\n' | awk -v label="$1" '
		# %total total %received received %xferd xferd dload upload time-total time-spent time-left speed
		$1 ~ /^[0-9]+$/ && NF >= 12 {
			if (label == "" || $4 == "0") next
			got = ($2 == "0" || $2 == $4) ? $4 : $4 " of " $2 " (" $3 "%)"
			if (n++ % 3 == 0) { printf "kube-assets: %s: %s, %s/s\n", label, got, $12; fflush() }
			total = $4
			next
		}
		/% Total|Dload/ || NF == 0 { next }
		{ printf "kube-assets: %s\n", $0; fflush() }
		END { if (total != "") { printf "kube-assets: %s: %s received\n", label, total; fflush() } }' >&2
}

# fetch URL FILE MAX_SECONDS LABEL: fetches URL into FILE with timeouts, and
# gives up on a transfer that stalls for a minute.
fetch() {
	{
		curl --location --fail --show-error --connect-timeout 10 --max-time "$3" \
			--speed-limit 1024 --speed-time 60 --output "$2" "$1" 2>&1 >/dev/null
	} | curl_progress "$4"
	return "${PIPESTATUS[0]}"
}

sha512_of() {
	if command -v sha512sum >/dev/null 2>&1; then
		sha512sum "$1" | cut -d' ' -f1
	else
		shasum -a 512 "$1" | cut -d' ' -f1
	fi
}

# download DIR: fills DIR from the verified envtest release archive and sets
# stamp and info; or says why not in download_error and returns 1.  It runs
# as an "if" condition, where set -e is off: every step checks itself.
download_error=""
download() {
	local tool platform archive entry hash url got f status
	local index="$work/envtest-releases.yaml" file="$work/envtest.tar.gz" unpacked="$work/envtest"
	for tool in curl tar; do
		command -v "$tool" >/dev/null 2>&1 || { download_error="$tool is not in PATH"; return 1; }
	done
	command -v sha512sum >/dev/null 2>&1 || command -v shasum >/dev/null 2>&1 ||
		{ download_error="neither sha512sum nor shasum is in PATH"; return 1; }
	platform="$(envtest_platform)" ||
		{ download_error="envtest publishes no release for $(uname -s)/$(uname -m)"; return 1; }
	archive="envtest-$KUBE_VERSION-$platform.tar.gz"

	log "looking up $archive in the envtest release index $index_url…"
	fetch "$index_url" "$index" 60 ""
	status=$?
	((status == 0)) || { download_error="cannot fetch the release index $index_url (curl exit status $status)"; return 1; }
	entry="$(index_entry "$archive" <"$index")"
	[[ -n $entry ]] || { download_error="the release index $index_url has no $archive"; return 1; }
	hash="${entry%% *}"
	url="${entry#* }"
	hash="$(tr 'A-F' 'a-f' <<<"$hash")"
	[[ $hash =~ ^[0-9a-f]{128}$ ]] || { download_error="the release index gives $archive no sha512 hash (got \"$hash\")"; return 1; }

	log "downloading $url…"
	fetch "$url" "$file" 900 "$archive"
	status=$?
	((status == 0)) || { download_error="cannot download $url (curl exit status $status)"; return 1; }
	got="$(sha512_of "$file")"
	if [[ $got != "$hash" ]]; then
		download_error="refusing $archive from $url: its sha512 is $got, but the release index says $hash"
		return 1
	fi
	log "sha512 of $archive matches the release index"

	# The whole archive: its member names may or may not begin with "./".
	{ mkdir -p "$unpacked" && tar -xzf "$file" -C "$unpacked" --no-same-owner >&2; } ||
		{ download_error="cannot unpack $archive"; return 1; }
	for f in kube-apiserver etcd kubectl; do
		[[ -f $unpacked/controller-tools/envtest/$f && ! -L $unpacked/controller-tools/envtest/$f ]] ||
			{ download_error="$archive holds no file controller-tools/envtest/$f"; return 1; }
		{ chmod 755 "$unpacked/controller-tools/envtest/$f" && mv "$unpacked/controller-tools/envtest/$f" "$1/$f"; } ||
			{ download_error="cannot move $f into $1"; return 1; }
	done
	runs "$1" || { download_error="the binaries of $archive do not run on this machine"; return 1; }

	stamp="${download_stamp_prefix}sha512=$hash"
	info="$(
		printf 'downloaded %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		printf 'from %s\n' "$url"
		printf 'listed in %s\n' "$index_url"
		printf 'sha512 %s\n' "$hash"
	)"
}

# --- build -------------------------------------------------------------------------
build() {
	if [[ -n ${MOAT_KUBE_ASSETS_BUILD_CMD:-} ]]; then
		log "building with the test hook MOAT_KUBE_ASSETS_BUILD_CMD=$MOAT_KUBE_ASSETS_BUILD_CMD instead of the Go module proxy"
		"$MOAT_KUBE_ASSETS_BUILD_CMD" "$1" >&2 || die "MOAT_KUBE_ASSETS_BUILD_CMD failed"
		info="built $(date -u +%Y-%m-%dT%H:%M:%SZ) by MOAT_KUBE_ASSETS_BUILD_CMD=$MOAT_KUBE_ASSETS_BUILD_CMD"
	else
		build_from_proxy "$1"
	fi
	runs "$1" || die "the new binaries do not run"
	stamp="$build_stamp"
}

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

# build_from_proxy DIR: compiles the three binaries into DIR and sets info.
build_from_proxy() {
	local out="$1" staging_version kube_gomod staging kmod kube_date minor kube_ldflags kube_tags
	local pkg bin step t hint etcd_gomod emod
	command -v go >/dev/null 2>&1 || die "go is not in PATH"
	# The staging modules (k8s.io/api, k8s.io/apiserver, ...) are published as
	# v0.X.Y for Kubernetes v1.X.Y.
	staging_version="v0.${KUBE_VERSION#v1.}"

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

	# --- kube-apiserver and kubectl ---
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
			printf 'replace %s => %s %s\n' "$old" "$old" "$staging_version"
		done <<<"$staging"
	} >"$kmod/go.mod"
	log "throwaway module $kmod: k8s.io/kubernetes $KUBE_VERSION + $(wc -l <<<"$staging") staging modules at $staging_version"

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
	hint=" (first time: ~10-20 minutes)"
	step=1
	for bin in kube-apiserver kubectl; do
		t=$SECONDS
		log "step $step/3: building $bin $KUBE_VERSION from the Go module proxy$hint…"
		hint=""
		"${gocmd[@]}" -C "$kmod" build -trimpath -tags="$kube_tags" -ldflags="$kube_ldflags" \
			-o "$out/$bin" "k8s.io/kubernetes/cmd/$bin" >&2 ||
			die "building $bin $KUBE_VERSION failed (throwaway module: $kmod)"
		log "step $step/3: built $bin in $(elapsed "$t")"
		step=$((step + 1))
	done

	# --- etcd ---
	# go.etcd.io/etcd/server/v3 is etcd's main package; its go.mod has replace
	# directives, so "go install ...@version" refuses it: use a throwaway module.
	t=$SECONDS
	log "step 3/3: building etcd $ETCD_VERSION from the Go module proxy…"
	etcd_gomod="$(cd "$work" && gomod_path "go.etcd.io/etcd/server/v3@$ETCD_VERSION")"
	emod="$work/etcd"
	mkdir -p "$emod"
	printf 'module moat.local/etcd-assets\n\ngo %s\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
		"$(go_directive "$etcd_gomod")" "$ETCD_VERSION" >"$emod/go.mod"
	"${gocmd[@]}" -C "$emod" build -trimpath \
		-ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
		-o "$out/etcd" go.etcd.io/etcd/server/v3 >&2 ||
		die "building etcd $ETCD_VERSION failed (throwaway module: $emod)"
	log "step 3/3: built etcd in $(elapsed "$t")"

	info="$(
		printf 'built %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		printf 'by %s\n' "$(go version)"
		printf 'k8s.io/kubernetes %s (staging modules %s)\n' "$KUBE_VERSION" "$staging_version"
		printf 'go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION"
	)"
}

if [[ $source_mode == build ]]; then
	build "$out"
elif download "$out"; then
	:
elif [[ $source_mode == download ]]; then
	die "$download_error"
else
	log "download failed: $download_error"
	log "building from the Go module proxy instead (--kube-assets-source=build skips the download)"
	rm -rf "$out" && out="$(mktemp -d "$root/.tmp-$KUBE_VERSION.XXXXXX")"
	build "$out"
fi

# --- stamp, publish ----------------------------------------------------------------
printf '%s\n' "$info" >"$out/BUILDINFO"
printf '%s\n' "$stamp" >"$out/.stamp"
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
