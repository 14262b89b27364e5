"""Together's dedicated endpoints for the Together fake: the project-scoped v2 API of the ``together`` 3.x SDK
(``client.endpoints`` and ``client.endpoints.deployments``; shapes from the SDK's types ``Endpoint`` and
``EndpointDeployment``, camelCase on the wire). A fine-tuned model is served only by a READY deployment, called by
the deployment's name (``<project>/<endpoint>/<deployment>``), as Together serves fine-tunes only on dedicated
endpoints.

Routes (``{p}``: the project id):
    endpoints.create       POST   /v2/projects/{p}/endpoints
    endpoints.list         GET    /v2/projects/{p}/endpoints          filter=name:"..."
    endpoints.retrieve     GET    /v2/projects/{p}/endpoints/{id}
    endpoints.delete       DELETE /v2/projects/{p}/endpoints/{id}     refused while it holds deployments
    deployments.create     POST   /v2/projects/{p}/endpoints/{eid}/deployments
    deployments.list       GET    /v2/projects/{p}/endpoints/{eid}/deployments
    deployments.retrieve   GET    /v2/projects/{p}/endpoints/{eid}/deployments/{id}   PROVISIONING -> READY after
                                                                                      ``ready_after`` reads
    deployments.delete     DELETE /v2/projects/{p}/endpoints/{eid}/deployments/{id}

Billing is by the fake's clock: each deployment keeps the ticks it existed (``billed_ticks``).
"""

from __future__ import annotations

import re
from typing import Any

from ._server import Request, Response, bearer_auth, http_error

SLUG = "fakeproj"


