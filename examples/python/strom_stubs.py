"""Generates strom's Python stubs from proto/ at start-up (into a temporary directory) and
imports them, so the examples need nothing but grpcio, grpcio-tools and the .proto files."""

import atexit
import importlib
import os
import shutil
import sys
import tempfile

from grpc_tools import protoc

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


def load_stubs():
    """Compiles strom/v1/strom.proto and imports the generated modules."""
    out = tempfile.mkdtemp(prefix="strom-stubs-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.join(PROTO_ROOT, "strom", "v1", "strom.proto"),
    ])
    if status != 0:
        sys.exit(f"protoc failed with status {status}")
    sys.path.insert(0, out)
    return importlib.import_module("strom.v1.strom_pb2"), importlib.import_module("strom.v1.strom_pb2_grpc")
