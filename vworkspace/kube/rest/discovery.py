"""Resolve (apiVersion, kind) to a REST resource through API discovery, with a cache.

Used where the kind comes from data (a job's manifest) rather than from code. One GET of the
group version's resource list per apiVersion, cached for the process lifetime; an unknown kind
is a clear error naming it.
"""

from __future__ import annotations

from vworkspace.api.names import label_problem, subdomain_problem
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.resources import ResourceType


class UnknownKindError(LookupError):
    pass


def split_api_version(api_version: str) -> tuple[str, str]:
    """``GROUP/VERSION`` (or ``VERSION`` for the core group) -> (group, version). The group must
    be a DNS-1123 subdomain and the version a label, as the API server registers them: both
    become path segments of the discovery request."""
    if not api_version or api_version.count("/") > 1:
        raise ValueError(f"invalid apiVersion {api_version!r}")
    group, _, version = api_version.rpartition("/")
    if not version or label_problem(version) is not None:
        raise ValueError(f"invalid apiVersion {api_version!r}: the version is not a DNS-1123 label")
    if (group or "/" in api_version) and subdomain_problem(group) is not None:
        raise ValueError(
            f"invalid apiVersion {api_version!r}: the group is not a DNS-1123 subdomain"
        )
    return group, version


class Discovery:
    def __init__(self, client: KubeApi) -> None:
        self._client = client
        self._cache: dict[str, dict[str, ResourceType]] = {}

    async def resolve(self, api_version: str, kind: str) -> ResourceType:
        group, version = split_api_version(api_version)
        kinds = self._cache.get(api_version)
        if kinds is None:
            path = ApiPath.of("apis", group, version) if group else ApiPath.of("api", version)
            try:
                listing = await self._client.request("GET", path)
            except NotFoundError:
                raise UnknownKindError(f"the API server does not serve {api_version}") from None
            kinds = {
                r["kind"]: ResourceType(
                    group, version, r["name"], r["kind"], namespaced=bool(r.get("namespaced"))
                )
                for r in listing.get("resources", [])
                if "/" not in r.get("name", "")
            }
            self._cache[api_version] = kinds
        try:
            return kinds[kind]
        except KeyError:
            raise UnknownKindError(f"the API server has no kind {kind} in {api_version}") from None
