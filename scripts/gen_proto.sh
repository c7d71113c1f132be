#!/usr/bin/env bash
# Regenerate splitasr/transport/splitasr_pb2{,_grpc}.py from splitasr.proto (needs the dev
# extra: grpcio-tools). The generated files are committed, so runtime needs only grpcio
# and protobuf.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
"$PY" -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. splitasr/transport/splitasr.proto
