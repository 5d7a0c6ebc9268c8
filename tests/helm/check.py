"""Checks the Dockerfile, .dockerignore and the Helm chart. Run by check.sh.

Renders the chart with its default values and with each tests/helm/values-*.yaml
and checks every document: Kubernetes shape (apiVersion, kind, metadata.name)
and the references between objects (selectors, named ports, ConfigMaps and
their keys, volumes, claims, the ServiceAccount, the HPA's target). The
rendered thermocline.toml must name only keys the README documents and, when a
thermocline binary is at hand, pass `thermocline check-config` with the
environment the Deployment gives it. Values that would lose data or cannot
start must make `helm template` fail.

Prints one line per check and, last, "N passed, M failed"; exits 1 on any
failure.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

passed = 0
failed = 0


def check(name: str, problems: list[str]) -> None:
    """Records one check: it passes when `problems` is empty."""
    global passed, failed
    if problems:
        failed += 1
        print(f"FAIL {name}")
        for p in problems:
            print(f"     {p}")
    else:
        passed += 1
        print(f"ok   {name}")


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


# --- Dockerfile and .dockerignore ------------------------------------------


def check_dockerfile(hadolint: str) -> None:
    r = run([hadolint, "--no-color", "--failure-threshold", "style", str(ROOT / "Dockerfile")])
    check("Dockerfile: hadolint reports nothing", [] if r.returncode == 0 and not r.stdout.strip()
          else (r.stdout + r.stderr).strip().splitlines())

    # Every path the build COPYs from the context must survive .dockerignore,
    # which leaves out everything and lets back in a list of paths.
    allowed = set()
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line.startswith("!"):
            allowed.add(line[1:].strip("/"))
    problems = []
    text = (ROOT / "Dockerfile").read_text()
    for m in re.finditer(r"^COPY\s+(?!--from)(.+)$", text, re.M):
        sources = m.group(1).split()[:-1]
        for src in sources:
            src = src.strip("./") or "."
            if src not in allowed:
                problems.append(f"COPY {src}: left out of the build context by .dockerignore")
            elif not (ROOT / src).exists():
                problems.append(f"COPY {src}: no such path in the repository")
    # Cargo.toml's targets must be inside what the builder copies.
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    paths = [t.get("path", f"benches/{t['name']}.rs") for t in cargo.get("bench", [])]
    paths += [t.get("path", "src/main.rs") for t in cargo.get("bin", [])]
    if (ROOT / "build.rs").exists() or "build" in cargo.get("package", {}):
        problems.append("the crate has a build script, which the Dockerfile does not copy")
    for p in paths:
        if p.split("/")[0] not in allowed:
            problems.append(f"Cargo.toml names {p}, which the image build does not copy")
    check("Dockerfile: COPY sources and Cargo.toml targets pass .dockerignore", problems)


# --- rendering ---------------------------------------------------------------


def helm_template(helm: str, chart: Path, args: list[str]) -> subprocess.CompletedProcess:
    return run([helm, "template", "rel", str(chart), "--namespace", "ns", *args])


def documented_keys() -> set[str]:
    """The configuration keys of the README's table (| `key` | default | meaning |)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[-1]
    return set(re.findall(r"^\|\s*`([a-z_.]+)`\s*\|", section, re.M))


def env_key(var: str, keys: set[str]) -> str | None:
    for k in keys:
        if "THERMOCLINE_" + k.replace(".", "_").upper() == var:
            return k
    return None


