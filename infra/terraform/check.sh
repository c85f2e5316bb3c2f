#!/usr/bin/env bash
# Static checks of infra/terraform without the terraform binary:
#   (a) parse every .tf file with python-hcl2,
#   (b) run tests/test_static.py (pytest),
#   (c) run checkov on the folder twice, once per tls_termination value
#       (skips must carry a reason in the code).
# Idempotent; runnable from any directory; needs python3 (3.11) and PyPI.
# Last line: "N passed, M failed" (N = static tests passed + 1 per checkov
# pass: defaults = TLS on the NLB, tests/tls-on-node.tfvars = TLS on the nodes).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV_ROOT="$HERE/.venv"
PYTHON="${PYTHON:-python3}"

# Pinned tool versions. python-hcl2 and checkov live in separate environments:
# checkov depends on bc-python-hcl2, which installs the same `hcl2` module.
HCL_REQS=(python-hcl2==8.1.4 pytest==9.2.0)
CHECKOV_REQS=(checkov==3.3.30)

export PYTHONDONTWRITEBYTECODE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '==> %s\n' "$*"; }

finish() { # passed failed
  printf '%s passed, %s failed\n' "$1" "$2"
  if [ "$2" -eq 0 ]; then exit 0; else exit 1; fi
}

# make_venv DIR REQ...: create DIR (if needed) with exactly the pinned REQs.
make_venv() {
  local dir="$1"; shift
  local stamp="$dir/.sumu-reqs"
  local want="$*"
  if [ -x "$dir/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
     && "$dir/bin/python" -c 'import sys' >/dev/null 2>&1; then
    return 0
  fi
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  if ! "$PYTHON" -m venv "$dir" >/dev/null 2>&1; then
    # Debian without python3-venv has no ensurepip: make a bare venv and
    # bootstrap pip into it with the system pip.
    rm -rf "$dir"
    "$PYTHON" -m venv --without-pip "$dir" || return 1
    "$PYTHON" -m pip --python "$dir/bin/python" install -q pip || return 1
  fi
  "$dir/bin/python" -m pip install -q "$@" || return 1
  printf '%s' "$want" > "$stamp"
}

log "python environments under $VENV_ROOT"
if ! make_venv "$VENV_ROOT/hcl" "${HCL_REQS[@]}"; then
  echo "could not install ${HCL_REQS[*]}" >&2
  finish 0 1
fi
if ! make_venv "$VENV_ROOT/checkov" "${CHECKOV_REQS[@]}"; then
  echo "could not install ${CHECKOV_REQS[*]}" >&2
  finish 0 1
fi
HCL_PY="$VENV_ROOT/hcl/bin/python"

# (a) parse --------------------------------------------------------------------
log "parsing .tf files with python-hcl2"
if ! "$HCL_PY" - "$HERE" <<'PY'
import sys
from pathlib import Path
import hcl2
root = Path(sys.argv[1])
files = sorted(root.glob("*.tf"))
if not files:
    sys.exit("no .tf files found")
bad = 0
for f in files:
    try:
        with f.open() as fh:
            hcl2.load(fh)
    except Exception as e:  # noqa: BLE001
        bad += 1
        print(f"PARSE ERROR {f.name}: {e}")
print(f"parsed {len(files) - bad}/{len(files)} files")
sys.exit(1 if bad else 0)
PY
then
  finish 0 1
fi

# (b) static tests ---------------------------------------------------------------
log "static tests (tests/test_static.py)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$HCL_PY" -m pytest -q -p no:cacheprovider --rootdir "$HERE" \
  --junitxml "$WORK/junit.xml" "$HERE/tests/test_static.py"
read -r T_PASSED T_FAILED < <("$HCL_PY" - "$WORK/junit.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:  # noqa: BLE001 - no report means pytest did not run
    print(0, 1)
    sys.exit()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
tests = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
# a skipped static test counts as failed: none is expected to skip
print(tests - bad - skipped, bad + skipped if tests else 1)
PY
)

# (c) checkov ----------------------------------------------------------------------
# Twice: with the defaults (TLS on the NLB) and with tests/tls-on-node.tfvars
# (TLS on the nodes), so both values of tls_termination are checked.
# checkov_run LABEL [ARGS...]: 0 when checkov ran, found no failure and every
# skip carries a reason.
checkov_run() {
  local label="$1"; shift
  local out="$WORK/checkov-$label"
  mkdir -p "$out"
  log "checkov ($label)"
  # No network here: skip the guideline download and the external checks fetch.
  BC_SKIP_MAPPING=TRUE \
    "$VENV_ROOT/checkov/bin/checkov" -d "$HERE" --framework terraform \
    --skip-path '\.venv' --skip-path tests --skip-download "$@" \
    -o json >"$out/results_json.json" 2>"$out/checkov.err"
  local rc=$?
  if [ ! -f "$out/results_json.json" ]; then
    echo "checkov wrote no report (exit $rc):" >&2
    cat "$out/checkov.err" >&2
    return 1
  fi
  "$HCL_PY" - "$out/results_json.json" <<'PY' || return 1
import json
import re
import sys
data = json.load(open(sys.argv[1]))
reports = data if isinstance(data, list) else [data]
passed = failed = 0
skipped = []
for r in reports:
    s = r.get("summary", {})
    passed += s.get("passed", 0)
    failed += s.get("failed", 0)
    skipped += r.get("results", {}).get("skipped_checks", [])
print(f"checkov: {passed} passed, {failed} failed, {len(skipped)} skipped")
for r in reports:
    for c in r.get("results", {}).get("failed_checks", []):
        lines = "-".join(str(n) for n in c.get("file_line_range", []))
        print(f"  FAILED {c['check_id']} {c['resource']} ({c['file_path']}:{lines}): {c.get('check_name', '')}")
unexplained = 0
for c in skipped:
    reason = (c.get("check_result") or {}).get("suppress_comment") or ""
    print(f"  skip {c['check_id']} {c['resource']}: {reason}")
    if len(reason.strip()) < 20 or not re.search(r"[a-z]{3}", reason):
        unexplained += 1
if passed == 0:
    print("checkov checked nothing")
sys.exit(1 if failed or unexplained or passed == 0 else 0)
PY
  [ "$rc" -eq 0 ]
}

C_PASSED=0
C_FAILED=0
if checkov_run tls-on-nlb; then C_PASSED=$((C_PASSED + 1)); else C_FAILED=$((C_FAILED + 1)); fi
if checkov_run tls-on-node --var-file "$HERE/tests/tls-on-node.tfvars"; then
  C_PASSED=$((C_PASSED + 1)); else C_FAILED=$((C_FAILED + 1)); fi

finish $((T_PASSED + C_PASSED)) $((T_FAILED + C_FAILED))
