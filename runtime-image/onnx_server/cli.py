"""`onnx-server`: serve a model (Open Inference Protocol v2), or fetch and verify model artifacts."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from onnx_server.bundle import Fetched, SourceFile, fetch_model
from onnx_server.errors import InvalidArgument, ServerError
from onnx_server.fetch import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, MODEL_FILE, FetchOptions
from onnx_server.peer import PeerFileServer, read_token

MESSAGE_LIMIT = 4000  # bytes; Kubernetes keeps at most 4096 of a termination message


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))


def fit_message(payload: dict[str, Any], limit: int = MESSAGE_LIMIT) -> str:
    """The payload as JSON of at most `limit` bytes, still valid: tensors are dropped from the end of the
    signature (with "signatureTruncated": true), a failure message is shortened."""
    text = _dumps(payload)
    if len(text.encode()) <= limit:
        return text
    if "signature" in payload:
        sig = {"inputs": list(payload["signature"]["inputs"]), "outputs": list(payload["signature"]["outputs"])}
        short = {**payload, "signature": sig, "signatureTruncated": True}
        while len(_dumps(short).encode()) > limit and (sig["outputs"] or sig["inputs"]):
            (sig["outputs"] or sig["inputs"]).pop()
        return _dumps(short)
    message = str(payload.get("message", ""))
    overflow = len(text.encode()) - limit
    cut = message.encode()[:max(0, len(message.encode()) - overflow - 3)].decode("utf-8", "ignore")
    return _dumps({**payload, "message": cut + "..."})


def _report(path: str | None, payload: dict[str, Any]) -> None:
    """Prints the whole result; writes the (bounded) termination message when asked."""
    print(_dumps(payload))
    if path:
        Path(path).write_text(fit_message(payload))


def _source_files(items: list[str] | None) -> list[SourceFile] | None:
    """--file PATH=SHA256, once per file (one short argument each: no single huge argument)."""
    if items is None:
        return None
    files = []
    for item in items:
        path, sep, sha256 = item.rpartition("=")
        if not sep or not path:
            raise InvalidArgument(f"--file {item!r}: expected PATH=SHA256")
        files.append(SourceFile(path, sha256))
    return files


def _peer_token(args: argparse.Namespace) -> str | None:
    if not getattr(args, "peer", None):
        return None
    if not args.peer_token_file:
        raise InvalidArgument("--peer needs --peer-token-file")
    try:
        return read_token(Path(args.peer_token_file))
    except ServerError as exc:  # the source still works: peers are an optimisation, never a requirement
        logging.getLogger(__name__).warning("peer fetch off: %s", exc.message)
        return None


def _fetch(args: argparse.Namespace) -> Fetched:
    opts = FetchOptions(pvc_root=Path(args.pvc_root), max_bytes=args.max_bytes, max_files=args.max_files,
                        stall_seconds=args.stall_seconds, retries=args.retries,
                        progress_seconds=args.progress_seconds, peer=getattr(args, "peer", None),
                        peer_token=_peer_token(args))
    return fetch_model(args.uri, Path(args.dest), args.sha256, _source_files(args.file), args.model_file, opts)


def cmd_fetch(args: argparse.Namespace) -> dict[str, Any]:
    got = _fetch(args)
    return {"path": str(got.model_path), "digest": got.digest, "sizeBytes": got.size_bytes,
            "fileCount": got.file_count, "peerFiles": got.peer_files, "peerErrors": list(got.peer_errors)}


def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    from onnx_server.model import load_session, signature  # onnxruntime only where needed

    got = _fetch(args)
    session = load_session(got.model_path, prepack=False)  # only the signature is read: no second copy
    return {"digest": got.digest, "sizeBytes": got.size_bytes, "fileCount": got.file_count,
            "signature": signature(session)}


def cmd_serve(args: argparse.Namespace) -> None:
    import logging

    from onnx_server.dataplane import DataPlane
    from onnx_server.serve import serve
    from onnx_server.settings import ServerSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ServerSettings(
            model_dir=Path(args.model_dir), name=args.name, version=args.version, host=args.host, port=args.port,
            grpc_port=None if args.no_grpc else args.grpc_port, threads=args.threads,
            max_batch_size=args.max_batch_size, max_delay_ms=args.max_delay_ms,
            warmup=not args.no_warmup, max_body_bytes=args.max_body_bytes, grace_seconds=args.grace_seconds,
            max_buffered_bytes=args.max_buffered_bytes,
            model_file=args.model_file, prepack=not args.no_prepack,
            max_connection_age_seconds=args.max_connection_age, model_deployment=args.model_deployment,
            header_timeout_seconds=args.header_timeout, body_timeout_seconds=args.body_timeout,
            min_body_bytes_per_second=args.min_body_rate, idle_timeout_seconds=args.idle_timeout,
            max_connections=args.max_connections)
    except ValueError as exc:
        raise InvalidArgument(str(exc).replace("\n", " ")) from exc
    plane = DataPlane(settings)
    plane.load()  # fail fast (exit non-zero) on a bad model, before listening
    if args.peer_port is not None:
        if not args.peer_token_file:
            raise InvalidArgument("--peer-port needs --peer-token-file")
        # its own port and thread, apart from the inference frontends; it ends with the process
        PeerFileServer(Path(args.model_dir), Path(args.peer_token_file), args.host, args.peer_port).start()
    serve(settings, plane)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnx-server", description="The generic ONNX runtime server.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve",
                           help="serve DIR/model.onnx over the Open Inference Protocol v2 (REST and gRPC)")
    serve.add_argument("--model-dir", required=True, help="folder holding model.onnx")
    serve.add_argument("--model-file", default=MODEL_FILE, help="the model's path inside --model-dir")
    serve.add_argument("--name", required=True, help="model name in the URLs")
    serve.add_argument("--version", required=True, help="model version (a metric label too)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080, help="REST port")
    serve.add_argument("--grpc-port", type=int, default=8081,
                       help="gRPC port (inference.GRPCInferenceService and grpc.health.v1); 0 picks a free one")
    serve.add_argument("--no-grpc", action="store_true", help="serve REST only")
    serve.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    serve.add_argument("--max-batch-size", type=int, default=1, help="dynamic batching: most rows per run")
    serve.add_argument("--max-delay-ms", type=float, default=5.0, help="dynamic batching: longest wait")
    serve.add_argument("--no-prepack", action="store_true",
                       help="keep weights memory-mapped (no pre-packed copy): half the peak memory of a large model")
    serve.add_argument("--no-warmup", action="store_true", help="report ready without a warm-up run")
    serve.add_argument("--max-body-bytes", type=int, default=64 << 20, help="larger bodies get HTTP 413")
    serve.add_argument("--max-buffered-bytes", type=int, default=None,
                       help="most body bytes held over all requests; others wait (default 2x --max-body-bytes)")
    serve.add_argument("--grace-seconds", type=float, default=25, help="SIGTERM: wait this long for in-flight work")
    serve.add_argument("--max-connection-age", type=float, default=30, metavar="SECONDS",
                       help="end a connection older than this (+/-10%%) after its next response (REST: Connection: "
                       "close; gRPC: GOAWAY), so keep-alive and gRPC clients rebalance across pods; 0 never does")
    serve.add_argument("--header-timeout", type=float, default=10, metavar="SECONDS",
                       help="a request's line and headers must arrive within this of its first byte (else 408)")
    serve.add_argument("--body-timeout", type=float, default=10, metavar="SECONDS",
                       help="a body may take this plus its length at --min-body-rate (else the connection closes)")
    serve.add_argument("--min-body-rate", type=int, default=64 * 1024, metavar="BYTES_PER_S",
                       help="the slowest body upload honoured")
    serve.add_argument("--idle-timeout", type=float, default=75, metavar="SECONDS",
                       help="close a keep-alive connection idle this long")
    serve.add_argument("--max-connections", type=int, default=None, metavar="N",
                       help="most open connections per protocol (default: from the memory and descriptor limits)")
    serve.add_argument("--model-deployment", default="", metavar="NAME",
                       help="the ModelDeployment served: the `modeldeployment` label of every metric")
    serve.add_argument("--peer-port", type=int, default=None,
                       help="also serve the model's files to peers of the same ModelDeployment on this port")
    serve.add_argument("--peer-token-file", default=None, help="the token peers must present (a mounted Secret)")
    serve.set_defaults(run=cmd_serve)
    for name, helptext in (("fetch", "download and check a model (one file, an archive or a folder) into DEST"),
                           ("verify", "fetch, load with onnxruntime, print the signature as JSON")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--uri", required=True,
                       help="https://, s3://bucket/key, pvc://claim/path or file://; a .tar, .tar.gz, .tgz or .zip "
                       "is extracted; a folder ends in '/' and needs --file")
        p.add_argument("--sha256", help="expected hex SHA-256 of the file or archive")
        p.add_argument("--file", action="append", metavar="PATH=SHA256",
                       help="a folder's file and its hex SHA-256; once per file, only these are fetched")
        p.add_argument("--model-file", default=MODEL_FILE, help="the model's path among the files")
        p.add_argument("--dest", default="/tmp/model", help="folder to place the model's files in")
        p.add_argument("--pvc-root", default="/mnt/pvc", help="where pvc:// claims are mounted")
        p.add_argument("--termination-message-path", help="also write the JSON result here (at most 4000 bytes)")
        p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                       help="refuse more bytes in all (downloaded or extracted): TooLarge")
        p.add_argument("--max-files", type=int, default=DEFAULT_MAX_FILES, help="refuse more files: TooLarge")
        p.add_argument("--stall-seconds", type=float, default=60.0,
                       help="a transfer that receives nothing for this long is retried, then FetchFailed")
        p.add_argument("--retries", type=int, default=3, help="retries of a transient network failure (resumed)")
        p.add_argument("--progress-seconds", type=float, default=10.0, help="log bytes and rate this often")
        if name == "fetch":
            p.add_argument("--peer", default=None, metavar="URL",
                           help="http://HOST:PORT of Ready pods of the same version: each pinned file is tried "
                           "there first and kept only if its sha256 matches; else the source")
            p.add_argument("--peer-token-file", default=None, help="the token the peers ask for")
        p.set_defaults(run=cmd_fetch if name == "fetch" else cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    msg_path = getattr(args, "termination_message_path", None)
    if args.command != "serve":  # progress and retries go to stderr; stdout keeps the one JSON result
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        result = args.run(args)
    except ServerError as exc:
        _report(msg_path, {"reason": exc.reason, "message": exc.message})
        return exc.exit_code
    if result is not None:
        _report(msg_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
