#!/usr/bin/env bash
# Run the whole test suite, installing what it needs first.  Works on a fresh
# Debian 12 machine (as root, or as a user with sudo) and on a developer machine:
#
#   1. apt: installs the packages in tests/apt-packages.txt that are missing
#      (no apt-get at all when everything is installed);
#   2. .venv: creates it with "python3 -m venv" unless a working one exists;
#   3. pip: installs the project with "pip install -e .[test,dev]", skipped when
#      setup.cfg and pyproject.toml have not changed since the last run;
#   4. ruff check, ruff format --check, mypy and trial, all of them even when one
#      fails; the exit status is non-zero if any failed.  After trial it prints
#      how many tests ran and how many were skipped (with CI=true any skip fails
#      the run; tests/support/skips.py already fails such tests), then the line
#      coverage per package of litedesk, measured in trial's workers and in every
#      Python process the tests start (a figure, no threshold).
#
# Environment: PYTHON (interpreter for the venv, default python3), TRIAL_JOBS
# (trial -j, default 2), TRIAL_TIMEOUT (seconds, default 1200), CI (true: a
# skipped test is a failure), COVERAGE (0: run without coverage),
# LITEDESK_TEST_ARTIFACTS (where failed browser tests keep screenshots and page
# sources; default _trial_temp-artifacts, emptied first; printed when not empty).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '==> %s\n' "$*"; }

# 1. Debian packages.
if command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for pkg in $(sed -e 's/#.*//' tests/apt-packages.txt); do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -qx 'install ok installed' ||
            missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        if [ "$(id -u)" -eq 0 ]; then
            as_root=(env)
        elif command -v sudo >/dev/null 2>&1; then
            as_root=(sudo env)
        else
            echo "tests/run.sh: need root to install: ${missing[*]}" >&2
            exit 1
        fi
        say "apt-get install ${missing[*]}"
        "${as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get update -q
        "${as_root[@]}" DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
else
    echo "tests/run.sh: no dpkg-query, not installing tests/apt-packages.txt" >&2
fi

# 2. The virtualenv.
venv=.venv
py=$venv/bin/python
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "${PYTHON:-python3} -m venv $venv"
    "${PYTHON:-python3}" -m venv --clear "$venv" || {
        echo "tests/run.sh: creating $venv failed (Debian's python3 needs python3-venv)" >&2
        exit 1
    }
fi

# 3. The project and its test/dev tools.  setuptools and wheel are needed in the
# venv itself: tests/test_packaging.py builds with --no-build-isolation.
stamp=$venv/.litedesk-install-stamp
want=$( (echo "v1 $PWD"; cat setup.cfg pyproject.toml) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "pip install -e .[test,dev]"
    rm -f "$stamp"
    "$py" -m pip install -q --upgrade pip 'setuptools>=64' wheel
    "$py" -m pip install -q -e '.[test,dev]'
    echo "$want" >"$stamp"
fi

# 4. Checks.
failed=()
check() {
    local name=$1
    shift
    say "$name"
    "$@" || failed+=("$name")
}
src=(litedesk tests twisted)
compgen -G 'bench/*.py' >/dev/null && src+=(bench)
check "ruff check" "$py" -m ruff check "${src[@]}"
check "ruff format --check" "$py" -m ruff format --check "${src[@]}"
check "mypy" "$py" -m mypy "${src[@]}"

# Coverage of subprocesses: a .pth file in the venv starts coverage in every
# Python process that has COVERAGE_PROCESS_START in its environment (trial's -j
# workers, twistd, viewers); each writes its own data file under $cov_data,
# named by an absolute path because the processes run in other directories.
cov_data=$PWD/.coverage-data
if [ "${COVERAGE:-1}" != 0 ]; then
    rm -rf "$cov_data"
    mkdir -p "$cov_data"
    site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo 'import os; exec("try:\n import coverage\nexcept ImportError:\n pass\nelse:\n coverage.process_startup()") if os.environ.get("COVERAGE_PROCESS_START") else None' \
        >"$site/litedesk-test-coverage.pth"
    export COVERAGE_PROCESS_START=$PWD/setup.cfg COVERAGE_FILE=$cov_data/data
fi

# Failed browser scripts keep a screenshot and the page source here
# (tests/support/browser.py); the directory is printed at the end when not empty.
if [ -z "${LITEDESK_TEST_ARTIFACTS:-}" ]; then
    export LITEDESK_TEST_ARTIFACTS=$PWD/_trial_temp-artifacts
    rm -rf "$LITEDESK_TEST_ARTIFACTS"
fi

# Count what ran and what was skipped from trial's summary; in CI any skip fails
# the run (tests/support/trial_summary.py).
trial_log=$(mktemp)
trap 'rm -f "$trial_log"' EXIT
run_trial() {
    local status=0
    timeout -s INT -k 30 "${TRIAL_TIMEOUT:-1200}" \
        "$py" -m twisted.trial -j "${TRIAL_JOBS:-2}" tests 2>&1 | tee "$trial_log" ||
        status=$?
    env -u COVERAGE_PROCESS_START "$py" -m tests.support.trial_summary "$trial_log" || status=1
    return "$status"
}
check "trial -j${TRIAL_JOBS:-2} tests" run_trial

if [ "${COVERAGE:-1}" != 0 ]; then
    say "line coverage per package"
    unset COVERAGE_PROCESS_START
    "$py" -m coverage combine -q "$cov_data" &&
        "$py" -m tests.support.coverage_table "$cov_data/data" ||
        echo "tests/run.sh: no coverage figures (see above)" >&2
fi

if [ -n "$(ls -A "$LITEDESK_TEST_ARTIFACTS" 2>/dev/null)" ]; then
    say "failed browser tests' screenshots and page sources: $LITEDESK_TEST_ARTIFACTS"
fi

if ((${#failed[@]})); then
    printf 'tests/run.sh: FAILED: %s\n' "$(IFS=,; echo "${failed[*]}")" >&2
    exit 1
fi
