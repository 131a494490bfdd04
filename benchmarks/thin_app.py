"""The thinnest V2-shaped HTTP endpoint: the floor servecore's HTTP overhead is measured against.

One POST route at the same path as servecore's inference route. It reads the body, parses it with
orjson (so JSON decoding cost is paid, as any real server must), and returns a fixed, valid V2
inference response. No model is called. A readiness route exists only so the benchmark harness can
poll every target the same way; it is never part of the measured traffic.

Run (one process, as ``benchmarks/bench_http.py`` does)::

    uvicorn benchmarks.thin_app:app --loop uvloop --http httptools --no-access-log \
        --log-level warning --host 127.0.0.1 --port 8001
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_ANSWER = orjson.dumps(
    {
        "model_name": "mlp",
        "outputs": [
            {
                "name": "logits",
                "shape": [1, 10],
                "datatype": "FP32",
                "data": [0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9, -1.0],
            }
        ],
    }
)


async def infer(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(_ANSWER, media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b"", status_code=200)


app = Starlette(
    routes=[
        Route("/v2/models/mlp/infer", infer, methods=["POST"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
    ]
)
