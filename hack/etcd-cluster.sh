#!/usr/bin/env bash
# etcd-cluster.sh: try moat lb on several machines, on one. It starts three "machines", network
# namespaces joined by a bridge in this one, each running an etcd member (the three form one
# cluster) and a moat lb node with --store on that cluster; prints how to reach each node's API
# with the AWS CLI; and tears everything down on Ctrl-C (or when it ends).
#
#   sudo hack/etcd-cluster.sh
#
# Machine i (1-3) is <prefix>-<i>, address <subnet>.1<i>/24 on its eth0; this namespace is
# <subnet>.1 on the bridge <prefix>br. On each: etcd (clients :2379, peers :2380, /health :2381)
# and moat lb (API :7080, DNS :7053, metrics and console :7090), its data dir in the temporary
# directory printed. Each node writes its own credentials file there.
#
# Flags:
#   --check         start, check that every node answers, that a group created through node 1 is
#                   read through nodes 2 and 3 (one store), then tear down and exit: 0 if all
#                   answered
#   --moat BIN      moat binary (default: build ./cmd/moat into bin/moat)
#   --etcd BIN      etcd binary (default: the kube assets' etcd, in $KUBEBUILDER_ASSETS or
#                   ${XDG_CACHE_HOME:-$HOME/.cache}/moat/kube/${KUBE_VERSION:-v1.37.2}; run
#                   hack/kube-assets.sh to fill it)
#   --prefix NAME   names of the namespaces and links (default moatc; at most 8 characters)
#   --subnet A.B.C  the /24 the machines are on (default 198.19.77)
# Needs root (namespaces, links), iproute2 and curl (7.75 or later, for --check's signed calls).
set -euo pipefail
cd "$(dirname "$0")/.."

