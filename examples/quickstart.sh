#!/usr/bin/env bash
# The main job on the bundled example, from a fresh clone: make a venv, install weightio with
# its frameworks, build a trained Keras regressor, convert it to a verified archive and to a
# PyTorch program, verify the archive's checksums, and show the model and its outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=example-output
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[all]'
rm -rf "$out" && mkdir -p "$out"
export TF_CPP_MIN_LOG_LEVEL=3 KERAS_BACKEND=tensorflow
.venv/bin/python examples/build_example.py "$out/regressor.keras"
echo "== Keras -> weightio archive (verified against Keras and the numpy runtime)"
.venv/bin/weightio convert "$out/regressor.keras" "$out/regressor.safetensors"
echo "== Keras -> PyTorch torch.export program (verified against Keras and the numpy runtime)"
.venv/bin/weightio convert "$out/regressor.keras" "$out/regressor.pt2"
echo "== archive integrity"
.venv/bin/weightio verify "$out/regressor.safetensors"
.venv/bin/weightio inspect "$out/regressor.safetensors"
echo "== the same inputs through Keras, PyTorch and the numpy runtime"
.venv/bin/python examples/compare_outputs.py "$out"