class DedicatedEndpoints:
    """Mixin for ``FakeTogether``: call ``_add_endpoints()`` in ``__init__``."""

    def _add_endpoints(self, ready_after: int = 2) -> None:
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.ready_after = ready_after
        self.fail_deployments = False  # a deployment then ends FAILED instead of READY
        base = "/v2/projects/{p}/endpoints"
        r = self.route
        r("POST", base, "endpoints.create", self._endpoint_create)
        r("GET", base, "endpoints.list", self._endpoint_list)
        r("GET", base + "/{id}", "endpoints.retrieve", self._endpoint_retrieve)
        r("DELETE", base + "/{id}", "endpoints.delete", self._endpoint_delete)
        r("POST", base + "/{eid}/deployments", "deployments.create", self._deployment_create)
        r("GET", base + "/{eid}/deployments", "deployments.list", self._deployment_list)
        r("GET", base + "/{eid}/deployments/{id}", "deployments.retrieve", self._deployment_retrieve)
        r("DELETE", base + "/{eid}/deployments/{id}", "deployments.delete", self._deployment_delete)

    # -- what the chat route serves ----------------------------------------------------------------
    def _served(self, model: str) -> str | None:
        for deployment in self.deployments.values():
            if deployment["name"] == model and not deployment["deleted"]:
                if deployment["status"]["state"] != "DEPLOYMENT_STATE_READY":
                    raise_not_ready(model)
                return deployment["model"]
        return model if model in self.chat_models else None

    def live_deployments(self) -> list[dict[str, Any]]:
        return [d for d in self.deployments.values() if not d["deleted"]]

    def billed_ticks(self) -> int:
        return sum((d["deleted"] or self.clock.now) - d["created_tick"] for d in self.deployments.values())

    # -- endpoints ---------------------------------------------------------------------------------
    def _endpoint_json(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in endpoint.items() if not k.startswith("_")},
                "deployments": [{"id": d["id"], "name": d["name"], "model": d["model"], "modelId": d["model"],
                                 "state": d["status"]["state"], "trafficMode": "TRAFFIC_MODE_LIVE",
                                 "autoscaling": d["autoscaling"], "createdAt": d["createdAt"],
                                 "estimatedEffectiveTrafficShare": 0.0}
                                for d in self.live_deployments() if d["endpointId"] == endpoint["id"]]}

    def _endpoint(self, req: Request, key: str = "id") -> dict[str, Any]:
        bearer_auth(req, self.rejected_keys)
        endpoint = self.endpoints.get(req.params[key])
        if endpoint is None or endpoint["_deleted"]:
            raise http_error(404, f"endpoint {req.params[key]} not found")
        return endpoint

    def _endpoint_create(self, req: Request) -> Response:
        bearer_auth(req, self.rejected_keys)
        body = req.json()
        name = body.get("name") or ""
        if any(e["name"] == f"{SLUG}/{name}" and not e["_deleted"] for e in self.endpoints.values()):
            raise http_error(409, f"an endpoint named {name} already exists")
        tick = self._stamp()
        endpoint = {"id": self._new_id("ep-"), "name": f"{SLUG}/{name}", "projectId": req.params["p"],
                    "endpointType": "ENDPOINT_TYPE_DEDICATED", "etag": "1", "trafficSplit": [],
                    "visibility": body.get("visibility", "VISIBILITY_PRIVATE"), "createdAt": tick, "updatedAt": tick,
                    "_deleted": False}
        self.endpoints[endpoint["id"]] = endpoint
        return Response.json(self._endpoint_json(endpoint))

    def _endpoint_list(self, req: Request) -> Response:
        bearer_auth(req, self.rejected_keys)
        wanted = re.fullmatch(r'name:"(.*)"', req.arg("filter") or "")
        found = [e for e in self.endpoints.values() if not e["_deleted"]
                 and (wanted is None or wanted.group(1) in e["name"])]
        return Response.json({"data": [self._endpoint_json(e) for e in found], "next_cursor": None})

    def _endpoint_retrieve(self, req: Request) -> Response:
        return Response.json(self._endpoint_json(self._endpoint(req)))

    def _endpoint_delete(self, req: Request) -> Response:
        endpoint = self._endpoint(req)
        if any(d["endpointId"] == endpoint["id"] for d in self.live_deployments()):
            raise http_error(400, "delete the endpoint's deployments first")
        endpoint["_deleted"] = True
        return Response.json({})

    # -- deployments -------------------------------------------------------------------------------
    def _deployment(self, req: Request) -> dict[str, Any]:
        self._endpoint(req, "eid")
        deployment = self.deployments.get(req.params["id"])
        if deployment is None or deployment["deleted"]:
            raise http_error(404, f"deployment {req.params['id']} not found")
        return deployment

    def _deployment_create(self, req: Request) -> Response:
        endpoint = self._endpoint(req, "eid")
        body = req.json()
        if not body.get("model") or not body.get("name"):
            raise http_error(400, "model and name are required")
        tick = self._stamp()
        deployment = {"id": self._new_id("dep-"), "name": f"{endpoint['name']}/{body['name']}",
                      "endpointId": endpoint["id"], "projectId": endpoint["projectId"], "model": body["model"],
                      "modelId": body["model"], "modelRevisionId": "", "config": body.get("config", ""),
                      "configId": "", "hardware": "1x_nvidia_h100_80gb_sxm", "etag": "1",
                      "autoscaling": body.get("autoscaling") or {}, "inactiveTimeout": body.get("inactiveTimeout"),
                      "trafficMode": "TRAFFIC_MODE_LIVE", "createdAt": tick, "updatedAt": tick,
                      "status": {"state": "DEPLOYMENT_STATE_PROVISIONING", "message": "provisioning"},
                      "created_tick": self.clock.now, "deleted": None, "reads": 0}
        self.deployments[deployment["id"]] = deployment
        return Response.json(self._deployment_json(deployment))

    def _deployment_json(self, deployment: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in deployment.items() if k not in ("created_tick", "deleted", "reads")}

    def _deployment_list(self, req: Request) -> Response:
        endpoint = self._endpoint(req, "eid")
        found = [self._deployment_json(d) for d in self.live_deployments() if d["endpointId"] == endpoint["id"]]
        return Response.json({"data": found, "next_cursor": None})

    def _deployment_retrieve(self, req: Request) -> Response:
        deployment = self._deployment(req)
        deployment["reads"] += 1
        if deployment["reads"] >= self.ready_after and deployment["status"]["state"].endswith("PROVISIONING"):
            state = "DEPLOYMENT_STATE_FAILED" if self.fail_deployments else "DEPLOYMENT_STATE_READY"
            deployment["status"] = {"state": state, "message": state.rsplit("_", 1)[-1].lower()}
        return Response.json(self._deployment_json(deployment))

    def _deployment_delete(self, req: Request) -> Response:
        deployment = self._deployment(req)
        deployment["deleted"] = self.clock.tick()
        return Response.json({})

    def _stamp(self) -> str:
        from .together_fake import iso

        return iso(self.clock.tick())


def raise_not_ready(model: str) -> None:
    raise http_error(503, f"the endpoint {model} is not ready")
