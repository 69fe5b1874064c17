#!/usr/bin/env bash
# Time the CI command on fresh clones of this checkout's HEAD, one after another (the first may
# make the shared environments, the later ones show the cache), and write the figures as JSON.
#   bash scripts/time_suite.sh OUT.json [RUNS]     (default 2 runs; logs in /tmp)
set -euo pipefail
OUT=$(realpath -m "$1"); RUNS="${2:-2}"
cd "$(dirname "$0")/.."
SRC=$PWD
runs=()
for i in $(seq 1 "$RUNS"); do
    dir=$(mktemp -d /tmp/tik-suite-XXXXXX)
    git clone -q "$SRC" "$dir/clone"
    log="/tmp/$(basename "$OUT" .json)-run$i.log"
    load_before=$(cut -d' ' -f1 /proc/loadavg)
    start=$(date +%s.%N)
    rc=0; (cd "$dir/clone" && CI=true bash .ci/run -q -p no:cacheprovider) > "$log" 2>&1 || rc=$?
    end=$(date +%s.%N)
    runs+=("$i $rc $start $end $load_before $(cut -d' ' -f1 /proc/loadavg) $log")
    rm -rf "$dir"
done
# The runs go in through a variable: the script itself is python's stdin (the here-document).
RUNS_TEXT=$(printf '%s\n' "${runs[@]}") python3 - "$OUT" "$(git rev-parse HEAD)" "$(nproc)" "$1 $RUNS" <<'EOF'
import json, os, re, sys
out, commit, cores, given = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
runs = []
for line in os.environ["RUNS_TEXT"].split("\n"):
    if not line:
        continue
    i, rc, start, end, load0, load1, log = line.split(" ", 6)
    text = open(log).read()
    # pytest's last line: "=== 451 passed, 15 skipped in 515.31s ===", without the rules under -q
    found = re.findall(r"^=*\s*(\d+ (?:passed|failed).*?) in ([\d.]+)s", text, re.M)
    summary = found[-1] if found else ("no pytest summary: see " + log, "nan")   # setup failed
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", summary[0])}
    wall = float(end) - float(start)
    runs.append({"run": int(i), "exit_code": int(rc), "wall_s": round(wall, 1),
                 "pytest_s": float(summary[1]), "setup_s": round(wall - float(summary[1]), 1),
                 "load_average_before": float(load0), "load_average_after": float(load1), **counts})
json.dump({"command": "bash scripts/time_suite.sh " + given, "commit": commit,
           "each_run": "git clone HEAD into a new folder; time CI=true bash .ci/run -q -p no:cacheprovider",
           "machine": f"{cores}-core x86 VM, no GPU, shared with other work (load averages recorded)",
           "runs": runs}, open(out, "w"), indent=1)
print(open(out).read())
EOF
