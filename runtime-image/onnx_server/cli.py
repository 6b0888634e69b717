"""`onnx-server`: fetch and verify model artifacts (serving lands with the runtime-server work)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from onnx_server.errors import ServerError
from onnx_server.fetch import fetch

MESSAGE_LIMIT = 4000


def _write_message(path: str | None, payload: dict[str, Any]) -> str:
    text = json.dumps(payload, separators=(",", ":"))
    if len(text) > MESSAGE_LIMIT and "signature" in payload:
        payload = {**payload, "signature": {"inputs": [], "outputs": []}, "signatureTruncated": True}
        text = json.dumps(payload, separators=(",", ":"))
    if path:
        Path(path).write_text(text[:MESSAGE_LIMIT])
    return text


def cmd_fetch(args: argparse.Namespace) -> dict[str, Any]:
    target, size = fetch(args.uri, args.sha256, Path(args.dest), Path(args.pvc_root))
    return {"path": str(target), "sizeBytes": size, "digest": f"sha256:{args.sha256.lower()}"}


def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    from onnx_server.model import load_session, signature  # onnxruntime only where needed

    target, size = fetch(args.uri, args.sha256, Path(args.dest), Path(args.pvc_root))
    session = load_session(target)
    return {"digest": f"sha256:{args.sha256.lower().removeprefix('sha256:')}", "sizeBytes": size,
            "signature": signature(session)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnx-server", description="The generic ONNX runtime server.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("fetch", "download and check a model into DEST/model.onnx"),
                           ("verify", "fetch, load with onnxruntime, print the signature as JSON")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--uri", required=True, help="https://, s3://bucket/key, pvc://claim/path or file://")
        p.add_argument("--sha256", required=True, help="expected hex SHA-256 of the file")
        p.add_argument("--dest", default="/tmp/model", help="folder to write model.onnx into")
        p.add_argument("--pvc-root", default="/mnt/pvc", help="where pvc:// claims are mounted")
        p.add_argument("--termination-message-path", help="also write the JSON result here")
        p.set_defaults(run=cmd_fetch if name == "fetch" else cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    msg_path = getattr(args, "termination_message_path", None)
    try:
        result = args.run(args)
    except ServerError as exc:
        print(_write_message(msg_path, {"reason": exc.reason, "message": exc.message}))
        return exc.exit_code
    print(_write_message(msg_path, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
