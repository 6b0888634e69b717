"""The floors under onnx-server, for runtime_bench.py and grpc_bench.py: what the HTTP server and the gRPC
library cost alone, measured in the same run as onnx-server so its own per-request cost is the difference.

    python bench/floor.py rest --port P   a raw ASGI app under uvicorn + httptools + uvloop (onnx-server's
                                          stack) that reads the body and answers a fixed 90-byte JSON
    python bench/floor.py grpc --port P   a bare grpc.aio servicer whose ModelInfer answers a fixed
                                          ModelInferResponse (and ServerReady/ModelReady, for readiness)

Both answer GET /v2/models/{name}/ready (REST) so servers.BenchServer can wait for them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "runtime-image"))

# 90 bytes, the size of the tiny MLP's JSON answer
BODY = b'{"model_name":"m","model_version":"1","outputs":[{"name":"y","shape":[2],"data":[0.5,1]}]}'
assert len(BODY) == 90, len(BODY)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers BODY; 200 for any path (readiness included)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def serve_rest(port: int) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, http="httptools",
                loop="uvloop", lifespan="on")


async def serve_grpc(port: int, ready_port: int) -> None:
    import grpc
    import uvicorn
    from onnx_server.proto import inference_pb2 as pb
    from onnx_server.proto import inference_pb2_grpc as pb_grpc

    answer = pb.ModelInferResponse(model_name="m", model_version="1", outputs=[
        pb.ModelInferResponse.InferOutputTensor(name="y", datatype="FP32", shape=[1, 2])],
        raw_output_contents=[b"\0" * 8])

    class Floor(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        async def ModelInfer(self, request: Any, context: Any) -> Any:
            return answer

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=True)

        async def ModelReady(self, request: Any, context: Any) -> Any:
            return pb.ModelReadyResponse(ready=True)

    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Floor(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    rest = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=ready_port, log_level="warning",
                                         access_log=False, lifespan="off"))
    await asyncio.gather(server.wait_for_termination(), rest.serve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["rest", "grpc"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ready-port", type=int, help="grpc: the REST port answering readiness")
    args = parser.parse_args()
    if args.kind == "rest":
        serve_rest(args.port)
    else:
        import uvloop

        uvloop.run(serve_grpc(args.port, args.ready_port))


if __name__ == "__main__":
    main()
