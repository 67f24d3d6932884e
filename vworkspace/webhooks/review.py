"""``admission.k8s.io/v1`` AdmissionReview: reading a request and writing the answer.

Only what a validating webhook needs: the uid, the operation, the new and old objects. A body
that is not an AdmissionReview is the caller's bug and gets HTTP 400, not an admission answer.
"""

from __future__ import annotations

from typing import Any

import attrs

from vworkspace.api.jsontypes import JsonObj

API_VERSION = "admission.k8s.io/v1"


class MalformedReviewError(ValueError):
    pass


@attrs.frozen
class AdmissionRequest:
    uid: str
    operation: str  # CREATE, UPDATE, DELETE, CONNECT
    object: JsonObj | None
    old_object: JsonObj | None
    namespace: str
    name: str
    user: str


def parse_review(body: Any) -> AdmissionRequest:
    if not isinstance(body, dict) or body.get("kind") != "AdmissionReview":
        raise MalformedReviewError("body is not an AdmissionReview")
    if body.get("apiVersion") != API_VERSION:
        raise MalformedReviewError(f"AdmissionReview apiVersion must be {API_VERSION}")
    request = body.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise MalformedReviewError("AdmissionReview has no request.uid")
    obj, old = request.get("object"), request.get("oldObject")
    return AdmissionRequest(
        uid=request["uid"],
        operation=str(request.get("operation") or ""),
        object=obj if isinstance(obj, dict) else None,
        old_object=old if isinstance(old, dict) else None,
        namespace=str(request.get("namespace") or ""),
        name=str(request.get("name") or ""),
        user=str((request.get("userInfo") or {}).get("username") or ""),
    )


def allowed(uid: str) -> JsonObj:
    return _review({"uid": uid, "allowed": True})


def denied(uid: str, message: str) -> JsonObj:
    # controller-runtime's Denied(): code 403, reason Forbidden; the API server turns it into
    # 'admission webhook "<name>" denied the request: <message>'.
    status = {"code": 403, "reason": "Forbidden", "message": message}
    return _review({"uid": uid, "allowed": False, "status": status})


def errored(uid: str, message: str) -> JsonObj:
    """The rules could not be evaluated (e.g. the API server did not answer a lookup)."""
    status = {"code": 500, "reason": "InternalError", "message": message}
    return _review({"uid": uid, "allowed": False, "status": status})


def _review(response: JsonObj) -> JsonObj:
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
