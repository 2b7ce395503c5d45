"""The deployment files (docker/), checked offline with the real tools, since no Docker engine or
cluster runs here: Docker Compose's own loader (``docker-compose config``, the compose-spec
schema and interpolation), hadolint on every Dockerfile, ``kubernetes-validate --strict`` on the
manifests, ``systemd-analyze verify`` and ``security`` on the unit. On top: every file they name
exists (or is one of the documented secrets), and every ``hyperfleet ...`` command line in them
parses with the real CLI parser, so a renamed flag breaks this test rather than a deployment.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.device_class import load_device_class
from cloud.dynaspark.runner import cluster_cores
from cloud.pipelines import agent_shard_name
from coordinator.job import JobSpec
from hyperfleet.cli import build_parser
from hyperfleet.spark import split_script_args
from protocol import parse_broker_url

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
COMPOSE = DOCKER / "compose.yaml"
UNIT = DOCKER / "systemd" / "hyperfleet-agent.service"
UNIT_ENV = DOCKER / "systemd" / "hyperfleet-agent.env"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
AGENTS = ("agent-1", "agent-2", "agent-3")
# The file contract with `hyperfleet certs --out DIR` and `hyperfleet acl --out DIR`.
SECRETS = {
    "secrets/certs/ca.crt",
    "secrets/certs/broker.crt",
    "secrets/certs/broker.key",
    "secrets/certs/coordinator.crt",
    "secrets/certs/coordinator.key",
    "secrets/mqtt",
    *(f"secrets/certs/agents/{a}.{ext}" for a in AGENTS for ext in ("crt", "key")),
}
PASSWORDS = {
    "HF_MQTT_PASSWORD_COORDINATOR": "pw-coordinator",
    "HF_MQTT_PASSWORD_ROMA": "pw-roma",
    **{f"HF_MQTT_PASSWORD_AGENT_{i}": f"pw-agent-{i}" for i in (1, 2, 3)},
    "HF_ROMA_TOKEN": "token",
}


def _tool(name: str) -> str:
    """A dev-extra tool installed beside this interpreter (or on PATH)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: it is in the dev extra (make venv installs it)")
    return found


def _run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def _parse_hyperfleet(argv: list[str]) -> Any:
    """``hyperfleet ARGV`` parsed by the real parser; a bad flag fails the test with its line."""
    ours, _script_args = split_script_args(argv)
    try:
        return build_parser().parse_args(ours)
    except SystemExit as exc:
        pytest.fail(f"hyperfleet {shlex.join(argv)} does not parse (exit {exc.code})")


def _conf(pairs: list[str]) -> dict[str, str]:
    """``--conf K=V`` flags as a mapping, as ``hyperfleet spark`` reads them."""
    return dict(pair.split("=", 1) for pair in pairs)


def _script_commands(script: str) -> Iterator[list[str]]:
    """The ``hyperfleet ...`` invocations in a shell script, one per line (after ``||``/``&&``)."""
    for line in script.splitlines():
        _, sep, rest = line.partition("hyperfleet ")
        if sep and not rest.startswith(("-", "/")) and "import" not in line:
            command = re.split(r"\s(?:\|\||&&)\s", rest)[0]
            yield shlex.split(command)


# --------------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env = tmp_path_factory.mktemp("compose") / "test.env"
    env.write_text("".join(f"{k}={v}\n" for k, v in PASSWORDS.items()))
    proc = _run(_tool("docker-compose"), "-f", str(COMPOSE), "--env-file", str(env),
                "config", "--format", "json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_compose_is_a_valid_compose_file_with_the_whole_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"mosquitto", "spark-master", "spark-worker", "prepare",
                             "coordinator", "roma", *AGENTS}  # fmt: skip
    # Everything but the one-shot jobs comes back; the agents wait for the data and the broker.
    assert services["prepare"]["restart"] == "no"
    for agent in AGENTS:
        deps = services[agent]["depends_on"]
        assert deps["mosquitto"]["condition"] == "service_healthy"
        assert deps["prepare"]["condition"] == "service_completed_successfully"
    # Our containers run hardened; the images themselves run as uid 10001 (test below).
    for name in ("coordinator", "roma", *AGENTS):
        assert services[name]["read_only"] is True
        assert services[name]["cap_drop"] == ["ALL"]


def test_compose_refuses_to_start_without_the_passwords() -> None:
    proc = _run(_tool("docker-compose"), "-f", str(COMPOSE), "config", "--quiet",
                cwd=DOCKER)  # fmt: skip
    assert proc.returncode != 0
    for variable in PASSWORDS:
        assert variable in proc.stderr


def test_compose_spec_violations_are_caught(tmp_path: Path) -> None:
    """The loader is a real validator: an unknown key fails (so the passing test means something)."""
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("restart: unless-stopped", "restrat: no", 1))
    env = tmp_path / "test.env"
    env.write_text("".join(f"{k}={v}\n" for k, v in PASSWORDS.items()))
    proc = _run(_tool("docker-compose"), "-f", str(bad), "--env-file", str(env), "config", "-q")
    assert proc.returncode != 0
    assert "restrat" in proc.stderr


def test_compose_names_only_files_that_exist_or_the_documented_secrets(
    compose: dict[str, Any],
) -> None:
    secrets_seen = set()
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = Path(build["context"])
            assert (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            if volume["type"] != "bind":
                continue
            rel = Path(volume["source"]).relative_to(DOCKER).as_posix()
            if rel.startswith("secrets/"):
                assert rel in SECRETS, f"{name} mounts {rel}, which no CLI command writes"
                assert volume.get("read_only") is True, f"{name}: {rel} must be read-only"
                secrets_seen.add(rel)
            elif rel != "raw":  # the optional raw input, created empty when absent
                assert (DOCKER / rel).exists(), f"{name} mounts {rel}, which is not in the repo"
    assert secrets_seen == SECRETS


def test_compose_commands_parse_with_the_cli(compose: dict[str, Any]) -> None:
    services = compose["services"]
    parsed: dict[str, Any] = {}
    for name, service in services.items():
        image = service.get("image", "")
        if not image.startswith("hyperfleet/") or service.get("entrypoint") is not None:
            continue
        parsed[name] = _parse_hyperfleet(service["command"])
    prepare = services["prepare"]
    assert prepare["entrypoint"] == ["/bin/sh", "-ec"]
    script = prepare["command"][0].replace("$$", "$")
    steps = [_parse_hyperfleet(argv) for argv in _script_commands(script)]
    assert [(s.command, s.spark_command) for s in steps] == [("spark", "profile"), ("spark", "run")]
    assert all(s.master == "spark://spark-master:7077" for s in steps)
    # The runner can size the cluster (it refuses a standalone master whose cores it cannot know).
    assert cluster_cores(steps[1].master, _conf(steps[1].conf)) == (2, 1)
    assert {n: a.command for n, a in parsed.items()} == {
        "coordinator": "coordinator", "roma": "serve", **dict.fromkeys(AGENTS, "agent"),
    }  # fmt: skip

    # The agents: their ids are their broker usernames (the ACL's contract), their device
    # classes exist, and their shards are the ones the preparation job writes.
    for i, agent in enumerate(AGENTS):
        args = parsed[agent]
        assert args.agent_id == agent
        load_device_class(args.device_class)
        assert args.data.name == agent_shard_name(i)
        broker = parse_broker_url(services[agent]["environment"]["HYPERFLEET_BROKER"])
        assert (broker.tls, broker.host, broker.port, broker.username) == (
            True, "mosquitto", 8883, agent,
        )  # fmt: skip
    roma = parse_broker_url(parsed["roma"].broker)
    assert (roma.tls, roma.username, roma.password) == (True, "roma", "pw-roma")
    coordinator = parse_broker_url(services["coordinator"]["environment"]["HYPERFLEET_BROKER"])
    assert (coordinator.tls, coordinator.username) == (True, "coordinator")


def test_compose_job_file_is_a_valid_job_for_the_three_agents(compose: dict[str, Any]) -> None:
    args = _parse_hyperfleet(compose["services"]["coordinator"]["command"])
    mounts = {v["target"]: Path(v["source"]) for v in compose["services"]["coordinator"]["volumes"]
              if v["type"] == "bind"}  # fmt: skip
    job = mounts[str(args.job.parent)] / args.job.name
    spec = JobSpec.model_validate(tomllib.loads(job.read_text()))
    assert spec.rounds.min_agents == len(AGENTS)
    assert spec.holdout.is_relative_to("/var/lib/hyperfleet/data/prepared")


def test_mosquitto_conf_is_tls_only_with_passwords_and_acl(compose: dict[str, Any]) -> None:
    conf = (DOCKER / "mosquitto" / "mosquitto.conf").read_text()
    settings = [line.split(None, 1) for line in conf.splitlines()
                if line.strip() and not line.startswith("#")]  # fmt: skip
    values = {k: v.strip() for k, v in settings}
    assert values["allow_anonymous"] == "false"
    assert [v for k, v in settings if k == "listener"] == ["8883"]
    targets = {v["target"] for v in compose["services"]["mosquitto"]["volumes"]}
    for key in ("cafile", "certfile", "keyfile"):
        assert values[key] in targets, key
    for key in ("password_file", "acl_file"):
        assert Path(values[key]).parent.as_posix() in targets, key


# ------------------------------------------------------------------------------ Dockerfiles


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint_and_runs_as_non_root(dockerfile: Path) -> None:
    proc = _run(_tool("hadolint"), "--no-color", "--failure-threshold", "info", str(dockerfile))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), flags=re.MULTILINE)
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), users[-1]
    assert int(uid) != 0, users[-1]


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    proc = _run(_tool("hadolint"), "--no-color", str(bad))
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # latest tag


