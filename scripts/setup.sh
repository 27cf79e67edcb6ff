#!/usr/bin/env bash
# Creates .venv in the repository root with medfm installed (bin/medfm).
# With --test, also installs the test tools: pytest, and the programs the tests compare
# against (dcm2niix, plastimatch) and start (PostgreSQL, Orthanc, Chromium), from Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv

# pip's output without the line this machine's local package folders print for every
# package they do not hold; pip's own exit status is kept, so a failed install stops setup.
pip_install() {
    local log status=0
    log=$(mktemp)
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" >"$log" 2>&1 || status=$?
    grep -v "is ignored" "$log" || true
    rm -f "$log"
    return "$status"
}

# torch and torchvision in one call, pinned together, so no later step swaps the build.
pip_install torch==2.14.1 torchvision==0.29.1 -e ".[test]"
.venv/bin/python -c "import medfm, torch" >/dev/null
# pyradiomics (the "frd" extra) has no wheel; its sdist builds only against the numpy
# already installed, without build isolation, and needs setuptools' bdist_wheel.
if ! .venv/bin/python -c "import radiomics, sys; sys.exit(radiomics.__version__ != 'v3.0.1')" 2>/dev/null; then
    pip_install setuptools==84.2.1 wheel==0.48.0
    pip_install --no-build-isolation pyradiomics==3.0.1
fi

if [ "$with_tests" = 1 ]; then
    missing=()
    command -v dcm2niix >/dev/null || missing+=(dcm2niix)
    command -v plastimatch >/dev/null || missing+=(plastimatch)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    # the PACS the DICOMweb tests start, and the browser the workbench tests drive
    [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
    ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1 || missing+=(orthanc-dicomweb)
    command -v chromium >/dev/null || missing+=(chromium chromium-driver)
    if [ ${#missing[@]} -gt 0 ]; then
        sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi
