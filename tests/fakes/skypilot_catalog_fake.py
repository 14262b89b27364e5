"""A loopback stand-in for the two GitHub hosts ``ftbroker catalog update`` reads SkyPilot's catalogs from.

    GET /repos/skypilot-org/skypilot-catalog/commits?path=catalogs/v9/<cloud>/vms.csv&per_page=1   (api.github.com)
    GET /skypilot-org/skypilot-catalog/<sha>/catalogs/v9/<cloud>/vms.csv              (raw.githubusercontent.com)

``publish(cloud, csv_text, day)`` adds a commit of that cloud's file; the commits route answers the newest, as
GitHub does, and the raw route serves any published commit (404 for an unknown one).
"""

from __future__ import annotations

import hashlib
from datetime import date

from fakes._server import LoopbackServer, Request, Response

REPO = "skypilot-org/skypilot-catalog"


class SkypilotCatalogFake(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.commits: dict[str, list[tuple[str, date]]] = {}  # path -> [(sha, day)], oldest first
        self.files: dict[tuple[str, str], bytes] = {}        # (sha, path) -> content
        self.route("GET", f"/repos/{REPO}/commits", "commits", self._commits)
        self.route("GET", f"/{REPO}/{{sha}}/catalogs/{{schema}}/{{cloud}}/vms.csv", "raw", self._raw)

    def publish(self, cloud: str, text: str, day: date, schema: str = "v9") -> str:
        path = f"catalogs/{schema}/{cloud}/vms.csv"
        sha = hashlib.sha1(f"{path}{day}{text}".encode()).hexdigest()
        with self.lock:
            self.commits.setdefault(path, []).append((sha, day))
            self.files[(sha, path)] = text.encode()
        return sha

    def _commits(self, req: Request) -> Response:
        history = self.commits.get(req.arg("path") or "", [])
        return Response.json([{"sha": sha, "commit": {"committer": {"date": f"{day}T12:00:00Z"}}}
                              for sha, day in reversed(history)][: int(req.arg("per_page") or 30)])

    def _raw(self, req: Request) -> Response:
        p = req.params
        content = self.files.get((p["sha"], f"catalogs/{p['schema']}/{p['cloud']}/vms.csv"))
        if content is None:
            return Response(404, b"404: Not Found", {"Content-Type": "text/plain"})
        return Response(200, content, {"Content-Type": "text/plain; charset=utf-8"})