def test_the_slim_agent_image_is_multi_arch_by_construction() -> None:
    """No per-architecture download in the slim image: only pip wheels on a multi-arch base."""
    text = (DOCKER / "Dockerfile.agent").read_text()
    assert "python:3.11-slim" in text
    for word in ("curl", "wget", "TARGETARCH", "tensorflow", ".[edge,"):
        assert word not in text, word
    assert '".[edge]"' in text


def test_dockerignore_lets_in_every_package_the_wheel_needs() -> None:
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {p.rstrip("*") for p in include["packages"]["find"]["include"]}
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}  # fmt: skip
    assert packages | {"pyproject.toml", "README.md", "docker/cloud-entrypoint.sh"} <= allowed


def test_cloud_entrypoint_is_valid_sh() -> None:
    proc = _run("sh", "-n", str(DOCKER / "cloud-entrypoint.sh"))
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------ Kubernetes


def _k8s_docs() -> Iterator[dict[str, Any]]:
    for path in MANIFESTS:
        yield from (d for d in yaml.safe_load_all(path.read_text()) if d)


def test_manifests_pass_kubernetes_validate_strict() -> None:
    for version in ("1.30", "1.37"):
        proc = _run(_tool("kubernetes-validate"), "--strict", "--quiet", "-k", version,
                    *map(str, MANIFESTS))  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kubernetes_validate_catches_an_unknown_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((K8S / "roma.yaml").read_text().replace("readinessProbe:", "readynessProbe:"))
    proc = _run(_tool("kubernetes-validate"), "--strict", "--quiet", str(bad))
    assert proc.returncode != 0
    assert "readynessProbe" in proc.stdout + proc.stderr


