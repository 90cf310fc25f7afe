#!/usr/bin/env python3
"""A look-aside client in Python (grpcio): watches one cluster on rpcgate's admin address
and prints each endpoint set it is sent, one JSON line per message.

    python3 examples/lookaside_client.py --admin 127.0.0.1:9901 --cluster laptop

A real thick client would keep the healthy endpoints (weighted) and pick one per call
(all of them when none is healthy, as rpcgate does); here they are printed, the ones to
use under "use". The stubs are compiled from proto/rpcgate/lookaside/v1/ at start
with grpc_tools (pip install grpcio grpcio-tools), so no protoc is needed.

Exit codes: 0 after --count messages (or the stream ending), 3 for an unknown cluster
(NOT_FOUND), 1 when rpcgate cannot be reached or --timeout passes (DEADLINE_EXCEEDED).
"""

import argparse
import importlib
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "proto")
PROTO = "rpcgate/lookaside/v1/lookaside.proto"


def stubs(out_dir):
    """Compiles the look-aside proto into importable modules under out_dir."""
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        os.path.join(PROTO_ROOT, PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")
    sys.path.insert(0, out_dir)
    messages = importlib.import_module("rpcgate.lookaside.v1.lookaside_pb2")
    services = importlib.import_module("rpcgate.lookaside.v1.lookaside_pb2_grpc")
    return messages, services


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin", default="127.0.0.1:9901", help="rpcgate's admin.address")
    parser.add_argument("--cluster", required=True, help="the cluster's name in rpcgate.toml")
    parser.add_argument("--count", type=int, default=0, help="stop after this many messages (0: never)")
    parser.add_argument("--timeout", type=float, default=0, help="give up after this many seconds (0: never)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out_dir:
        messages, services = stubs(out_dir)
        with grpc.insecure_channel(args.admin) as channel:
            watch = services.LookasideStub(channel).Watch(
                messages.WatchRequest(cluster=args.cluster),
                timeout=args.timeout or None,
            )
            seen = 0
            try:
                for endpoint_set in watch:
                    print(
                        json.dumps(
                            {
                                "cluster": endpoint_set.cluster,
                                "version": endpoint_set.version,
                                "endpoints": [
                                    {"address": e.address, "weight": e.weight, "healthy": e.healthy}
                                    for e in endpoint_set.endpoints
                                ],
                                "use": [e.address for e in endpoint_set.endpoints if e.healthy]
                                or [e.address for e in endpoint_set.endpoints],
                            }
                        ),
                        flush=True,
                    )
                    seen += 1
                    if args.count and seen >= args.count:
                        watch.cancel()
                        return 0
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.CANCELLED and args.count and seen >= args.count:
                    return 0
                print(f"{error.code().name}: {error.details()}", file=sys.stderr)
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return 3
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
