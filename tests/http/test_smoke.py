from __future__ import annotations

import httpx


def test_server_metadata(http: httpx.Client) -> None:
    response = http.get("/v2")
    assert response.status_code == 200
    assert response.json()["name"] == "servecore"
