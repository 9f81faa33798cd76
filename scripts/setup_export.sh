#!/usr/bin/env bash
# llama.cpp for the export stage and `identity-dpo chat --model X.gguf`, into .venv (made by scripts/setup.sh):
#  - llama-cpp-python, built from its source distribution for a portable x86-64 target: the native build on an
#    AVX-512/AMX Intel host segfaulted on every quantized GGUF; AVX2/FMA/F16C runs on every host CI lands on;
#  - llama.cpp's converter (convert_hf_to_gguf.py + gguf-py + conversion/) unpacked once from the same source
#    distribution into ${XDG_CACHE_HOME:-~/.cache}/identity-dpo/ (where identity_dpo.export looks for it).
# Without cmake and a C++ compiler it says so in one line and exits 0 (the export stage and its tests then say
# what is missing); INSTALL_BUILD_TOOLS=1 installs them with apt-get first (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."

py=.venv/bin/python
version=$(sed -n 's/^llama-cpp-python==//p' requirements-export.txt)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/identity-dpo"
src="$cache/llama_cpp_python-$version"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"

if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then
    if [ "${INSTALL_BUILD_TOOLS:-0}" = 1 ] && command -v apt-get >/dev/null; then
        apt-get install -y -qq --no-install-recommends cmake g++ >/dev/null
    else
        echo "setup: llama-cpp-python not built: it needs cmake and g++ (apt-get install cmake g++, or INSTALL_BUILD_TOOLS=1); the export stage and its tests need it" >&2
        exit 0
    fi
fi

# The converter, from the source distribution (downloaded by pip, unpacked once).
if [ ! -f "$src/vendor/llama.cpp/convert_hf_to_gguf.py" ]; then
    mkdir -p "$cache"
    tarball="$cache/llama_cpp_python-$version.tar.gz"
    if [ ! -f "$tarball" ]; then
        "$py" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
            "llama-cpp-python==$version" -d "$cache" 2> >(grep -v "is ignored: it is neither" >&2)
    fi
    tmp=$(mktemp -d "$cache/.unpack-XXXXXX")
    tar -xzf "$tarball" -C "$tmp" "llama_cpp_python-$version/vendor/llama.cpp/convert_hf_to_gguf.py" \
        "llama_cpp_python-$version/vendor/llama.cpp/gguf-py" "llama_cpp_python-$version/vendor/llama.cpp/conversion" \
        "llama_cpp_python-$version/vendor/llama.cpp/LICENSE"
    rm -rf "$src"
    mv "$tmp/llama_cpp_python-$version" "$src"   # complete or absent, never half unpacked
    rmdir "$tmp"
    rm -f "$tarball"
fi

# The bindings: pip's wheel cache keeps the built wheel, so only the first run compiles.
if ! "$py" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama-cpp-python') != '$version')" 2>/dev/null; then
    echo "setup: building llama-cpp-python $version from source (CMAKE_ARGS=$CMAKE_ARGS; a few minutes, the first time only)" >&2
fi
"$py" -m pip install --quiet --disable-pip-version-check -r requirements-export.txt
"$py" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__, '| converter', '$src/vendor/llama.cpp')"
