"""The operator's /healthz: alive, and whether this replica leads (a follower is healthy too)."""

from __future__ import annotations

from aiohttp import web

from onnx_operator.leader import Leadership


async def serve_health(port: int, leadership: Leadership) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **leadership.view()})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
