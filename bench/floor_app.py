"""The HTTP floor of bench/service_bench.py: a Flask view that parses the JSON body
and answers an empty hit list, served by the same server (service/server.py) as the
service. Its latency is what any Flask search behind that server pays before searching."""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.get("/readyz")
def ready() -> Response:
    return jsonify({"ready": True})


@app.post("/v1/search")
def search() -> Response:
    body = request.get_json()
    return jsonify({"hits": [], "k": body.get("k"), "took_ms": 0.0})
