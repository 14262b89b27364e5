"""A loopback fake of what serving a Bedrock custom model takes, for ``boto3`` pointed at it (``endpoint_url``):
Provisioned Throughput (control plane ``bedrock``) and Converse (``bedrock-runtime``). moto implements neither
(moto 5.2 raises NotImplementedError for both: getmoto/moto, moto/bedrock/models.py), so this fake stands in, with the shapes of botocore's
service models (bedrock 2023-04-20, bedrock-runtime 2023-09-30) and rest-json errors (``x-amzn-ErrorType``).

    pt.create    POST   /provisioned-model-throughput          idempotent on clientRequestToken; a name in use: 400
    pt.get       GET    /provisioned-model-throughput/{id}     ARN or name; Creating -> InService after
                                                               ``ready_after`` reads
    pt.delete    DELETE /provisioned-model-throughput/{id}
    pt.list      GET    /provisioned-model-throughputs          nameContains
    converse     POST   /model/{modelId}/converse               an on-demand base model, or an InService PT's ARN

``responder(model, body)``: the text a model answers (the model: the base id, or the custom model a PT serves).
Billing by the fake's clock: ``billed_ticks()``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from ._jobs import Clock, count_tokens
from ._server import LoopbackServer, Request, Response

REGION, ACCOUNT = "us-west-2", "123456789012"
_ERRORS = {400: "ValidationException", 404: "ResourceNotFoundException", 409: "ResourceInUseException",
           429: "ThrottlingException", 500: "InternalServerException"}


class FakeBedrockServing(LoopbackServer):
    def __init__(self, on_demand: tuple[str, ...] = ("meta.llama3-1-8b-instruct-v1:0",), ready_after: int = 2):
        super().__init__()
        self.on_demand = set(on_demand)
        self.ready_after = ready_after
        self.throughputs: dict[str, dict[str, Any]] = {}  # ARN -> record
        self.responder: Callable[[str, dict[str, Any]], str] = lambda model, body: "ok"
        self.clock = Clock()
        r = self.route
        r("POST", "/provisioned-model-throughput", "pt.create", self._create)
        r("GET", "/provisioned-model-throughput/{id}", "pt.get", self._get)
        r("DELETE", "/provisioned-model-throughput/{id}", "pt.delete", self._delete)
        r("GET", "/provisioned-model-throughputs", "pt.list", self._list)
        r("POST", "/model/{model}/converse", "converse", self._converse)

    @property
    def endpoint_url(self) -> str:
        return self.origin

    def live(self) -> list[dict[str, Any]]:
        return [t for t in self.throughputs.values() if t["deleted"] is None]

    def billed_ticks(self) -> int:
        return sum((t["deleted"] or self.clock.now) - t["tick"] for t in self.throughputs.values())

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"message": message}

    @staticmethod
    def _error(status: int, message: str) -> Response:
        return Response.json({"message": message}, status, {"x-amzn-ErrorType": _ERRORS.get(status, "Exception")})

    def _summary(self, t: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in t.items() if k not in ("token", "tick", "deleted", "reads")}

    def _find(self, ident: str) -> dict[str, Any] | None:
        ident = unquote(ident)
        return next((t for arn, t in self.throughputs.items() if t["deleted"] is None
                     and ident in (arn, t["provisionedModelName"])), None)

    def _create(self, req: Request) -> Response:
        body = req.json()
        for name in ("modelUnits", "provisionedModelName", "modelId"):
            if name not in body:
                return self._error(400, f"{name} is required")
        same = next((t for t in self.throughputs.values() if t["token"] == body.get("clientRequestToken")), None)
        if same is not None:  # the idempotency token: the first request's answer again
            return Response.json({"provisionedModelArn": same["provisionedModelArn"]}, 201)
        if self._find(body["provisionedModelName"]) is not None:
            return self._error(400, f"provisioned model name {body['provisionedModelName']} is in use")
        tick = self.clock.tick()
        arn = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:provisioned-model/pm{tick:06d}"
        now = datetime.fromtimestamp(tick, UTC).isoformat()
        self.throughputs[arn] = {
            "provisionedModelName": body["provisionedModelName"], "provisionedModelArn": arn,
            "modelArn": body["modelId"], "desiredModelArn": body["modelId"], "foundationModelArn": "",
            "modelUnits": body["modelUnits"], "desiredModelUnits": body["modelUnits"], "status": "Creating",
            "creationTime": now, "lastModifiedTime": now, "token": body.get("clientRequestToken"), "tick": tick,
            "deleted": None, "reads": 0, "tags": body.get("tags", [])}
        return Response.json({"provisionedModelArn": arn}, 201)

    def _get(self, req: Request) -> Response:
        found = self._find(req.params["id"])
        if found is None:
            return self._error(404, f"provisioned model {unquote(req.params['id'])} not found")
        found["reads"] += 1
        if found["status"] == "Creating" and found["reads"] >= self.ready_after:
            found["status"] = "InService"
        return Response.json(self._summary(found))

    def _delete(self, req: Request) -> Response:
        found = self._find(req.params["id"])
        if found is None:
            return self._error(404, f"provisioned model {unquote(req.params['id'])} not found")
        found["deleted"] = self.clock.tick()
        return Response.json({})

    def _list(self, req: Request) -> Response:
        part = req.arg("nameContains") or ""
        found = [self._summary(t) for t in self.live() if part in t["provisionedModelName"]]
        return Response.json({"provisionedModelSummaries": found})

    def _converse(self, req: Request) -> Response:
        model = unquote(req.params["model"])
        pt = self._find(model) if model.startswith("arn:") else None
        if pt is not None and pt["status"] != "InService":
            return self._error(400, f"{model} is not in service")
        served = pt["modelArn"] if pt is not None else model if model in self.on_demand else None
        if served is None:
            return self._error(404, f"model {model} not found")
        body = req.json()
        text = self.responder(served, body)
        usage = {"inputTokens": count_tokens(json.dumps(body).encode()), "outputTokens": count_tokens(text.encode())}
        return Response.json({"output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                              "stopReason": "end_turn", "usage": {**usage, "totalTokens": sum(usage.values())},
                              "metrics": {"latencyMs": 1}})
