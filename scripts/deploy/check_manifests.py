"""Our rules for the rendered Kubernetes manifests (scripts/validate-deploy.sh).

    python check_manifests.py RENDERED.yaml REPO_ROOT [--overlay]

The Kubernetes schemas say an object is well-formed; these say it is what we mean to run:
non-root and read-only, resources and probes set, grace periods longer than the drains, one
disruption budget per Deployment, autoscalers that own their replica counts, the consumers'
maximum equal to the partition count, /metrics never behind a client Service, secrets only
from the Secret, least-privilege MySQL users, and the schema version the pods wait for equal
to the newest migration. `--overlay` adds the rules of a deployable overlay (the Secret, KEDA,
the ServiceMonitor, release images). Prints every problem and exits 1 if there is any.
"""

import re
import sys
from pathlib import Path

import yaml

# What each role drains after SIGTERM, in seconds (README "Services", docs/DEPLOY.md): the
# gateway 10 s of requests in flight then 10 s of producer flush; the stats API 10 s of
# requests in flight; a consumer the batch in hand and a synchronous commit beside the same
# 10 s of HTTP, given 30 s here for a batch on a slow store.
DRAIN_SECONDS = {"ingest": 20, "worker-serve": 10, "worker-consume": 30}
MARGIN_SECONDS = 5
SECRET_NAME = re.compile(r"PASSWORD|KEYS|SECRET|TOKEN", re.IGNORECASE)
URL_USER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(?P<user>[^:@/]*)(?::(?P<password>[^@]*))?@")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
MYSQL_USER = {"migrate": "insightflow_migrate", "worker-consume": "insightflow_worker",
              "worker-serve": "insightflow_worker"}
