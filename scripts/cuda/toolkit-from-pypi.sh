#!/usr/bin/env bash
# A CUDA 13.4 toolkit from NVIDIA's PyPI wheels, enough to COMPILE the CUDA build on a machine with
# no GPU, no driver and no system toolkit (see DEVELOPERS.md, "Compiling the CUDA build").
#
#   scripts/cuda/toolkit-from-pypi.sh [PREFIX]      # default PREFIX: /tmp/cuda
#
# Makes PREFIX/venv (the wheels) and PREFIX/home, a CUDA_HOME of symlinks into the wheels plus:
# unversioned lib*.so links for the linker, and lib/stubs/libcuda.so, a link-time stand-in for the
# driver library (its SONAME is libcuda.so.1, so a built binary loads the real driver at run time).
# 13.4 because cudarc 0.19.10 (candle 0.11) knows CUDA up to 13.4 and reads the version from nvcc.
# Needs python3 (with venv) and gcc. Prints the variables to export.
set -euo pipefail

PREFIX=$(realpath -m "${1:-/tmp/cuda}")
CUDA=13.4.92
python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q \
    "nvidia-cuda-nvcc==$CUDA" "nvidia-nvvm==$CUDA" "nvidia-cuda-crt==$CUDA" \
    "nvidia-cuda-runtime==$CUDA" "nvidia-cuda-nvrtc==$CUDA" "nvidia-cuda-cccl==13.3.5.0.6" \
    "nvidia-curand==10.4.5.25" "nvidia-cublas==13.10.0.20"
WHEELS=$("$PREFIX/venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -x "$WHEELS/bin/nvcc" ] || { echo "no nvcc under $WHEELS" >&2; exit 1; }

HOME_DIR="$PREFIX/home"
rm -rf "$HOME_DIR"
mkdir -p "$HOME_DIR/lib/stubs"
for d in bin include nvvm; do ln -s "$WHEELS/$d" "$HOME_DIR/$d"; done
ln -s lib "$HOME_DIR/lib64"
for f in "$WHEELS"/lib/*; do
    name=$(basename "$f")
    ln -s "$f" "$HOME_DIR/lib/$name"
    case "$name" in *.so.*) ln -sf "$name" "$HOME_DIR/lib/${name%%.so.*}.so" ;; esac
done

# libcuda.so stub: every driver entry point cuda.h declares, under its own and its versioned name.
{
    grep -ohE 'CUresult CUDAAPI +cu[A-Za-z0-9_]+' "$WHEELS/include/cuda.h" | awk '{print $3}'
    echo '#include <cuda.h>' | gcc -E -P -I"$WHEELS/include" - \
        | grep -oE '^(extern )?CUresult +cu[A-Za-z0-9_]+ *\(' | sed -E 's/.*(cu[A-Za-z0-9_]+) *\(/\1/'
} | sort -u | awk '{print "int " $1 "(void) { return 999; /* CUDA_ERROR_UNKNOWN */ }"}' >"$HOME_DIR/lib/stubs/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$HOME_DIR/lib/stubs/libcuda.so" "$HOME_DIR/lib/stubs/cuda_stub.c"

"$HOME_DIR/bin/nvcc" --version | tail -2
cat <<MSG
Toolkit ready. To build:
  export CUDA_HOME=$HOME_DIR PATH=$HOME_DIR/bin:\$PATH CUDA_COMPUTE_CAP=80
  cargo build --release -p gallop-cli --features cuda
MSG
