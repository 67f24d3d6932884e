"""Building the operator from its settings: one client, informers, controllers, the manager.

This is where every dependency is created and handed down; nothing below reads flags or the
environment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import attrs
import structlog
from prometheus_client import CollectorRegistry

from vworkspace.agent.applier import DEFAULT_ALLOWED, DEFAULT_MAX_PAYLOAD, Applier
from vworkspace.agent.client import ControlPlaneClient, HttpSession
from vworkspace.agent.credentials import DEFAULT_SECRET, CredentialStore, Overrides
from vworkspace.agent.egress import Egress, EgressConfig
from vworkspace.agent.encryptionkeys import EncryptionKeys
from vworkspace.agent.events import EventBatcher, snapshot_events
from vworkspace.agent.gateway import AgentGateway
from vworkspace.agent.idempotency import IdempotencyStore
from vworkspace.agent.metrics import AgentMetrics
from vworkspace.agent.poller import DEFAULT_CONCURRENCY, Poller
from vworkspace.agent.sealed import Unsealer
from vworkspace.agent.trustedkeys import TrustedKeys
from vworkspace.agent.verifier import JobVerifier
from vworkspace.api.jsontypes import JsonObj
from vworkspace.app.engines import Wake, served_kinds, setup_engines
from vworkspace.app.hardening_flags import Hardening
from vworkspace.app.http import Address, ServingCert
from vworkspace.app.manager import Manager, ManagerSettings
from vworkspace.app.metricsauth import MetricsAuthorizer
from vworkspace.controllers import applicationinstance, cluster, operation
from vworkspace.controllers.cluster import ClusterOptions
from vworkspace.controllers.operation import POLL
from vworkspace.controllers.reporting import NullReporter, StatusReporter
from vworkspace.engines.catalog import ENGINES
from vworkspace.engines.descriptor import EngineSettings
from vworkspace.engines.registry import EngineRegistry
from vworkspace.kube.clock import Clock, RealClock
from vworkspace.kube.events import EventRecorder
from vworkspace.kube.metrics import Metrics
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.client import KubeClient, KubeConfigError
from vworkspace.kube.rest.errors import ApiError
from vworkspace.kube.rest.kubeconfig import SERVICE_ACCOUNT
from vworkspace.kube.rest.proxy import ProxyEnvironment
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, CLUSTERS, OPERATIONS, ResourceType
from vworkspace.kube.rest.transport import RestClientMetrics
from vworkspace.kube.runtime.controller import Controller
from vworkspace.kube.runtime.host import ControllerOptions
from vworkspace.kube.runtime.leaderelection import LeaderElector, LeaseConfig, LeaseTiming
from vworkspace.kube.tls import CertificateError, CertificateReloader
from vworkspace.kube.trace import Tracer, TracingApi
from vworkspace.webhooks.lookup import ClusterLookup
from vworkspace.webhooks.server import WebhookMetrics, WebhookServer

_log = structlog.get_logger("vworkspace.wiring")
LEASE_NAME = "dad03b25.vworkspace.io"
DEFAULT_NAMESPACE = "vworkspace-system"

# The kinds the operator's controllers reconcile (one watch and one queue each).
CONTROLLED_KINDS: tuple[ResourceType, ...] = (APPLICATION_INSTANCES, OPERATIONS, CLUSTERS)


@attrs.frozen
class AgentSettings:
    overrides: Overrides = attrs.field(factory=Overrides)
    secret_name: str = DEFAULT_SECRET
    credentials_namespace: str | None = None  # None: the operator namespace
    poll_interval: int = 30
    concurrency: int = DEFAULT_CONCURRENCY
    allowed_kinds: frozenset[tuple[str, str]] = DEFAULT_ALLOWED
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD
    idempotency_max_keys: int = 10_000
    event_buffer_size: int = 1000
    heartbeat_interval: float = 60.0
    # Signed jobs and the local policy (app/hardening_flags.py).
    hardening: Hardening = attrs.field(factory=Hardening)
    # Proxy, CA, client certificate and pins for the control plane (app/flags/egress.py).
    egress: EgressConfig = attrs.field(factory=EgressConfig)


@attrs.frozen
class WebhookSettings:
    address: Address
    cert_dir: Path
    cert_name: str = "tls.crt"
    key_name: str = "tls.key"
    reload_interval: float = 10.0


# Reconciles wait on the API server, not on the CPU: with two workers a restart over 1,000
# instances took 12.7 s, with eight 10.1 s, with 32 no faster (docs/development.md, "Performance").
DEFAULT_WORKERS = 8


@attrs.frozen
class OperatorSettings:
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    # HTTPS_PROXY/HTTP_PROXY/NO_PROXY for the API server, read from the environment once by
    # run_cmd (kube/rest/proxy.py).
    proxies: ProxyEnvironment = attrs.field(factory=ProxyEnvironment)
    # KUBERNETES_SERVICE_HOST/_PORT for in_cluster, and the environment an exec credential
    # plugin runs with; read by run_cmd (kube/rest/kubeconfig.py, kube/rest/execplugin.py).
    service_host: str = ""
    service_port: str = ""
    # The in-cluster service-account files (token, ca.crt); $VWORKSPACE_SERVICE_ACCOUNT_DIR
    # overrides the kubelet's path, read by run_cmd.
    service_account_dir: Path = SERVICE_ACCOUNT
    exec_environ: Mapping[str, str] = attrs.field(factory=dict, repr=False, eq=False)
    namespace: str = DEFAULT_NAMESPACE
    identity: str = "vworkspace-operator"
    leader_elect: bool = False
    lease_name: str = LEASE_NAME
    lease_timing: LeaseTiming = attrs.field(factory=LeaseTiming)
    workers: int = DEFAULT_WORKERS
    reconcile_timeout: float = 30.0
    probes: Address | None = None
    metrics: Address | None = None
    # HTTPS + TokenReview/SubjectAccessReview on /metrics. False here, True on the command line
    # (as in Go): code that builds settings directly (tests, embedders) gets plain HTTP metrics
    # unless it asks, while `python -m vworkspace run` is secure unless --metrics-secure=false.
    metrics_secure: bool = False
    metrics_cert: ServingCert = attrs.field(factory=ServingCert)  # directory None: self-signed
    shutdown_timeout: float = 25.0
    velero_namespace: str = "velero"
    # How often a missing optional CRD (Flux, Velero, Argo) is looked for: first interval,
    # doubling up to the max (app/engines.py).
    engine_discovery_interval: float = 5.0
    engine_discovery_max_interval: float = 60.0
    approval_secret: str = attrs.field(default="", repr=False)
    # How often a Running Operation's workload is looked at (``--operation-poll-interval``).
    operation_poll_interval: float = POLL
    # NDJSON of informer events and reconciles (run --trace-file; kube/trace.py); None: off.
    trace_file: Path | None = None
    # HelmRelease spec.serviceAccountName (Flux impersonation); "" keeps helm-controller's own.
    flux_service_account: str = ""
    agent: AgentSettings | None = None
    webhooks: WebhookSettings | None = None


async def connect(settings: OperatorSettings) -> KubeClient:
    # Pool: one connection per watch, one per worker, and headroom for the agent and events.
    pool = len(CONTROLLED_KINDS) * (1 + settings.workers) + 8
    if settings.in_cluster:
        return KubeClient.in_cluster(
            host=settings.service_host,
            port=settings.service_port,
            service_account=settings.service_account_dir,
            pool_size=pool,
            proxies=settings.proxies,
        )
    return await KubeClient.from_kubeconfig(
        settings.kubeconfig,
        context=settings.context,
        pool_size=pool,
        proxies=settings.proxies,
        environ=settings.exec_environ,
    )


def build_manager(
    settings: OperatorSettings,
    client: KubeClient,
    *,
    registry: CollectorRegistry,
    served: frozenset[str] = frozenset(),
    clock: Clock | None = None,
    http: HttpSession | None = None,
) -> Manager:
    """Wire the operator: the manager, then each part set up against it (the agent, the three
    controllers, the engines, the webhooks). ``served``: which CRDs the engines require the
    cluster serves at start (:func:`~vworkspace.app.engines.served_kinds`); engines whose CRDs
    are missing are registered when the CRDs appear (app/engines.py), and until then objects
    that need them are Blocked with ``MissingDependencies`` / ``DependencyMissing``."""
    clock = clock or RealClock()
    metrics = Metrics(registry)
    client.instrument(RestClientMetrics.create(registry))
    tracer = None
    api: KubeApi = client
    if settings.trace_file is not None:
        # The settings a replay needs to build the same operator (vworkspace/testing/replay.py).
        replayed: JsonObj = {
            "velero_namespace": settings.velero_namespace,
            "flux_service_account": settings.flux_service_account,
        }
        tracer = Tracer.open(settings.trace_file, clock=clock, settings=replayed)
        # Informers and controllers find the tracer on the API they use (kube/trace.py).
        api = TracingApi(client, tracer)
    manager = new_manager(settings, api, clock=clock, metrics=metrics)
    if tracer is not None:
        manager.add_runnable("trace writer", tracer.run, leader_only=False)
    recorder = EventRecorder(api, clock=clock, instance=settings.identity)
    gateway = None
    if settings.agent is not None:
        if http is None:
            raise ValueError("the agent needs an HTTP session")
        gateway = add_agent(manager, settings, settings.agent, client=api, http=http)
    # Condition transitions go to the control plane through the agent's batcher.
    reporter: StatusReporter = gateway.batcher if gateway is not None else NullReporter()
    engines = EngineRegistry(ENGINES)  # filled by setup_engines below
    instances = applicationinstance.setup(
        manager, client=api, engines=engines, recorder=recorder, reporter=reporter
    )
    operations = operation.setup(
        manager,
        client=api,
        engines=engines,
        approval_secret=settings.approval_secret,
        poll=settings.operation_poll_interval,
        recorder=recorder,
        reporter=reporter,
    )
    cluster.setup(
        manager,
        client=api,
        gateway=gateway,
        options=cluster_options(settings),
        recorder=recorder,
        reporter=reporter,
    )
    add_engines(
        manager,
        settings,
        engines,
        client=api,
        instances=instances,
        operations=operations,
        served=served,
    )
    if settings.webhooks is not None:
        add_webhooks(manager, settings, settings.webhooks, client=api, clock=clock, engines=engines)
    return manager


def add_engines(
    manager: Manager,
    settings: OperatorSettings,
    engines: EngineRegistry,
    *,
    client: KubeApi,
    instances: Controller,
    operations: Controller,
    served: frozenset[str],
) -> None:
    """The engines' CRDs, informers and watches, from their descriptors (app/engines.py): their
    objects' events wake ``instances``; an engine registered late requeues what waited for it
    (the instances and the Operations)."""
    setup_engines(
        manager,
        engines,
        client=client,
        clock=manager.clock,
        metrics=manager.metrics,
        settings=EngineSettings(
            velero_namespace=settings.velero_namespace,
            flux_service_account=settings.flux_service_account,
        ),
        served=served,
        wake=Wake(
            instances=instances,
            instance_cache=manager.informer(APPLICATION_INSTANCES),
            requeue=(
                (manager.informer(APPLICATION_INSTANCES), instances),
                (manager.informer(OPERATIONS), operations),
            ),
        ),
        interval=settings.engine_discovery_interval,
        max_interval=settings.engine_discovery_max_interval,
    )


def new_manager(
    settings: OperatorSettings, client: KubeApi, *, clock: Clock, metrics: Metrics
) -> Manager:
    """The manager with its endpoints, leader election and controller options."""
    elector = None
    if settings.leader_elect:
        lease = LeaseConfig(
            name=settings.lease_name,
            namespace=settings.namespace,
            identity=settings.identity,
            timing=settings.lease_timing,
        )
        elector = LeaderElector(client, lease, clock=clock, metrics=metrics)
    return Manager(
        settings=ManagerSettings(
            probes=settings.probes,
            metrics=settings.metrics,
            metrics_tls=settings.metrics_cert if settings.metrics_secure else None,
            shutdown_timeout=settings.shutdown_timeout,
        ),
        metrics=metrics,
        clock=clock,
        elector=elector,
        metrics_authorizer=(
            MetricsAuthorizer(api=client, clock=clock) if settings.metrics_secure else None
        ),
        api=client,
        controller_options=ControllerOptions(
            workers=settings.workers, reconcile_timeout=settings.reconcile_timeout
        ),
    )


def cluster_options(settings: OperatorSettings) -> ClusterOptions:
    agent = settings.agent or AgentSettings()
    return ClusterOptions(
        namespace=agent.credentials_namespace or settings.namespace,
        heartbeat_interval=agent.heartbeat_interval,
        secret_name=agent.secret_name,
        allow_insecure_endpoint=agent.hardening.allow_insecure_control_plane,
    )


def add_webhooks(
    manager: Manager,
    settings: OperatorSettings,
    webhooks: WebhookSettings,
    *,
    client: KubeApi,
    clock: Clock,
    engines: EngineRegistry | None = None,
) -> WebhookServer:
    """The admission webhook server, on every replica (not only the leader); ``engines``
    gives the engines' policy (which Operations may run without their target). Raises
    :class:`~vworkspace.kube.tls.CertificateError` when the serving pair cannot be read."""
    server = WebhookServer(
        host=webhooks.address.host,
        port=webhooks.address.port,
        certificates=CertificateReloader(
            cert=webhooks.cert_dir / webhooks.cert_name,
            key=webhooks.cert_dir / webhooks.key_name,
            purpose="webhook",
        ),
        lookup=ClusterLookup(client),
        approval_secret=settings.approval_secret,
        clock=clock,
        metrics=WebhookMetrics.create(manager.metrics.registry),
        reload_interval=webhooks.reload_interval,
        engines=engines,
    )
    # Failing before it listens (the port is taken, the certificate is unreadable) is a
    # start-up error; failing later is restarted like any task.
    manager.add_runnable("webhook server", server.run, leader_only=False, started=server.started)
    return server


def add_agent(
    manager: Manager,
    settings: OperatorSettings,
    agent: AgentSettings,
    *,
    client: KubeApi,
    http: HttpSession,
) -> AgentGateway:
    """The Pull-mode agent: credential store (an informer), client, applier, poller and event
    batcher; returns the gateway the Cluster reconciler uses (its batcher is the reporter).
    The batcher's snapshots read the controllers' shared informers."""
    clock, registry = manager.clock, manager.metrics.registry
    snapshot_sources = [manager.informer(resource) for resource in CONTROLLED_KINDS]
    namespace = agent.credentials_namespace or settings.namespace
    store = CredentialStore(
        client,
        namespace=namespace,
        secret_name=agent.secret_name,
        overrides=agent.overrides,
        clock=clock,
    )
    manager.add_informer(store.informer)
    # The cluster's age key pair for encrypted payloads, watched (agent/encryptionkeys.py).
    encryption = EncryptionKeys(client, namespace=namespace)
    manager.add_informer(encryption.informer)
    metrics = AgentMetrics(registry)
    metrics.watch_credential_age(registry, store.written_at)
    if isinstance(http, Egress):  # the Secret's ca.crt/tls.crt/tls.key, and the TLS metrics
        http.attach(
            secret=store.tls,
            on_pin_failure=metrics.tls_pin_failures.inc,
            on_tls_error=metrics.tls_material_errors.inc,
        )
    control_plane = ControlPlaneClient(
        http, credentials=store.current, reload=store.reload, clock=clock, metrics=metrics
    )

    def cluster_id() -> str:
        current = store.current()
        return current.cluster_id if current else agent.overrides.cluster_id

    poller = Poller(
        client=control_plane,
        credentials=store,
        applier=Applier(
            client,
            cluster_id=cluster_id,
            clock=clock,
            allowed=agent.allowed_kinds,
            max_payload_bytes=agent.max_payload_bytes,
            policy=agent.hardening.policy,
            on_rejected=lambda reason: metrics.rejections.labels(reason).inc(),
            unsealer=Unsealer(
                key=encryption.current,
                source=encryption.source,
                wait_synced=encryption.informer.wait_synced,
            ),
        ),
        idempotency=IdempotencyStore(
            client, namespace=namespace, max_keys=agent.idempotency_max_keys, clock=clock
        ),
        clock=clock,
        metrics=metrics,
        poll_interval=agent.poll_interval,
        concurrency=agent.concurrency,
        verifier=add_verifier(
            manager, agent.hardening, client=client, namespace=namespace, clock=clock
        ),
    )
    # Only the leader takes jobs: two replicas must not apply the same job stream.
    manager.add_runnable("agent poller", poller.run, leader_only=True)

    def snapshot() -> list[JsonObj]:
        # Keyed as last reported, so a re-sent condition is deduplicated (agent/events.py).
        return snapshot_events(
            [o for i in snapshot_sources for o in i.store.items()],
            now=clock.now(),
            keys=batcher.keys,
        )

    batcher = EventBatcher(
        post=control_plane.post_events,
        # Credentials, and warm caches so the first snapshot is complete.
        ready=lambda: store.current() is not None and all(i.has_synced for i in snapshot_sources),
        clock=clock,
        metrics=metrics,
        snapshot=snapshot,
        capacity=agent.event_buffer_size,
    )
    manager.add_runnable("event batcher", batcher.run, leader_only=True)
    return AgentGateway(
        store=store,
        client=control_plane,
        http=http,
        batcher=batcher,
        clock=clock,
        keys=encryption,
    )


def add_verifier(
    manager: Manager, hardening: Hardening, *, client: KubeApi, namespace: str, clock: Clock
) -> JobVerifier:
    """The signature check of every job, with the trusted keys watched in the operator
    namespace (agent/trustedkeys.py)."""
    keys = TrustedKeys(client, namespace=namespace, source=hardening.trusted_keys)
    manager.add_informer(keys.informer)

    def on_keys(key_ids: list[str]) -> None:
        if key_ids and not hardening.require_signed_jobs:
            _log.warning(
                "job-signing keys are configured but signatures are NOT required: unsigned jobs "
                "are still applied; pass --agent-require-signed-jobs once the control plane signs",
                key_ids=key_ids,
            )

    keys.on_change = on_keys
    if hardening.require_signed_jobs:
        _log.info(
            "signed jobs required",
            trusted_keys=f"{namespace}/{hardening.trusted_keys}",
            max_age_seconds=hardening.signed_job_max_age.total_seconds(),
        )
    if hardening.policy.restricted:
        _log.info("local job policy", policy=repr(hardening.policy))
    return JobVerifier(
        keys=keys.current,
        clock=clock,
        require=hardening.require_signed_jobs,
        max_age=hardening.signed_job_max_age,
        # The poller fetches no job before the keys are listed (agent/verifier.py).
        synced=lambda: keys.synced,
        wait_synced=keys.wait_synced,
    )


async def run_operator(
    settings: OperatorSettings, stop: asyncio.Event, *, registry: CollectorRegistry
) -> int:
    try:
        client = await connect(settings)
    except KubeConfigError as err:
        hint = ""
        if settings.kubeconfig is None and not settings.in_cluster:
            hint = "not in a Pod and no --kubeconfig or $KUBECONFIG given; "
        _log.error("cannot connect to Kubernetes", error=f"{hint}{err}")
        return 1
    http = Egress(settings.agent.egress) if settings.agent is not None else None
    try:
        try:
            # The first request: a wrong address, CA or token fails here, with one clear line
            # rather than a traceback (the Pod restarts with backoff, as Go's manager does).
            served = await served_kinds(client)
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as err:
            detail = str(err) or type(err).__name__
            _log.error("cannot reach the Kubernetes API server", server=client.server, error=detail)
            return 1
        try:
            manager = build_manager(settings, client, registry=registry, served=served, http=http)
        except CertificateError as err:
            # The webhook or the secure metrics serving pair.
            _log.error("cannot load a serving certificate", error=str(err))
            return 1
        return await manager.run(stop)
    finally:
        if http is not None:
            await http.close()
        await client.close()
