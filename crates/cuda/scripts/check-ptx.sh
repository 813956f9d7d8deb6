#!/usr/bin/env bash
# Builds adanorm-cuda with `--features cuda` and assembles every embedded PTX module with ptxas
# for sm_80 and sm_90 (the compute_75 build for sm_75), failing on any register spill (or any ptxas error). Prints the per-kernel
# register report. No GPU needed. For CI:
#   bash crates/cuda/scripts/check-ptx.sh
# Env: ADANORM_PTXAS (ptxas to use; default: the one in the venv setup-cuda-build.sh makes,
#      which this script runs first), CARGO_FLAGS (extra cargo flags, e.g. --release),
#      PTX_ARCHS (default "sm_80 sm_90").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cd "$root"

# The venv also provides NVRTC for build.rs; the exports point everything at it.
eval "$("$here/setup-cuda-build.sh")"
ptxas="${ADANORM_PTXAS}"
archs="${PTX_ARCHS:-sm_80 sm_90}"

# The build script's OUT_DIR holds the PTX; cargo's JSON messages say where.
out_dir="$(cargo build -p adanorm-cuda --features cuda -j1 ${CARGO_FLAGS:-} --message-format=json \
    | python3 -c '
import json, sys
out = None
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    # package_id looks like "path+file:///.../crates/cuda#adanorm-cuda@0.1.0"
    if m.get("reason") == "build-script-executed" and "adanorm-cuda" in m.get("package_id", ""):
        out = m["out_dir"]
print(out or "")
')"
if [ -z "$out_dir" ] || ! ls "$out_dir"/adanorm_*.ptx >/dev/null 2>&1; then
    echo "check-ptx: no PTX found after the build (out_dir='$out_dir')" >&2
    exit 1
fi

status=0
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for ptx in "$out_dir"/adanorm_*.ptx; do
    module="$(basename "$ptx" .ptx)"
    # The compute_75 build (adanorm_*_cc75.ptx) is what Turing GPUs load.
    case "$module" in
        *_cc75) targets="${PTX_ARCHS_TURING:-sm_75}" ;;
        *) targets="$archs" ;;
    esac
    for arch in $targets; do
        log="$tmp/$module.$arch.log"
        if ! "$ptxas" -arch="$arch" -v -o "$tmp/$module.$arch.cubin" "$ptx" >"$log" 2>&1; then
            echo "check-ptx: ptxas failed on $module for $arch:" >&2
            cat "$log" >&2
            status=1
            continue
        fi
        # ptxas -v: "Compiling entry function 'NAME' for 'sm_90'", then
        # "N bytes stack frame, N bytes spill stores, N bytes spill loads", "Used N registers, ...".
        python3 - "$log" "$arch" "$module" <<'PY' || status=1
import re, sys
log, arch, module = sys.argv[1:]
name, rows, bad = None, [], []
for line in open(log):
    m = re.search(r"Compiling entry function '(\w+)'", line)
    if m:
        name = m.group(1)
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m and name:
        stack, st, ld = map(int, m.groups())
        rows.append([name, stack, st, ld, None])
        if st or ld:
            bad.append(name)
        continue
    m = re.search(r"Used (\d+) registers", line)
    if m and rows and rows[-1][4] is None:
        rows[-1][4] = int(m.group(1))
if not rows:
    print(f"check-ptx: no kernel report from ptxas for {module} {arch}", file=sys.stderr)
    sys.exit(1)
regs = [r[4] for r in rows]
print(f"{module:14s} {arch}: {len(rows):3d} kernels, registers {min(regs)}..{max(regs)}, "
      f"spills in {len(bad)}")
for r in rows:
    print(f"    {r[0]:28s} {r[4]:3d} regs  stack {r[1]:4d}  spill st {r[2]} ld {r[3]}")
if bad:
    print(f"check-ptx: register spills in {module} for {arch}: {', '.join(bad)}", file=sys.stderr)
    sys.exit(1)
PY
    done
done
if [ "$status" -ne 0 ]; then
    echo "check-ptx: FAILED" >&2
    exit 1
fi
echo "check-ptx: every kernel assembles for $archs (and the Turing build for sm_75) with 0 bytes spilled"
