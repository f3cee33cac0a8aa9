# How many bytes `dvc push` sends to a remote and `dvc pull` brings back, and how long each takes:
# the DVC outputs of a finished pipeline run in SRC (read only; default: this checkout), tracked with
# `dvc add` in a scratch git + DVC repo, pushed to a fresh local-directory remote, then pulled into a
# fresh clone (empty cache); three rounds each of the export alone, the export and the raw pairs (the
# two artifacts of dvc.yaml), and every output. Prints one line a round, then each output's size; sizes
# are the bytes of the files (directories' own entries left out):
#   bash benchmarks/remote_transfer.sh [SRC]   (about a minute; a local remote: disk, not network)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC=$(cd "${1:-$ROOT}" && pwd)
W=$(mktemp -d /tmp/remote_transfer.XXXX)
export PATH="$ROOT/.venv/bin:$PATH" DVC_NO_ANALYTICS=1
export GIT_AUTHOR_NAME=m GIT_AUTHOR_EMAIL=m@example.com GIT_COMMITTER_NAME=m GIT_COMMITTER_EMAIL=m@example.com
mkdir -p "$W/repo/data" "$W/repo/models"; cd "$W/repo"
git init -q; dvc init -q
outs=""
for out in models/export data/raw data/tokenized data/eval models/reverse models/best.safetensors models/best.json; do
  if [ -e "$SRC/$out" ]; then cp -a "$SRC/$out" "$out"; outs="$outs $out"; fi
done
dvc add -q $outs; git add -A; git commit -qm outputs
now() { date +%s.%N; }
bytes() { find "$@" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
for what in "models/export.dvc" "models/export.dvc data/raw.dvc" ""; do
  for i in 1 2 3; do
    remote=$W/remote-$(echo "$what" | tr ' /.' '___')-$i
    dvc remote add --local -f x "$remote" >/dev/null
    s=$(now); dvc push -q -r x $what; e=$(now)
    git clone -q "$W/repo" "$W/clone"; cd "$W/clone"; dvc remote add --local -f x "$remote" >/dev/null
    s2=$(now); dvc pull -q -r x $what; e2=$(now); cd "$W/repo"
    printf '%s, round %d: push %.2f s, %d bytes in %d files on the remote; pull %.2f s\n' "${what:-every output}" "$i" \
      "$(echo "$e - $s" | bc)" "$(bytes "$remote")" "$(find "$remote" -type f | wc -l)" "$(echo "$e2 - $s2" | bc)"
    rm -rf "$W/clone"
  done
done
for out in $outs; do echo "$out: $(bytes "$out") bytes in $(find "$out" -type f | wc -l) files"; done
rm -rf "$W"