check=0 moat="" etcd="" prefix=moatc subnet=198.19.77
log() { printf 'etcd-cluster: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
while (($#)); do
	case $1 in
	--check) check=1 ;;
	--moat | --etcd | --prefix | --subnet)
		(($# >= 2)) || die "$1 needs a value"
		declare "${1#--}=$2"
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
((EUID == 0)) || die "needs root, for network namespaces"
((${#prefix} <= 8)) || die "--prefix $prefix: at most 8 characters (link names are limited to 15)"
[[ $subnet =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--subnet $subnet: want the first three numbers of a /24, e.g. 198.19.77"

if [[ -z $etcd ]]; then
	for dir in ${KUBEBUILDER_ASSETS:-} "${XDG_CACHE_HOME:-$HOME/.cache}/moat/kube/${KUBE_VERSION:-v1.37.2}"; do
		[[ -x $dir/etcd ]] && etcd=$dir/etcd && break
	done
	[[ -n $etcd ]] || die "no etcd in \$KUBEBUILDER_ASSETS or the kube assets cache: run hack/kube-assets.sh, or give --etcd"
fi
if [[ -z $moat ]]; then
	mkdir -p bin
	go build -o bin/moat ./cmd/moat
	moat=bin/moat
fi
moat=$(realpath "$moat") etcd=$(realpath "$etcd")

work=$(mktemp -d "${TMPDIR:-/tmp}/etcd-cluster.XXXXXX")
pids=()
teardown() {
	local status=$?
	trap - EXIT INT TERM HUP
	((${#pids[@]})) && kill -9 "${pids[@]}" 2>/dev/null
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	for i in 1 2 3; do ip netns del "$prefix-$i" 2>/dev/null || true; done
	ip link del "${prefix}br" 2>/dev/null || true
	rm -rf "$work"
	log "torn down"
	exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM HUP

addr() { echo "$subnet.1$1"; }

# The machines: a namespace each, its eth0 on the bridge.
ip link add "${prefix}br" type bridge
ip addr add "$subnet.1/24" dev "${prefix}br"
ip link set "${prefix}br" up
for i in 1 2 3; do
	ns=$prefix-$i
	ip netns add "$ns"
	ip link add "${prefix}${i}h" type veth peer name "${prefix}${i}n"
	ip link set "${prefix}${i}h" master "${prefix}br" up
	ip link set "${prefix}${i}n" netns "$ns"
	ip -n "$ns" link set "${prefix}${i}n" name eth0
	ip -n "$ns" addr add "$(addr "$i")/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" link set lo up
done

# etcd, one member per machine.
initial=() endpoints=()
for i in 1 2 3; do
	initial+=("m$i=http://$(addr "$i"):2380")
	endpoints+=("$(addr "$i"):2379")
done
for i in 1 2 3; do
	a=$(addr "$i")
	ip netns exec "$prefix-$i" "$etcd" --name "m$i" --data-dir "$work/etcd-$i" \
		--listen-client-urls "http://$a:2379" --advertise-client-urls "http://$a:2379" \
		--listen-peer-urls "http://$a:2380" --initial-advertise-peer-urls "http://$a:2380" \
		--listen-metrics-urls "http://$a:2381" --initial-cluster "$(
			IFS=,
			echo "${initial[*]}"
		)" \
		--initial-cluster-state new --log-level warn >"$work/etcd-$i.log" 2>&1 &
	pids+=($!)
done

# await URL WHAT LOG: poll URL until it answers 200, for up to a minute.
await() {
	for _ in $(seq 600); do
		curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	log "$2 did not answer $1 within a minute; the end of its log ($3):"
	tail -20 "$3" >&2
	exit 1
}
for i in 1 2 3; do await "http://$(addr "$i"):2381/health" "etcd member $i" "$work/etcd-$i.log"; done
log "etcd: 3 members healthy on $(
	IFS=,
	echo "${endpoints[*]}"
)"

# moat lb, one node per machine, all on the one cluster.
for i in 1 2 3; do
	a=$(addr "$i")
	ip netns exec "$prefix-$i" "$moat" lb --data-dir "$work/node-$i" \
		--store "etcd://$(
			IFS=,
			echo "${endpoints[*]}"
		)" \
		--api-addr "$a:7080" --dns-addr "$a:7053" --metrics-addr "$a:7090" >"$work/node-$i.log" 2>&1 &
	pids+=($!)
done
for i in 1 2 3; do await "http://$(addr "$i"):7090/readyz" "moat lb node $i" "$work/node-$i.log"; done

# credential N FIELD: a field of node N's credentials file.
credential() { awk -F' *= *' -v k="$2" '$1 == k { print $2; exit }' "$work/node-$1/credentials"; }
# ec2 N QUERY: an EC2 API call to node N, signed with its credentials; prints the XML answer.
ec2() {
	curl -fsS --max-time 15 --aws-sigv4 "aws:amz:us-east-1:ec2" \
		--user "$(credential "$1" aws_access_key_id):$(credential "$1" aws_secret_access_key)" \
		--data "$2&Version=2016-11-15" "http://$(addr "$1"):7080/"
}

if ((check)); then
	name=etcd-cluster-check-$$
	ec2 1 "Action=CreateSecurityGroup&GroupName=$name&GroupDescription=check" >/dev/null ||
		die "node 1 did not create a group"
	for i in 1 2 3; do
		ec2 "$i" "Action=DescribeSecurityGroups&Filter.1.Name=group-name&Filter.1.Value.1=$name" | grep -q "<groupName>$name</groupName>" ||
			die "node $i does not read the group created through node 1"
		log "node $i: ready, and reads the group created through node 1"
	done
	exit 0
fi

cat <<EOF

Three moat lb nodes on one 3-member etcd cluster, in namespaces $prefix-1..3 (logs and data in $work):

EOF
for i in 1 2 3; do
	a=$(addr "$i")
	cat <<EOF
node $i: API http://$a:7080, DNS $a:7053, console http://$a:7090
  AWS_SHARED_CREDENTIALS_FILE=$work/node-$i/credentials aws --region us-east-1 --endpoint-url http://$a:7080 ec2 describe-security-groups
EOF
done
cat <<EOF

Every node serves the whole API on the one store: create through one, read through another.
To watch the others carry on, kill -9 an etcd member (pids ${pids[0]}, ${pids[1]}, ${pids[2]}) or a node
(pids ${pids[3]}, ${pids[4]}, ${pids[5]}). Ctrl-C tears everything down.
EOF
wait
