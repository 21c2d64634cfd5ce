#!/usr/bin/env bash
# The main job on the bundled example, from a fresh clone: make a venv, install weightio with
# its frameworks, build a trained Keras regressor, convert it to a verified archive and to a
# PyTorch program, verify the archive's checksums, and show the model and its outputs.
# WEIGHTIO_PYTHON=/path/to/python skips the venv and uses that interpreter (the test does);
# WEIGHTIO_EXAMPLE_OUT sets the output folder (default example-output).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${WEIGHTIO_EXAMPLE_OUT:-example-output}
py=${WEIGHTIO_PYTHON:-}
if [ -z "$py" ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[all]'
    py=.venv/bin/python
fi
rm -rf "$out" && mkdir -p "$out"
export KERAS_BACKEND=tensorflow  # TensorFlow's start-up log: weightio keeps it off the output
"$py" examples/build_example.py "$out/regressor.keras"
echo "== Keras -> weightio archive (verified against Keras and the numpy runtime)"
"$py" -m weightio convert "$out/regressor.keras" "$out/regressor.safetensors"
echo "== Keras -> PyTorch torch.export program (verified against Keras and the numpy runtime)"
"$py" -m weightio convert "$out/regressor.keras" "$out/regressor.pt2"
echo "== archive integrity"
"$py" -m weightio verify "$out/regressor.safetensors"
"$py" -m weightio inspect "$out/regressor.safetensors"
echo "== the same inputs through Keras, PyTorch and the numpy runtime"
"$py" examples/compare_outputs.py "$out"
