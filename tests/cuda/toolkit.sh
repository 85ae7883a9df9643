# Sourced by tests/cuda/*.sh: a CUDA 13.0 toolkit without a GPU or a driver, from PyPI's wheels
# (tests/cuda/requirements.txt) in the venv $CUDA_VENV (default target/cuda-venv), and the
# environment candle's and cudarc's build scripts read: CUDA_HOME / CUDA_PATH (nvcc, headers),
# PATH, CUDA_COMPUTE_CAP (default 90: the PTX is built for it and nvidia-smi is not asked) and
# CUDARC_CUDA_VERSION (13000: cudarc's bindings for CUDA 13.0).
venv=${CUDA_VENV:-target/cuda-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/cuda/requirements.txt
cuda=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -x "$cuda/bin/nvcc" ] || { echo "no nvcc at $cuda/bin/nvcc" >&2; exit 1; }
"$cuda/bin/nvcc" --version | tail -n 2
export CUDA_HOME=$cuda CUDA_PATH=$cuda PATH=$cuda/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
