#!/usr/bin/env python3
"""Drive rpcgate's test backends from Python grpcio, a second gRPC implementation.

rpcgate must be correct for any gRPC stack, not only for tonic: this client calls every
call kind, big and gzip-compressed messages, metadata, trailers, error details and the pcbook services
through TARGET (a proxy, or one backend directly) and checks every answer.

Usage: grpcio_client.py TARGET [--min-backends N]
                         [--ca F [--cert F --key F] [--server-name NAME]]
                         [--resilience | --pushback]

With --resilience it runs the resilience checks instead (for a proxy whose route retries
UNAVAILABLE): a flaky backend whose first two attempts fail is retried until OK (the
answer carries grpc-previous-rpc-attempts), and a call whose 300 ms deadline passes
while the backend sleeps ends with DEADLINE_EXCEEDED (the caller then checks that the
backend saw the cancellation).

With --pushback it checks that grpcio honours the proxy's rate-limit hint (for a route
that allows one call every 2 s): a call refused with RESOURCE_EXHAUSTED and
grpc-retry-pushback-ms is retried by grpcio's own retry policy after the pushback, not
after the policy's 10 s backoff, and succeeds.

With --ca the channel is a TLS one (grpc.secure_channel, BoringSSL: a second TLS
implementation next to rustls) trusting the CA in F; --cert/--key present a client
certificate (mutual TLS); --server-name overrides the name the server certificate is
checked against (grpc.ssl_target_name_override), e.g. localhost for a 127.0.0.1 target.
Without --ca the channel is plaintext (h2c), as before.

It generates the Python stubs from crates/demo/proto/*.proto into a temporary
directory first (with grpc_tools, no system protoc), prints one line per call with the
backend that served it, a summary line `served by: NAME=COUNT ...`, and exits 1 on the
first mismatch (2 on a usage error).
"""

import argparse
import collections
import importlib
import json
import os
import shutil
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "crates", "demo", "proto"))
PROTOS = ["helloworld.proto", "pcbook.proto"]

# Each call gets this long; a hung proxy fails the run instead of hanging it.
TIMEOUT_S = 15
# The backends accept 16 MiB messages; grpcio's default receive limit is 4 MiB.
MAX_MESSAGE = 16 * 1024 * 1024
DETAILS = bytes([0, 1, 2, 0xFF, 0x7A, 0x80])


class Mismatch(Exception):
    """An answer that differs from what the backend must have sent."""


def generate_stubs(out_dir):
    """Compile the protos into importable *_pb2 modules under out_dir."""
    for proto in PROTOS:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            os.path.join(PROTO_DIR, proto),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")
    sys.path.insert(0, out_dir)


def expect(what, got, want):
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, want {want!r}")


def md_value(metadata, key):
    """The value of key in grpc metadata (a sequence of (key, value) pairs), or None."""
    for k, v in metadata or ():
        if k == key:
            return v
    return None


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def make_channel(target, tls):
    """A plaintext channel, or a TLS one when tls (the parsed arguments) has a CA."""
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ]
    if tls is None or tls.ca is None:
        return grpc.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read_file(tls.ca),
        private_key=read_file(tls.key) if tls.key else None,
        certificate_chain=read_file(tls.cert) if tls.cert else None,
    )
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.secure_channel(target, credentials, options=options)


