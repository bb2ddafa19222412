#!/usr/bin/env bash
# Runs `caucus check` with the Docker nemesis (docker kill/start, pause/unpause, network
# disconnect/connect) against the compose cluster of deploy/docker-compose.N.yml, then tears the
# cluster down with its volumes. Usage, from the repository root:
#
#   deploy/docker-check.sh [3|5] [caucus check flags...]
#   deploy/docker-check.sh 3 --workload bank --time 60s --nemesis kill,pause,partition
#
# Needs a built image (caucus:dev, see Dockerfile) and bin/caucus on the host.
set -euo pipefail
n=${1:-3}
shift || true
case $n in
3) prefix=caucus base=23790 ;;
5) prefix=caucus5 base=23890 ;;
*) echo "cluster size must be 3 or 5" >&2; exit 2 ;;
esac
compose=(docker-compose -f "$(dirname "$0")/docker-compose.$n.yml" -p "caucus$n")
endpoints=() containers=()
for i in $(seq 1 "$n"); do
	endpoints+=("http://127.0.0.1:$((base + i))")
	containers+=("$prefix-n$i")
done
join() { local IFS=,; echo "$*"; }

"${compose[@]}" up -d --no-build
trap '"${compose[@]}" down -v --remove-orphans' EXIT
# caucus check itself waits (up to 60 s) for the new cluster to elect a leader.
bin/caucus check --docker --network "caucus$n" \
	--endpoints "$(join "${endpoints[@]}")" --containers "$(join "${containers[@]}")" "$@"