def flatten(table: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in table.items():
        if isinstance(v, dict):
            out += flatten(v, f"{prefix}{k}.")
        else:
            out.append(prefix + k)
    return out


def selector_matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_rendered(name: str, docs: list[dict], keys: set[str]) -> tuple[str, dict[str, str], dict]:
    """Checks one rendering; returns the config file, the container's
    environment and the Deployment, for check-config."""
    problems = []
    for i, d in enumerate(docs):
        for field in ("apiVersion", "kind"):
            if not isinstance(d.get(field), str) or not d[field]:
                problems.append(f"document {i}: no {field}")
        meta = d.get("metadata") or {}
        n = meta.get("name")
        if not isinstance(n, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", n):
            problems.append(f"document {i} ({d.get('kind')}): metadata.name {n!r} is not a valid name")
        elif d.get("kind") in ("Service", "Deployment") and len(n) > 63:
            problems.append(f"{d['kind']} {n}: name longer than 63 characters")
    check(f"{name}: every document has apiVersion, kind and a valid metadata.name", problems)

    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    named = {(d.get("kind"), (d.get("metadata") or {}).get("name")): d for d in docs}

    check(f"{name}: no Secret is rendered (secrets come from existing Secrets)",
          [f"Secret {s['metadata']['name']}" for s in by_kind.get("Secret", [])])

    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        check(f"{name}: one Deployment", [f"found {len(deployments)}"])
        return "", {}, {}
    dep = deployments[0]
    dep_name = dep["metadata"]["name"]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    containers = pod.get("containers", [])
    c = containers[0] if containers else {}
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}

    problems = []
    if not selector_matches(spec.get("selector", {}).get("matchLabels", {}), pod_labels):
        problems.append("Deployment selector does not match its pod labels")
    for svc in by_kind.get("Service", []):
        if not selector_matches(svc["spec"].get("selector", {}), pod_labels):
            problems.append(f"Service {svc['metadata']['name']}: selector does not match the pods")
        for p in svc["spec"].get("ports", []):
            if p.get("targetPort") not in ports and p.get("targetPort") not in ports.values():
                problems.append(f"Service port {p.get('name')}: targetPort {p.get('targetPort')!r} is no container port")
    svc_names = {p.get("name") for s in by_kind.get("Service", []) for p in s["spec"].get("ports", [])}
    if {"postgres", "admin"} - svc_names:
        problems.append(f"Service lacks ports {sorted({'postgres', 'admin'} - svc_names)}")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not selector_matches(pdb["spec"].get("selector", {}).get("matchLabels", {}), pod_labels):
            problems.append("PodDisruptionBudget selector does not match the pods")
        if ("minAvailable" in pdb["spec"]) == ("maxUnavailable" in pdb["spec"]):
            problems.append("PodDisruptionBudget must set exactly one of minAvailable and maxUnavailable")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"].get("scaleTargetRef", {})
        if (ref.get("kind"), ref.get("name")) != ("Deployment", dep_name):
            problems.append(f"HorizontalPodAutoscaler targets {ref}")
        if "replicas" in spec:
            problems.append("Deployment sets replicas although an HPA manages them")
    for sm in by_kind.get("ServiceMonitor", []):
        svcs = by_kind.get("Service", [])
        if not any(selector_matches(sm["spec"]["selector"].get("matchLabels", {}), s["metadata"].get("labels", {})) for s in svcs):
            problems.append("ServiceMonitor selector matches no Service")
        for e in sm["spec"].get("endpoints", []):
            if e.get("port") not in svc_names:
                problems.append(f"ServiceMonitor endpoint port {e.get('port')!r} is no Service port")
    check(f"{name}: selectors, Service ports, PDB, HPA and ServiceMonitor match the Deployment", problems)

    problems = []
    for probe in ("livenessProbe", "readinessProbe"):
        get = (c.get(probe) or {}).get("httpGet") or {}
        want = {"livenessProbe": "/health", "readinessProbe": "/ready"}[probe]
        if get.get("path") != want:
            problems.append(f"{probe} path {get.get('path')!r}, expected {want}")
        port = get.get("port")
        if ports.get(port, port if port in ports.values() else None) != 9187:
            problems.append(f"{probe} port {port!r} is not the admin container port 9187")
    if ports.get("postgres") != 6432 or ports.get("admin") != 9187:
        problems.append(f"container ports {ports}, expected postgres 6432 and admin 9187")
    check(f"{name}: probes GET /health and /ready on the admin port", problems)

    # Volumes, mounts and what they refer to.
    problems = []
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        if m.get("name") not in volumes:
            problems.append(f"volumeMount {m.get('name')!r} has no volume")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    # Every file mounted from a ConfigMap or Secret: path -> (kind, name, key).
    files: dict[str, tuple[str, str, str]] = {}
    for v in volumes.values():
        mount = next((p for p, m in mounts.items() if m["name"] == v["name"]), None)
        sources = [{k: v[k]} for k in ("configMap", "secret") if k in v]
        sources += (v.get("projected") or {}).get("sources", [])
        for s in sources:
            if "configMap" in s:
                ref, kind, ref_name = s["configMap"], "ConfigMap", s["configMap"].get("name")
                obj = named.get(("ConfigMap", ref_name))
                if obj is None:
                    problems.append(f"volume {v['name']}: ConfigMap {ref_name!r} is not rendered")
                    continue
                data = obj.get("data") or {}
                for item in ref.get("items", []):
                    if item["key"] not in data:
                        problems.append(f"ConfigMap {ref_name} has no key {item['key']!r}")
            elif "secret" in s:
                # Secrets are the user's own (existingSecret): only their mounts are checked.
                ref = s["secret"]
                kind, ref_name = "Secret", ref.get("name") or ref.get("secretName")
                if not ref_name:
                    problems.append(f"volume {v['name']}: a Secret without a name")
            else:
                continue
            if mount is None:
                problems.append(f"volume {v['name']} is not mounted")
                continue
            for item in ref.get("items", []):
                files[f"{mount}/{item['path']}"] = (kind, ref_name, item["key"])
        if "persistentVolumeClaim" in v:
            claim = v["persistentVolumeClaim"]["claimName"]
            if ("PersistentVolumeClaim", claim) not in named:
                problems.append(f"volume {v['name']}: claim {claim!r} is not rendered")
    sa = pod.get("serviceAccountName")
    if sa and sa != "default" and ("ServiceAccount", sa) not in named:
        problems.append(f"serviceAccountName {sa!r} is not rendered")
    args = c.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args else None
    if args[:1] != ["serve"] or files.get(config_path, ("",))[0] != "ConfigMap":
        problems.append(f"args {args}: the --config file is not mounted from a ConfigMap")
    check(f"{name}: mounts, ConfigMaps and their keys, claims and the ServiceAccount exist", problems)

    # The environment and the config file against the README's keys.
    problems = []
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in (e.get("valueFrom") or {}):
            env[e["name"]] = "<secret>"
        if e["name"].startswith("THERMOCLINE_") and env_key(e["name"], keys) is None:
            problems.append(f"env {e['name']} is no documented key")
    config_text = ""
    if config_path in files and files[config_path][0] == "ConfigMap":
        _, cm, key = files[config_path]
        config_text = named[("ConfigMap", cm)]["data"][key]
        try:
            table = tomllib.loads(config_text)
        except tomllib.TOMLDecodeError as e:
            problems.append(f"thermocline.toml is not valid TOML: {e}")
            table = {}
        for k in flatten(table):
            if k not in keys:
                problems.append(f"thermocline.toml: key {k!r} is not in the README's Configuration table")
            if env_key_name(k) in env:
                problems.append(f"thermocline.toml sets {k}, which the Deployment's {env_key_name(k)} overrides")
        shutdown = str(table.get("shutdown_timeout", "30s"))
        pre = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command", ["sleep", "0"])
        want = int(shutdown.rstrip("s")) + int(pre[-1]) + 10
        if pod.get("terminationGracePeriodSeconds") != want:
            problems.append(f"terminationGracePeriodSeconds {pod.get('terminationGracePeriodSeconds')}, "
                            f"expected shutdown_timeout {shutdown} + preStop {pre[-1]}s + 10 = {want}")
        catalog = env.get("THERMOCLINE_CATALOG_DIR")
        if catalog and not any(p.startswith(catalog + "/") for p in files):
            problems.append(f"THERMOCLINE_CATALOG_DIR {catalog} holds no mounted tier file")
        for k in ("THERMOCLINE_LISTEN", "THERMOCLINE_ADMIN_LISTEN"):
            port = {"THERMOCLINE_LISTEN": 6432, "THERMOCLINE_ADMIN_LISTEN": 9187}[k]
            if env.get(k) != f"0.0.0.0:{port}":
                problems.append(f"{k}={env.get(k)!r}, expected 0.0.0.0:{port}")
        tls = table.get("tls") or {}
        for f in (tls.get("cert"), tls.get("key")):
            if f and files.get(f, ("",))[0] != "Secret":
                problems.append(f"tls file {f} is not mounted from a Secret")
    check(f"{name}: thermocline.toml and THERMOCLINE_* use documented keys; grace period fits", problems)

    problems = []
    sc = c.get("securityContext") or {}
    psc = pod.get("securityContext") or {}
    if not sc.get("readOnlyRootFilesystem"):
        problems.append("readOnlyRootFilesystem is not set")
    if not psc.get("runAsNonRoot") or not psc.get("runAsUser"):
        problems.append("the pod does not run as a non-root user")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    warehouse = env.get("THERMOCLINE_LAKE_WAREHOUSE", "")
    if not any(warehouse == p or warehouse.startswith(p + "/") for p in mounts):
        problems.append(f"lake warehouse {warehouse!r} is not on a writable volume")
    if "/tmp" not in mounts:
        problems.append("/tmp is not a volume (the root filesystem is read-only)")
    check(f"{name}: non-root, read-only root filesystem, writable lake and /tmp", problems)

    return config_text, env, dep


def env_key_name(key: str) -> str:
    return "THERMOCLINE_" + key.replace(".", "_").upper()


def check_config_with_binary(name: str, binary: str, config_text: str, env: dict[str, str],
                             docs: list[dict]) -> None:
    """Runs `thermocline check-config` on the rendered file, with the
    Deployment's environment and its mounted paths moved into a temporary
    directory."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        text = config_text
        for path in ("/etc/thermocline/tls/tls.crt", "/etc/thermocline/tls/tls.key"):
            local = t / Path(path).name
            local.write_text("placeholder\n")
            text = text.replace(path, str(local))
        (t / "thermocline.toml").write_text(text)
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("THERMOCLINE_")}
        for k, v in env.items():
            if k == "THERMOCLINE_POSTGRES_URL":
                v = "postgres://db.internal:5432/app?sslmode=disable"
            elif k == "THERMOCLINE_CATALOG_DIR":
                (t / "catalog").mkdir()
                for d in docs:
                    if d.get("kind") == "ConfigMap" and d["metadata"]["name"].endswith("-catalog"):
                        for f, content in d["data"].items():
                            (t / "catalog" / f).write_text(content)
                v = str(t / "catalog")
            elif k == "THERMOCLINE_LAKE_WAREHOUSE":
                v = str(t / "lake")
            run_env[k] = v
        r = run([binary, "check-config", "--config", str(t / "thermocline.toml")], env=run_env)
        check(f"{name}: `thermocline check-config` accepts the rendered config",
              [] if r.returncode == 0 else [f"exit {r.returncode}: {(r.stdout + r.stderr).strip()}"])


# --- main ----------------------------------------------------------------------

# Values that must stop `helm template`, and a piece of the message it must give.
REFUSED = [
    ("no Postgres", ["--set", "postgres.existingSecret="], "needs a Postgres"),
    ("tiers without persistence", ["--set-string", "tiers.orders\\.toml=x"], "persistence.enabled"),
    ("tiers with two replicas", ["--set-string", "tiers.orders\\.toml=x", "--set", "persistence.enabled=true"],
     "replicaCount=1"),
    ("tiers with autoscaling", ["--set-string", "tiers.orders\\.toml=x", "--set", "persistence.enabled=true",
                                "--set", "replicaCount=1", "--set", "autoscaling.enabled=true"], "replicaCount=1"),
    ("a tier file not named *.toml", ["--set-string", "tiers.orders=x", "--set", "persistence.enabled=true",
                                      "--set", "replicaCount=1"], "not a valid file name"),
    ("shutdownTimeoutSeconds as a duration", ["--set-string", "config.shutdownTimeoutSeconds=30s"],
     "whole number of seconds"),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--helm", required=True)
    ap.add_argument("--hadolint", required=True)
    ap.add_argument("--chart", default=str(ROOT / "helm" / "thermocline"))
    ap.add_argument("--thermocline", default="", help="a thermocline binary for check-config")
    a = ap.parse_args()
    chart = Path(a.chart)

    check_dockerfile(a.hadolint)

    keys = documented_keys()
    check("README: the Configuration table lists keys", [] if len(keys) >= 10 else [f"found {sorted(keys)}"])

    scenarios = [("default values", [])] + [
        (f"values-{p.stem.removeprefix('values-')}", ["-f", str(p)]) for p in sorted(HERE.glob("values-*.yaml"))
    ]
    for name, args in scenarios:
        r = run([a.helm, "lint", "--strict", str(chart), *args])
        check(f"{name}: helm lint --strict", [] if r.returncode == 0 else (r.stdout + r.stderr).strip().splitlines())
        r = run([a.helm, "install", "rel", str(chart), "--namespace", "ns", "--dry-run=client", *args])
        check(f"{name}: helm install --dry-run=client renders NOTES.txt",
              [] if r.returncode == 0 and "\nNOTES:\n" in r.stdout else (r.stdout[-2000:] + r.stderr).strip().splitlines())
        r = helm_template(a.helm, chart, args)
        if r.returncode != 0:
            check(f"{name}: helm template", r.stderr.strip().splitlines())
            continue
        try:
            docs = [d for d in yaml.safe_load_all(r.stdout) if d is not None]
        except yaml.YAMLError as e:
            check(f"{name}: helm template renders YAML", [str(e)])
            continue
        check(f"{name}: helm template renders YAML documents", [] if docs else ["no documents"])
        config_text, env, dep = check_rendered(name, docs, keys)
        if a.thermocline and config_text:
            check_config_with_binary(name, a.thermocline, config_text, env, docs)

    # With existingClaim the chart renders no claim and mounts the given one.
    r = helm_template(a.helm, chart, ["-f", str(HERE / "values-tiered.yaml"),
                                      "--set", "persistence.existingClaim=existing-lake"])
    docs = [d for d in yaml.safe_load_all(r.stdout) if d] if r.returncode == 0 else []
    claims = [d["metadata"]["name"] for d in docs if d.get("kind") == "PersistentVolumeClaim"]
    mounted = [v["persistentVolumeClaim"]["claimName"] for d in docs if d.get("kind") == "Deployment"
               for v in d["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    check("persistence.existingClaim: no claim rendered, the existing one mounted",
          [] if r.returncode == 0 and not claims and mounted == ["existing-lake"]
          else [f"exit {r.returncode}, claims {claims}, mounted {mounted}", r.stderr.strip()])

    for what, args, message in REFUSED:
        r = helm_template(a.helm, chart, args)
        check(f"refused: {what}",
              [] if r.returncode != 0 and message in r.stderr
              else [f"helm template exit {r.returncode}; expected an error containing {message!r}",
                    r.stderr.strip()])

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