class Client:
    def __init__(self, target, tls=None):
        self.hw = importlib.import_module("helloworld_pb2")
        self.hw_grpc = importlib.import_module("helloworld_pb2_grpc")
        self.pc = importlib.import_module("pcbook_pb2")
        self.pc_grpc = importlib.import_module("pcbook_pb2_grpc")
        self.target = target
        self.channel = make_channel(target, tls)
        self.greeter = self.hw_grpc.GreeterStub(self.channel)
        self.auth = self.pc_grpc.AuthServiceStub(self.channel)
        self.laptops = self.pc_grpc.LaptopServiceStub(self.channel)
        self.served = collections.Counter()

    def tagged(self, what, call):
        """Check the x-backend header and trailer agree; count and return the backend."""
        backend = md_value(call.initial_metadata(), "x-backend")
        trailer = md_value(call.trailing_metadata(), "x-backend-trailer")
        if backend is None:
            raise Mismatch(f"{what}: no x-backend response header")
        expect(f"{what}: x-backend-trailer", trailer, backend)
        self.served[backend] += 1
        print(f"ok  {what:<28} served by {backend}")
        return backend

    def unary(self):
        reply, call = self.greeter.SayHello.with_call(
            self.hw.HelloRequest(name="py"), timeout=TIMEOUT_S
        )
        backend = self.tagged("unary SayHello", call)
        expect("SayHello message", reply.message, f"Hello py from {backend}")

    def server_stream(self):
        call = self.greeter.SayHelloStream(
            self.hw.HelloStreamRequest(name="py", count=5), timeout=TIMEOUT_S
        )
        messages = [reply.message for reply in call]
        backend = self.tagged("server stream (5)", call)
        expect(
            "SayHelloStream messages",
            messages,
            [f"Hello py #{i} from {backend}" for i in range(5)],
        )

    def client_stream(self):
        names = ["a", "b", "c", "d"]
        requests = (self.hw.HelloRequest(name=n) for n in names)
        reply, call = self.greeter.SayHelloClientStream.with_call(requests, timeout=TIMEOUT_S)
        backend = self.tagged("client stream (4)", call)
        expect("SayHelloClientStream message", reply.message, f"Hello a, b, c, d from {backend}")

    def bidi(self):
        names = [f"m{i}" for i in range(5)]
        call = self.greeter.SayHelloBidi(
            (self.hw.HelloRequest(name=n) for n in names), timeout=TIMEOUT_S
        )
        messages = [reply.message for reply in call]
        backend = self.tagged("bidi echo (5)", call)
        expect("SayHelloBidi messages", messages, [f"Hello {n} from {backend}" for n in names])

    def big_unary(self):
        name = "x" * (4 * 1024 * 1024)
        reply, call = self.greeter.SayHello.with_call(
            self.hw.HelloRequest(name=name), timeout=TIMEOUT_S
        )
        backend = self.tagged("unary 4 MiB", call)
        expect("4 MiB reply length", len(reply.message), len(f"Hello {name} from {backend}"))
        expect("4 MiB reply", reply.message == f"Hello {name} from {backend}", True)

    def gzip_unary(self):
        name = "z" * (64 * 1024)
        reply, call = self.greeter.SayHello.with_call(
            self.hw.HelloRequest(name=name),
            timeout=TIMEOUT_S,
            compression=grpc.Compression.Gzip,
            metadata=[("x-echo-metadata", "1")],
        )
        backend = self.tagged("unary gzip", call)
        expect("gzip reply", reply.message == f"Hello {name} from {backend}", True)
        expect(
            "grpc-encoding seen by the backend",
            md_value(call.initial_metadata(), "x-seen-grpc-encoding"),
            "gzip",
        )

    def metadata_echo(self):
        binary = bytes([0xDE, 0xAD, 0x00, 0xBE, 0xEF])
        _, call = self.greeter.SayHello.with_call(
            self.hw.HelloRequest(name="md"),
            timeout=TIMEOUT_S,
            metadata=[
                ("x-echo-metadata", "1"),
                ("x-echo-color", "blue"),
                ("x-trace-bin", binary),
            ],
        )
        self.tagged("metadata echo", call)
        headers = call.initial_metadata()
        expect("echoed x-echo-color", md_value(headers, "x-echo-color"), "blue")
        expect("echoed x-trace-bin", md_value(headers, "x-trace-bin"), binary)
        expect("te seen by the backend", md_value(headers, "x-seen-te"), "trailers")

    def failure_with_details(self):
        try:
            self.greeter.SayHello(
                self.hw.HelloRequest(name="fail"),
                timeout=TIMEOUT_S,
                metadata=[("x-fail-code", "5"), ("x-fail-details-bin", DETAILS)],
            )
        except grpc.RpcError as error:
            expect("x-fail-code 5 status", error.code(), grpc.StatusCode.NOT_FOUND)
            expect("x-fail-code 5 message", error.details(), "requested failure")
            trailers = error.trailing_metadata()
            expect(
                "grpc-status-details-bin",
                md_value(trailers, "grpc-status-details-bin"),
                DETAILS,
            )
            backend = md_value(trailers, "x-backend-trailer")
            if backend is None:
                raise Mismatch("NOT_FOUND: no x-backend-trailer") from None
            self.served[backend] += 1
            print(f"ok  {'NOT_FOUND with details':<28} served by {backend}")
            return
        raise Mismatch("x-fail-code 5: the call succeeded")

    def flaky_retried(self):
        reply, call = self.greeter.SayHello.with_call(
            self.hw.HelloRequest(name="flaky"),
            timeout=TIMEOUT_S,
            metadata=[("x-fail-code", "14"), ("x-fail-attempts", "2")],
        )
        backend = self.tagged("flaky SayHello, retried", call)
        expect("flaky SayHello message", reply.message, f"Hello flaky from {backend}")
        expect(
            "grpc-previous-rpc-attempts",
            md_value(call.initial_metadata(), "grpc-previous-rpc-attempts"),
            "2",
        )

    def pushback_honoured(self):
        """A rate-limited call is retried by grpcio after the proxy's grpc-retry-pushback-ms
        (gRFC A6), not after the policy's 10 s backoff: it succeeds well within 5 s."""
        config = json.dumps({
            "methodConfig": [{
                "name": [{"service": "helloworld.Greeter"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "10s",
                    "maxBackoff": "10s",
                    "backoffMultiplier": 1,
                    "retryableStatusCodes": ["RESOURCE_EXHAUSTED"],
                },
            }]
        })
        channel = grpc.insecure_channel(
            self.target,
            options=[("grpc.enable_retries", 1), ("grpc.service_config", config)],
        )
        greeter = self.hw_grpc.GreeterStub(channel)
        greeter.SayHello(self.hw.HelloRequest(name="first"), timeout=TIMEOUT_S)
        started = time.monotonic()
        reply, call = greeter.SayHello.with_call(
            self.hw.HelloRequest(name="second"), timeout=5
        )
        waited = time.monotonic() - started
        backend = self.tagged("rate-limited call, retried", call)
        expect("retried call message", reply.message, f"Hello second from {backend}")
        expect("waited for the pushback (0.2 s to 3 s)", 0.2 <= waited <= 3.0, True)
        print(f"ok  {'pushback honoured':<28} after {waited:.2f} s")

    def deadline_cancels(self):
        try:
            self.greeter.SayHello(
                self.hw.HelloRequest(name="slow"),
                timeout=0.3,
                metadata=[("x-delay-ms", "5000")],
            )
        except grpc.RpcError as error:
            expect("300 ms deadline", error.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
            print(f"ok  {'deadline 300 ms':<28} DEADLINE_EXCEEDED")
            return
        raise Mismatch("a 300 ms deadline over a 5 s backend delay: the call succeeded")

    def pcbook(self):
        token, call = self.auth.Login.with_call(
            self.pc.LoginRequest(username="admin1", password="secret"), timeout=TIMEOUT_S
        )
        backend = self.tagged("Login", call)
        expect("token names the backend", token.access_token.startswith(f"{backend}.admin1."), True)
        laptop = self.pc.Laptop(
            brand="Lenovo",
            name="Thinkpad X1 Carbon",
            cpu_cores=8,
            cpu_ghz=2.4,
            ram_bytes=16 << 30,
            weight_kg=1.1,
            price_usd=1999.0,
            release_year=2024,
        )
        created, call = self.laptops.CreateLaptop.with_call(
            self.pc.CreateLaptopRequest(laptop=laptop),
            timeout=TIMEOUT_S,
            metadata=[("authorization", token.access_token)],
        )
        backend = self.tagged("CreateLaptop", call)
        expect("laptop id names the backend", created.id.startswith(f"{backend}-"), True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="HOST:PORT of the proxy or a backend")
    parser.add_argument(
        "--min-backends",
        type=int,
        default=1,
        help="fail unless at least this many distinct backends served",
    )
    parser.add_argument("--ca", help="TLS: trust this CA certificate (PEM file)")
    parser.add_argument("--cert", help="TLS: client certificate (PEM file), with --key")
    parser.add_argument("--key", help="TLS: client private key (PEM file), with --cert")
    parser.add_argument(
        "--server-name", help="TLS: check the server certificate against this name"
    )
    parser.add_argument(
        "--pushback",
        action="store_true",
        help="run the rate-limit pushback check (the route allows one call every 2 s)",
    )
    parser.add_argument(
        "--resilience",
        action="store_true",
        help="run the retry and deadline checks instead of the call-kind checks",
    )
    args = parser.parse_args()
    if args.ca is None and (args.cert or args.key or args.server_name):
        parser.error("--cert, --key and --server-name need --ca")
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")

    out_dir = tempfile.mkdtemp(prefix="rpcgate-interop-")
    try:
        generate_stubs(out_dir)
        client = Client(args.target, args)
        if args.pushback:
            checks = [client.pushback_honoured]
        elif args.resilience:
            checks = [client.flaky_retried, client.deadline_cancels]
        else:
            checks = [
                client.unary,
                client.server_stream,
                client.client_stream,
                client.bidi,
                client.big_unary,
                client.gzip_unary,
                client.metadata_echo,
                client.failure_with_details,
                client.pcbook,
            ]
        try:
            for check in checks:
                check()
        except Mismatch as mismatch:
            print(f"FAIL {mismatch}", file=sys.stderr)
            return 1
        except grpc.RpcError as error:
            print(f"FAIL {check.__name__}: {error.code()} {error.details()}", file=sys.stderr)
            return 1
        finally:
            client.channel.close()
        summary = " ".join(f"{name}={count}" for name, count in sorted(client.served.items()))
        print(f"served by: {summary}")
        if len(client.served) < args.min_backends:
            print(
                f"FAIL {len(client.served)} backend(s) served, want at least {args.min_backends}",
                file=sys.stderr,
            )
            return 1
        print(f"{len(checks)} passed, 0 failed")
        return 0
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
