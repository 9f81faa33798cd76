#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, including the slow test on the real model, after the lint.
# Extra arguments go to pytest (e.g. -m "not slow" for the quick tests only).
#
# Some tests start system programs for real: OpenSSH's server (the SSH remote), Chromium (the offline plots page),
# Go (the Ollama Modelfile template), and cmake + g++ build llama-cpp-python for the export stage. They are
# installed here with apt-get when that is possible (root, or passwordless sudo); otherwise the tests that need
# them skip with one line naming the package to install. Under CI=true every one of them is required: the tests
# fail instead of skipping. INSTALL_SYSTEM_PACKAGES=0 never installs anything.
set -euo pipefail
cd "$(dirname "$0")/.."

# program to look for -> the Debian package that ships it (installed before setup.sh, which builds llama.cpp)
declare -A packages=([/usr/sbin/sshd]=openssh-server [chromium]=chromium [cmake]=cmake [g++]=g++ [go]=golang-go)
missing=()
for program in "${!packages[@]}"; do
    if [ "$program" = chromium ] && command -v chromium-browser >/dev/null; then continue; fi
    command -v "$program" >/dev/null || missing+=("${packages[$program]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "${INSTALL_SYSTEM_PACKAGES:-1}" = 0 ] || ! command -v apt-get >/dev/null; then
        apt=()
    elif [ "$(id -u)" = 0 ]; then
        apt=(env)
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        apt=(sudo -n env)
    else
        apt=()
    fi
    if [ "${#apt[@]}" -gt 0 ]; then
        echo "test: installing ${missing[*]} (apt-get) for the tests that start them" >&2
        "${apt[@]}" DEBIAN_FRONTEND=noninteractive apt-get update -qq
        "${apt[@]}" DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "test: not installing ${missing[*]} (INSTALL_SYSTEM_PACKAGES=0, or no apt-get as root or passwordless" \
            "sudo): the tests that start them skip; to run them: sudo apt-get install ${missing[*]}" >&2
    fi
fi

bash scripts/setup.sh --dev
export PATH="$PWD/.venv/bin:$PATH" DVC_NO_ANALYTICS=1

# Lint and format check (config: [tool.ruff] in pyproject.toml). A finding fails the run, after the tests.
lint=0
ruff check src stages scripts tests bench || lint=1
ruff format --check src stages scripts tests bench || lint=1
[ "$lint" = 0 ] || echo "test: ruff found problems (above): ruff check --fix / ruff format fix most of them" >&2

python -m pytest "$@" && status=0 || status=$?
if [ "$status" = 0 ] && [ "$lint" != 0 ]; then
    status=1
fi
exit "$status"