def test_manifests_cover_each_role() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in _k8s_docs()}
    assert {("StatefulSet", "coordinator-digits"), ("Deployment", "mosquitto"),
            ("Deployment", "roma"), ("Service", "roma"), ("HorizontalPodAutoscaler", "roma"),
            ("ServiceAccount", "spark-driver"), ("Role", "spark-driver"),
            ("RoleBinding", "spark-driver"), ("Job", "prepare-digits"),
            ("Pod", "spark-executor")} <= kinds  # fmt: skip
    (sts,) = (d for d in _k8s_docs() if d["kind"] == "StatefulSet")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]
              ["volumeMounts"]}  # fmt: skip
    args = _parse_hyperfleet(sts["spec"]["template"]["spec"]["containers"][0]["args"])
    assert str(args.state_dir) == mounts[claim["metadata"]["name"]]


def test_kustomization_names_files_that_exist_or_the_documented_secrets() -> None:
    kz = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kz["resources"]:
        assert (K8S / resource).is_file(), resource
    files = [f.split("=")[-1] for g in kz["configMapGenerator"] + kz["secretGenerator"]
             for f in g.get("files", [])]  # fmt: skip
    for f in files:
        rel = (K8S / f).resolve().relative_to(DOCKER).as_posix()
        assert rel in SECRETS or rel.startswith("secrets/mqtt/") or (K8S / f).is_file(), f
    envs = [e for g in kz["secretGenerator"] for e in g.get("envs", [])]
    assert envs == ["clients.env"]
    assert (K8S / "clients.env.example").is_file()