# The kafka scaler's metadata keys (keda.sh/docs/2.x/scalers/apache-kafka).
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
    "offsetResetPolicy", "allowIdleConsumers", "scaleToZeroOnInvalidOffset",
    "excludePersistentLag", "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions",
    "version", "partitionLimitation", "sasl", "tls", "unsafeSsl", "commitPartitionNoOffset",
}
# Roles an autoscaler must own, and which kind of autoscaler.
AUTOSCALED = {"ingest": "HorizontalPodAutoscaler", "worker-serve": "HorizontalPodAutoscaler",
              "worker-consume": "ScaledObject"}

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def quantity(value):
    """A Kubernetes quantity as a float (cpu in cores, memory in bytes), or None."""
    text = str(value)
    if not QUANTITY.match(text):
        return None
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    number = re.match(r"^[0-9.]+", text).group(0)
    return float(number) * units.get(text[len(number):], 1)


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def role_of(obj):
    return ((obj.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component", "")


def check_pod(where, role, pod, secret_keys):
    spec = pod.get("spec") or {}
    pod_security = spec.get("securityContext") or {}
    if spec.get("automountServiceAccountToken") is not False:
        problem(where, "automountServiceAccountToken is not false (no pod calls the API)")
    if (pod_security.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problem(where, "pod securityContext.seccompProfile.type is not RuntimeDefault")
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or []:
            here = f"{where} container {container.get('name')}"
            security = container.get("securityContext") or {}
            non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
            user = security.get("runAsUser", pod_security.get("runAsUser"))
            if non_root is not True:
                problem(here, "runAsNonRoot is not true")
            if user == 0:
                problem(here, "runs as uid 0")
            if security.get("allowPrivilegeEscalation") is not False:
                problem(here, "allowPrivilegeEscalation is not false")
            if security.get("readOnlyRootFilesystem") is not True:
                problem(here, "readOnlyRootFilesystem is not true")
            if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
                problem(here, "capabilities.drop does not include ALL")
            if security.get("privileged"):
                problem(here, "privileged")
            resources = container.get("resources") or {}
            for resource in ("cpu", "memory"):
                request = (resources.get("requests") or {}).get(resource)
                limit = (resources.get("limits") or {}).get(resource)
                if request is None or limit is None:
                    problem(here, f"{resource} request and limit must both be set")
                    continue
                if quantity(request) is None or quantity(limit) is None:
                    problem(here, f"{resource} {request!r}/{limit!r} is not a Kubernetes quantity")
                elif quantity(request) > quantity(limit):
                    problem(here, f"{resource} request {request} is above its limit {limit}")
            check_env(here, role, container, secret_keys)
    containers = spec.get("containers") or []
    return containers


def check_env(where, role, container, secret_keys):
    env = container.get("env") or []
    from_secret = set()
    for var in env:
        name = var.get("name", "")
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            from_secret.add(name)
            if secret_keys is not None:
                known = secret_keys.get(ref.get("name"))
                if known is None:
                    problem(where, f"env {name} reads Secret {ref.get('name')!r}, which is not rendered")
                elif ref.get("key") not in known:
                    problem(where, f"env {name} reads key {ref.get('key')!r}, not in Secret {ref.get('name')!r}")
            continue
        value = var.get("value")
        if SECRET_NAME.search(name) and value is not None:
            problem(where, f"env {name} is a literal; a secret comes from a secretKeyRef")
        url = URL_USER.match(str(value or ""))
        if url:
            password = url.group("password")
            if password is not None and not re.fullmatch(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", password):
                problem(where, f"env {name} holds a URL with a literal password")
            elif password is not None and password[2:-1] not in from_secret:
                problem(where, f"env {name}: the URL's password {password} is not an earlier secretKeyRef variable")
            expected = MYSQL_USER.get(role)
            if name.endswith("__MYSQL__URL"):
                if url.group("user") == "root":
                    problem(where, f"env {name} connects as root")
                elif expected and url.group("user") != expected:
                    problem(where, f"env {name} connects as {url.group('user')!r}, not {expected!r} (deploy/mysql/grants.sql)")


def probe_path(probe):
    return ((probe or {}).get("httpGet") or {}).get("path")


def main():
    rendered, repo = Path(sys.argv[1]), Path(sys.argv[2])
    overlay = "--overlay" in sys.argv[3:]
    objects = [o for o in yaml.safe_load_all(rendered.read_text()) if o]
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)

    secret_keys = None
    if overlay:
        secret_keys = {s["metadata"]["name"]: set((s.get("data") or {}) | (s.get("stringData") or {}))
                       for s in by_kind.get("Secret", [])}
        if not secret_keys:
            problem("overlay", "renders no Secret (secretGenerator)")
    config = {}
    for cm in by_kind.get("ConfigMap", []):
        for key, value in (cm.get("data") or {}).items():
            config.setdefault(key, set()).add(value)
            if SECRET_NAME.search(key):
                problem(f"ConfigMap {cm['metadata']['name']}", f"key {key} looks like a secret; it belongs in the Secret")
            if "dummy-secret-" in str(value):
                problem(f"ConfigMap {cm['metadata']['name']}", f"key {key} holds a secret value")
    if secret_keys is not None:
        for o in objects:
            if o["kind"] != "Secret" and "dummy-secret-" in yaml.safe_dump(o):
                problem(f"{o['kind']} {o['metadata']['name']}", "contains a secret value outside the Secret")

    deployments = {}
    for kind in ("Deployment", "Job"):
        for o in by_kind.get(kind, []):
            where = f"{kind} {o['metadata']['name']}"
            role = role_of(o)
            pod = o["spec"]["template"]
            containers = check_pod(where, role, pod, secret_keys)
            if kind == "Job":
                if pod["spec"].get("restartPolicy") not in ("Never", "OnFailure"):
                    problem(where, "restartPolicy must be Never or OnFailure")
                continue
            deployments[o["metadata"]["name"]] = o
            labels = pod["metadata"].get("labels") or {}
            if not selects(o["spec"]["selector"].get("matchLabels"), labels):
                problem(where, "selector does not match the pod template's labels")
            main_container = containers[0] if containers else {}
            ports = {p.get("name") for p in main_container.get("ports") or []}
            if probe_path(main_container.get("livenessProbe")) != "/health":
                problem(where, "liveness probe is not GET /health")
            if probe_path(main_container.get("readinessProbe")) != "/ready":
                problem(where, "readiness probe is not GET /ready")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = ((main_container.get(probe) or {}).get("httpGet") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    problem(where, f"{probe} uses port {port!r}, which the container does not name")
            if "metrics" not in ports:
                problem(where, "no container port named metrics (the separate /metrics listener)")
            drain = DRAIN_SECONDS.get(role)
            if drain is None:
                problem(where, f"unknown role {role!r} (app.kubernetes.io/component)")
            else:
                pre_stop = ((main_container.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command") or []
                pause = int(pre_stop[1]) if len(pre_stop) == 2 and pre_stop[0] == "sleep" else 0
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
                needed = pause + drain + MARGIN_SECONDS
                if grace < needed:
                    problem(where, f"terminationGracePeriodSeconds {grace} < {needed} "
                                   f"(preStop {pause} s + drain {drain} s + {MARGIN_SECONDS} s)")
            if role in AUTOSCALED and "replicas" in o["spec"]:
                problem(where, "sets spec.replicas, which its autoscaler owns (an apply would reset it)")
            if not any(selects(p["spec"].get("selector", {}).get("matchLabels"), labels)
                       for p in by_kind.get("PodDisruptionBudget", [])):
                problem(where, "no PodDisruptionBudget selects its pods")

    # Autoscalers: the right kind per role, pointing at a rendered Deployment, and only one.
    targets = {}
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for o in by_kind.get(kind, []):
            target = o["spec"]["scaleTargetRef"].get("name")
            if target not in deployments:
                problem(f"{kind} {o['metadata']['name']}", f"scales {target!r}, which is not rendered")
                continue
            targets.setdefault(target, []).append(kind)
            if kind == "HorizontalPodAutoscaler":
                resources = [m.get("resource", {}).get("name") for m in o["spec"].get("metrics") or []]
                if "cpu" not in resources:
                    problem(f"{kind} {o['metadata']['name']}", "does not scale on CPU")
    for name, deployment in deployments.items():
        role = role_of(deployment)
        wanted = AUTOSCALED.get(role)
        got = targets.get(name, [])
        if len(got) > 1:
            problem(f"Deployment {name}", f"has {len(got)} autoscalers ({', '.join(got)}); they would fight")
        if wanted == "HorizontalPodAutoscaler" and got != [wanted]:
            problem(f"Deployment {name}", "is not scaled by a CPU HorizontalPodAutoscaler")
        if overlay and wanted == "ScaledObject" and got != [wanted]:
            problem(f"Deployment {name}", "is not scaled by a KEDA ScaledObject")

    partitions = config.get("INGEST__KAFKA__TOPIC__PARTITIONS", set()) | config.get("WORKER__KAFKA__TOPIC__PARTITIONS", set())
    if len(partitions) != 1:
        problem("ConfigMaps", f"the gateway and the worker disagree on the partition count: {sorted(partitions)}")
    for o in by_kind.get("ScaledObject", []):
        where = f"ScaledObject {o['metadata']['name']}"
        spec = o["spec"]
        if str(spec.get("maxReplicaCount")) not in partitions:
            problem(where, f"maxReplicaCount {spec.get('maxReplicaCount')} is not the topic's partition "
                           f"count {sorted(partitions)}: consumers beyond it hold no partition")
        if (spec.get("minReplicaCount") or 0) < 1:
            problem(where, "minReplicaCount below 1: the retention job and the Redis guard run in consumers")
        for trigger in spec.get("triggers") or []:
            if trigger.get("type") != "kafka":
                problem(where, f"trigger {trigger.get('type')!r} is not the kafka scaler")
                continue
            metadata = trigger.get("metadata") or {}
            for key in sorted(set(metadata) - KAFKA_TRIGGER_KEYS):
                problem(where, f"kafka trigger metadata {key!r} is not a kafka scaler setting")
            for key, setting in (("bootstrapServers", "WORKER__KAFKA__BROKERS"),
                                 ("consumerGroup", "WORKER__KAFKA__GROUP_ID"),
                                 ("topic", "WORKER__KAFKA__TOPIC__NAME")):
                if {metadata.get(key)} != config.get(setting):
                    problem(where, f"trigger {key} {metadata.get(key)!r} is not the workers' {setting} {sorted(config.get(setting, []))}")
            if metadata.get("allowIdleConsumers", "false") != "false":
                problem(where, "allowIdleConsumers would add consumers beyond the partitions")

    # Services: clients never reach /metrics; metrics Services are headless and metrics-only.
    pods = [(d, d["spec"]["template"]) for d in deployments.values()]
    for o in by_kind.get("Service", []):
        where = f"Service {o['metadata']['name']}"
        selector = o["spec"].get("selector") or {}
        headless = o["spec"].get("clusterIP") == "None"
        for port in o["spec"].get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            for deployment, pod in pods:
                if not selects(selector, pod["metadata"].get("labels") or {}):
                    continue
                for c in pod["spec"]["containers"]:
                    for p in c.get("ports") or []:
                        is_target = target in (p.get("name"), p.get("containerPort"))
                        if is_target and p.get("name") == "metrics" and not headless:
                            problem(where, f"exposes the metrics port of {deployment['metadata']['name']} to clients")
            if headless and port.get("name") != "metrics":
                problem(where, f"headless metrics Service exposes {port.get('name')!r}")
        if not any(selects(selector, pod["metadata"].get("labels") or {}) for _, pod in pods):
            problem(where, "selects no pod")
    if overlay:
        monitors = by_kind.get("ServiceMonitor", [])
        if not monitors:
            problem("overlay", "renders no ServiceMonitor")
        for m in monitors:
            selected = [s for s in by_kind.get("Service", [])
                        if selects(m["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels") or {})]
            jobs = {s["metadata"]["labels"].get(m["spec"].get("jobLabel", "")) for s in selected}
            if jobs != {"insightflow-ingest", "insightflow-worker"}:
                problem(f"ServiceMonitor {m['metadata']['name']}", f"yields jobs {sorted(map(str, jobs))}, "
                        "not insightflow-ingest and insightflow-worker (the alert rules' job labels)")
            for e in m["spec"].get("endpoints") or []:
                if any(e.get("port") not in {p.get("name") for p in s["spec"]["ports"]} for s in selected):
                    problem(f"ServiceMonitor {m['metadata']['name']}", f"port {e.get('port')!r} is not on every selected Service")
        for o in by_kind.get("Deployment", []) + by_kind.get("Job", []):
            for c in o["spec"]["template"]["spec"]["containers"]:
                image = c.get("image", "")
                if image.startswith("insightflow/") or image.endswith((":local", ":latest")) or ":" not in image:
                    problem(f"{o['kind']} {o['metadata']['name']}", f"image {image!r} is not a release image")

    # The schema the pods wait for is this release's newest migration.
    migrations = sorted(p.name.split("_")[0] for p in (repo / "migrations").glob("*.sql"))
    versions = config.get("INSIGHTFLOW_SCHEMA_VERSION", set())
    if not migrations:
        problem("migrations", "no migrations/*.sql found")
    elif versions != {migrations[-1]}:
        problem("ConfigMap insightflow-worker", f"INSIGHTFLOW_SCHEMA_VERSION {sorted(versions)} is not the newest "
                f"migration {migrations[-1]}: pods would start before (or wait for) the wrong schema")

    for p in problems:
        print(f"check-manifests: {p}", file=sys.stderr)
    kinds = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items()))
    if not problems:
        print(f"check-manifests: {rendered.name}: our rules hold ({kinds})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
