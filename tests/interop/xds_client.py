#!/usr/bin/env python3
"""A proxyless gRPC client (Python grpcio, i.e. gRPC C-core's xDS client) for rpcgate's
xDS tests: it dials TARGET (xds:///NAME) with the bootstrap in $GRPC_XDS_BOOTSTRAP and
takes commands on stdin, one per line, answering each with one JSON line on stdout:

  calls N [KEY=VALUE ...]   N SayHello calls with that metadata (a VALUE of @unique is
                            a fresh one per call, for x-request-id):
                            {"served": {BACKEND: n}, "errors": {CODE: n}, "ms": slowest}
  want B1,B2 [SECONDS]      rounds of 20 calls until exactly those backends served a
                            round ("-" = a failed call): {"ok": bool, "served": {...}}
  quit

The stubs are compiled from crates/demo/proto with grpc_tools at start (no protoc).
"""

import collections
import importlib
import json
import os
import sys
import tempfile
import time
import uuid

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "crates", "demo", "proto")


def stubs(out_dir):
    args = ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}", os.path.join(PROTO_DIR, "helloworld.proto")]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out_dir)
    importlib.invalidate_caches()
    return importlib.import_module("helloworld_pb2"), importlib.import_module("helloworld_pb2_grpc")


def calls(stub, messages, n, metadata):
    served, errors = collections.Counter(), collections.Counter()
    slowest = 0.0
    for _ in range(n):
        sent = [(k, uuid.uuid4().hex if v == "@unique" else v) for k, v in metadata]
        started = time.monotonic()
        try:
            _, call = stub.SayHello.with_call(messages.HelloRequest(name="xds"), timeout=10, metadata=sent)
            served[dict(call.initial_metadata()).get("x-backend", "?")] += 1
        except grpc.RpcError as error:
            errors[error.code().name] += 1
        slowest = max(slowest, (time.monotonic() - started) * 1000)
    return {"served": dict(served), "errors": dict(errors), "ms": round(slowest)}


def main():
    target = sys.argv[1]
    with tempfile.TemporaryDirectory() as out_dir:
        messages, services = stubs(out_dir)
        channel = grpc.insecure_channel(target)
        stub = services.GreeterStub(channel)
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            if words[0] == "calls":
                metadata = [tuple(w.split("=", 1)) for w in words[2:]]
                answer = calls(stub, messages, int(words[1]), metadata)
            elif words[0] == "want":
                want = set(words[1].split(","))
                deadline = time.monotonic() + (float(words[2]) if len(words) > 2 else 30)
                while True:
                    result = calls(stub, messages, 20, [])
                    seen = set(result["served"]) | ({"-"} if result["errors"] else set())
                    if seen == want or time.monotonic() > deadline:
                        answer = {"ok": seen == want, **result}
                        break
                    time.sleep(0.05)
            else:
                answer = {"error": f"unknown command {words[0]}"}
            print(json.dumps(answer), flush=True)
        channel.close()


if __name__ == "__main__":
    main()
