"""Request paths read as TF Serving's REST server reads them (model_servers/http_server.cc and
http_rest_api_util.cc), so that every odd path gets TF Serving's answer:

- anything under `/v1/` (case-insensitive) is the REST API; other paths are 404;
- POST must match `/v1/models/<name>[/versions/<n>|/labels/<label>]:<method>`, GET
  `/v1/models[/<name>][/versions/<n>|/labels/<label>][/metadata]`, both case-insensitive
  and against the path *with* its query string; anything else, another HTTP verb, or a method
  other than exactly `predict`, `classify`, `regress` (`:PREDICT` matches the pattern but not
  the dispatch) is "Malformed request" (400);
- the model name and label are percent-decoded; a version past int64 is a 400;
- GET `.../METADATA` in capitals is a status request (the dispatch compares case-sensitively).
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from typing import Optional

from serving.tensors import RequestError

API = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
POST = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)",
    re.IGNORECASE,
)
GET = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
METHODS = ("predict", "classify", "regress")
INT64_MAX = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Route:
    http_method: str  # GET or POST
    name: str  # "" for GET /v1/models
    version: Optional[int] = None
    label: Optional[str] = None
    method: str = ""  # POST: predict, classify or regress
    metadata: bool = False  # GET: .../metadata


def shown(path: str, limit: int = 200) -> str:
    """A path as error messages echo it: bounded, as a URL may be megabytes long."""
    return path if len(path) <= limit else path[:limit] + "..."


def is_api(raw_path: str) -> bool:
    return API.fullmatch(raw_path) is not None


def parse(http_method: str, raw_path: str) -> Route:
    """The route of an API request (`raw_path`: the path and query as sent), or RequestError
    with TF Serving's status and wording."""
    malformed = RequestError(f"Malformed request: {http_method} {shown(raw_path)}", 400)
    pattern = {"POST": POST, "GET": GET}.get(http_method)
    match = pattern.fullmatch(raw_path) if pattern else None
    if match is None:
        raise malformed
    name, version, label, last = match.groups()
    name = urllib.parse.unquote(name or "")
    if label is not None:
        label = urllib.parse.unquote(label)
    number = None
    if version is not None:
        number = int(version)
        if number > INT64_MAX:
            raise RequestError(f"Failed to convert version: {version} to numeric.", 400)
    if http_method == "POST":
        if last not in METHODS:
            raise malformed
        return Route(http_method, name, number, label, method=last)
    return Route(http_method, name, number, label, metadata=last == "metadata")