def test_kustomization_renders_to_valid_manifests_in_one_namespace(tmp_path: Path) -> None:
    """``kubectl kustomize`` renders the folder (with stand-in secrets), and the result, generated
    ConfigMaps and Secrets included, passes ``kubernetes-validate --strict``."""
    docker = tmp_path / "docker"
    shutil.copytree(DOCKER, docker, ignore=shutil.ignore_patterns("secrets", ".env", "raw"))
    for rel in SECRETS - {"secrets/mqtt"} | {"secrets/mqtt/passwd", "secrets/mqtt/acl"}:
        (docker / rel).parent.mkdir(parents=True, exist_ok=True)
        (docker / rel).write_text("stand-in\n")
    shutil.copy(docker / "k8s" / "clients.env.example", docker / "k8s" / "clients.env")
    proc = _run(_tool("kubectl"), "kustomize", "--load-restrictor", "LoadRestrictionsNone",
                str(docker / "k8s"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(proc.stdout)
    check = _run(_tool("kubernetes-validate"), "--strict", "--quiet", str(rendered))
    assert check.returncode == 0, check.stdout + check.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "hyperfleet", d["metadata"]["name"]
    (conf,) = (d for d in docs if d["metadata"]["name"] == "mosquitto-config")
    assert conf["data"]["mosquitto.conf"] == (DOCKER / "mosquitto" / "mosquitto.conf").read_text()
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Secret", "mosquitto-tls"), ("Secret", "mosquitto-auth"), ("Secret", "mqtt-clients"),
            ("Secret", "coordinator-tls"), ("Secret", "hyperfleet-ca"),
            ("ConfigMap", "spark-executor-template")} <= names  # fmt: skip
    # Every ConfigMap and Secret a pod mounts or reads is one the folder makes.
    for d in docs:
        for c in _containers(d):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ("Secret", ref["name"]) in names, ref
        spec = d.get("spec", {})
        pod = spec if d["kind"] == "Pod" else spec.get("template", {}).get("spec", {})
        for v in pod.get("volumes", []):
            if "secret" in v:
                assert ("Secret", v["secret"]["secretName"]) in names, v
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in names, v
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in names, v


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    pod = spec if doc["kind"] == "Pod" else spec.get("template", {}).get("spec", {})
    containers: list[dict[str, Any]] = pod.get("containers", [])
    return containers


def test_manifest_commands_parse_with_the_cli() -> None:
    seen = []
    for doc in _k8s_docs():
        for c in _containers(doc):
            if not c["image"].startswith("hyperfleet/"):
                continue
            env = {e["name"]: e for e in c.get("env", [])}
            if "command" not in c and "args" in c:
                # $(VAR) is the kubelet's expansion from the container's env.
                args = [_expand(a, env) for a in c["args"]]
                seen.append(_parse_hyperfleet(args).command)
            elif c.get("command") == ["/bin/sh", "-ec"]:
                for argv in _script_commands(c["args"][0]):
                    args = _parse_hyperfleet(argv)
                    assert args.master.startswith("k8s://https://kubernetes.default.svc")
                    if args.spark_command == "run":
                        assert cluster_cores(args.master, _conf(args.conf)) == (8, 1)
                    seen.append(f"{args.command} {args.spark_command}")
    assert sorted(seen) == ["coordinator", "serve", "spark profile", "spark run"]


def _expand(arg: str, env: dict[str, Any]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: _dummy(m.group(1), env), arg)


def _dummy(name: str, env: dict[str, Any]) -> str:
    assert name in env, f"$({name}) is not in the container's env"
    key = env[name]["valueFrom"]["secretKeyRef"]["key"]
    assert key.endswith("-url"), key
    return "mqtts://user:pw@mosquitto.hyperfleet.svc:8883"


def test_k8s_job_config_is_a_valid_job() -> None:
    (cm,) = (d for d in _k8s_docs() if d["kind"] == "ConfigMap"
             and d["metadata"]["name"] == "coordinator-digits-job")  # fmt: skip
    spec = JobSpec.model_validate(tomllib.loads(cm["data"]["job.toml"]))
    assert spec.job_id == "digits"


# ---------------------------------------------------------------------------------- systemd


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart's binary at a path that exists here (verify checks it)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (a systemd host has it): unit not verified")
    exe = tmp_path / "hyperfleet"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/opt/hyperfleet/bin/hyperfleet", str(exe)))
    return copy


def test_unit_passes_systemd_analyze_verify(unit_copy: Path) -> None:
    proc = _run("systemd-analyze", "verify", str(unit_copy))
    # Unknown keys are only warnings (exit 0): any output at all fails here.
    assert proc.returncode == 0, proc.stderr
    assert not proc.stderr.strip(), proc.stderr


def test_systemd_analyze_catches_a_misspelt_key(unit_copy: Path) -> None:
    unit_copy.write_text(unit_copy.read_text().replace("ProtectSystem=", "ProtectSytem="))
    proc = _run("systemd-analyze", "verify", str(unit_copy))
    assert "ProtectSytem" in proc.stderr


def test_unit_is_hardened(unit_copy: Path) -> None:
    """systemd's own exposure score (0 safe .. 10 exposed) stays at 2.5 or below."""
    proc = _run("systemd-analyze", "security", "--offline=yes", "--threshold=25", str(unit_copy))
    assert proc.returncode == 0, proc.stdout[-3000:]
    text = UNIT.read_text()
    for line in ("DynamicUser=yes", "ProtectSystem=strict", "StateDirectory=hyperfleet-agent",
                 "Restart=on-failure", "EnvironmentFile=/etc/hyperfleet/agent.env"):  # fmt: skip
        assert line in text.splitlines(), line


def test_unit_command_parses_with_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    env = dict(line.split("=", 1) for line in UNIT_ENV.read_text().splitlines()
               if line and not line.startswith("#"))  # fmt: skip
    (exec_start,) = (line.split("=", 1)[1] for line in UNIT.read_text().splitlines()
                     if line.startswith("ExecStart="))  # fmt: skip
    argv = shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], exec_start))
    assert argv[0] == "/opt/hyperfleet/bin/hyperfleet"
    monkeypatch.setenv("HYPERFLEET_BROKER", env["HYPERFLEET_BROKER"])
    args = _parse_hyperfleet(argv[1:])
    assert args.command == "agent"
    assert args.broker.startswith("mqtts://")
    load_device_class(args.device_class)
    # StateDirectory= is /var/lib/<name>, where the shard lives.
    assert args.data.parent == Path("/var/lib/hyperfleet-agent")
