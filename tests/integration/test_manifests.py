"""The deployment files in deploy/ are valid for their tools and agree with wanhook and with each other.

No container engine or cluster runs here, so each file is checked the way its tool would read it: Kubernetes
manifests against the API's JSON schemas (kubernetes-validate, bundled, strict), the compose file against the
Compose Specification's schema (bundled with check-jsonschema), the Dockerfile through a parser, the systemd units
with systemd's own verifier where it is installed. Every command they run is parsed by wanhook's own CLI.
"""

from __future__ import annotations

import configparser
import http.server
import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from kubernetes_validate.utils import latest_version

from wanhook.service.cli.main import parser
from wanhook.service.web.app import ROUTES

from ..support import ROOT, free_port

DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
# The oldest Kubernetes the manifests are meant for, and the newest whose schemas the validator bundles.
KUBERNETES_VERSIONS = ("1.29.0", latest_version())
# Applied by hand when wanted, so not listed in kustomization.yaml.
OPTIONAL_MANIFESTS = {"consume.yaml", "redis.yaml", "secret.example.yaml"}
# A registry image pinned to a release: name:1.2.3..., optionally @sha256:<digest>.
PINNED = re.compile(r"^[\w.\-/]+:\d+\.\d+\.\d+[\w.\-]*(@sha256:[0-9a-f]{64})?$")
ROUTE_PATHS = {route.path for route in ROUTES}


def wanhook_command(argv: list[str]) -> Any:
    """``argv`` (after the program name) as wanhook parses it; fails the test on anything it would refuse."""
    try:
        return parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"wanhook refuses the arguments {argv}")


def command_name(argv: list[str]) -> str:
    return wanhook_command(argv).handler.__name__


def known_variables() -> set[str]:
    """Variable names the settings reference documents (DOCUMENTED in service/config.py, from which
    docs/reference/settings.md is generated)."""
    from wanhook.service.config import DOCUMENTED

    return {name for row in DOCUMENTED for name in row.names}


# --- the image ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE))


def instructions(dockerfile: DockerfileParser, name: str, stage: int = -1) -> list[str]:
    """The values of one instruction in one build stage (the last, the runtime image, by default)."""
    stages: list[list[dict[str, Any]]] = []
    for item in dockerfile.structure:
        if item["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(item)
    return [item["value"] for item in stages[stage] if item["instruction"] == name]


def test_image_is_multi_stage_from_pinned_bases(dockerfile: DockerfileParser) -> None:
    assert dockerfile.is_multistage
    bases = dockerfile.parent_images
    assert len(bases) >= 2
    for base in bases:
        assert PINNED.match(base), f"{base} is not pinned to a release"
    python = re.match(r"python:(\d+)\.(\d+)\.", bases[-1])
    assert python and (int(python[1]), int(python[2])) >= (3, 11)
    # The runtime stage takes only the built environment from the build stage, not its compiler.
    assert any(value.startswith("--from=build ") for value in instructions(dockerfile, "COPY"))
    assert not any("build-essential" in value for value in instructions(dockerfile, "RUN"))


def test_image_runs_as_a_numeric_non_root_user(dockerfile: DockerfileParser) -> None:
    [user] = instructions(dockerfile, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so Kubernetes can check runAsNonRoot


def test_image_copies_what_the_repository_has(dockerfile: DockerfileParser) -> None:
    ignored = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    for value in instructions(dockerfile, "COPY", stage=0):
        *sources, _ = shlex.split(value)
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/").split("/")[0] not in ignored, f"{source} is excluded from the build context"
    assert {".venv", ".git", "wanhook-data"} <= set(ignored)


def test_image_installs_extras_the_project_defines(dockerfile: DockerfileParser) -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    [arg] = [value for value in instructions(dockerfile, "ARG", stage=0) if value.startswith("EXTRAS=")]
    for extra in arg.removeprefix("EXTRAS=").split(","):
        assert extra in extras, f"pyproject.toml has no extra {extra!r}"


def modules_the_image_lacks(dockerfile: DockerfileParser) -> set[str]:
    """Top-level modules of the extras the image does not install (the test extra's tools aside)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    [arg] = [value for value in instructions(dockerfile, "ARG", stage=0) if value.startswith("EXTRAS=")]
    installed = set(arg.removeprefix("EXTRAS=").split(",")) | {"test"}
    wanted = {
        re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for name, requirements in extras.items()
        if name not in installed
        for requirement in requirements
    }
    modules: set[str] = set()
    for module, distributions in importlib.metadata.packages_distributions().items():
        if any(distribution.lower().replace("_", "-") in wanted for distribution in distributions):
            modules.add(module)
    return modules - {"wanhook"}


def test_image_commands_work_without_the_extras_it_leaves_out(dockerfile: DockerfileParser) -> None:
    # Each command's code is imported as its handler would; a module of a left-out extra (the emulator's PyAV)
    # is made unimportable, as it is in the image.
    lacking = sorted(modules_the_image_lacks(dockerfile))
    commands = [
        json.loads(instructions(dockerfile, "CMD")[0]),
        ["worker"],
        ["consume"],
        ["eventbridge", "setup", "--dry-run"],
    ]
    code = "\n".join(
        [
            "import sys",
            f"for name in {lacking!r}: sys.modules[name] = None",
            "from wanhook.service.cli.main import parser",
            f"for argv in {commands!r}: parser().parse_args(argv)",
            "import wanhook.service.web.app, wanhook.service.runtime, wanhook.consumers.rocketmq",
            "import wanhook.service.cli.eventbridge as setup; setup._sdk()",
        ]
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"without {lacking}:\n{result.stderr[-2000:]}"


def test_image_command_is_wanhook_serve_on_the_exposed_port(dockerfile: DockerfileParser) -> None:
    [entrypoint] = instructions(dockerfile, "ENTRYPOINT")
    [cmd] = instructions(dockerfile, "CMD")
    program, *prefix = json.loads(entrypoint)
    assert program == "wanhook"
    args = wanhook_command([*prefix, *json.loads(cmd)])
    assert args.handler.__name__ == "serve"
    assert args.host == "0.0.0.0"
    [exposed] = instructions(dockerfile, "EXPOSE")
    assert exposed == str(args.port)
    env = " ".join(instructions(dockerfile, "ENV"))
    assert "PATH=/opt/wanhook/bin:" in env  # where the build stage's venv puts the wanhook script


class Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (the handler's name is fixed by http.server)
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[Health]]]:
    handler = type("Handler", (Health,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_is_python_on_healthz_and_fails_when_unhealthy(
    dockerfile: DockerfileParser, health_server: tuple[int, type[Health]]
) -> None:
    [healthcheck] = instructions(dockerfile, "HEALTHCHECK")
    # The slim base has neither curl nor wget, and the runtime stage installs nothing.
    assert not any(tool in value for value in instructions(dockerfile, "RUN") for tool in ("curl", "wget", "apt-get"))
    assert "curl" not in healthcheck and "wget" not in healthcheck
    program, *argv = json.loads(healthcheck.split("CMD", 1)[1])
    assert program == "python"
    [cmd] = instructions(dockerfile, "CMD")
    serve_port = wanhook_command(json.loads(cmd)).port
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(argv))
    assert url and int(url[1]) == serve_port and url[2] == "/healthz" and url[2] in ROUTE_PATHS
    # Run it as the container would, against a stand-in for serve on a free port.
    port, handler = health_server
    local = [arg.replace(f"127.0.0.1:{serve_port}", f"127.0.0.1:{port}") for arg in argv]
    assert subprocess.run([sys.executable, *local], capture_output=True, timeout=30).returncode == 0
    handler.status = 500
    assert subprocess.run([sys.executable, *local], capture_output=True, timeout=30).returncode != 0


# --- compose -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def check_compose_schema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any], tmp_path: Path) -> None:
    result = check_compose_schema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    # The check has teeth: a misspelt key fails it.
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["worker"]["restart_policy"] = "always"
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    assert check_compose_schema(tmp_path / "compose.yaml").returncode != 0


def test_compose_services_share_redis_and_the_data_volume(compose: dict[str, Any]) -> None:
    services = compose["services"]
    wanhook = {name: service for name, service in services.items() if service.get("image", "").startswith("wanhook")}
    assert {command_name(service["command"]) for service in wanhook.values()} == {"serve", "worker", "consume"}
    assert len({service["environment"]["WANHOOK_REDIS_URL"] for service in wanhook.values()}) == 1
    redis_host = re.match(r"redis://([^:/]+)", wanhook["serve"]["environment"]["WANHOOK_REDIS_URL"])
    assert redis_host and redis_host[1] in services
    for name in ("serve", "worker"):
        data_dir = wanhook[name]["environment"]["WANHOOK_DATA_DIR"]
        assert f"videos:{data_dir}" in wanhook[name]["volumes"], name
        assert (ROOT / wanhook[name]["build"]["dockerfile"]).exists()
        assert wanhook[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    serve = wanhook_command(wanhook["serve"]["command"])
    assert serve.no_workers and any(port.endswith(f":{serve.port}") for port in wanhook["serve"]["ports"])
    assert wanhook["worker"]["healthcheck"] == {"disable": True}  # no HTTP server to check
    assert wanhook["consume"]["profiles"] == ["rocketmq"]


def test_compose_redis_keeps_what_wanhook_acknowledged(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert PINNED.match(redis["image"])
    options = dict(zip(redis["command"][1::2], redis["command"][2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] in {"everysec", "always"}
    assert options["--maxmemory-policy"] == "noeviction"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "ports" not in redis  # reachable from the wanhook containers only


# --- Kubernetes --------------------------------------------------------------------------------------------------


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == kind}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_match_the_api_schemas(version: str) -> None:
    for name, doc in manifests():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {error.message} at {list(error.path)}")


def test_kubernetes_validation_has_teeth() -> None:
    deployment = of_kind("Deployment")["wanhook-serve"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_lists_the_manifests() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed <= present
    assert present - listed == OPTIONAL_MANIFESTS
    images = {
        container["image"]
        for deployment in of_kind("Deployment").values()
        for container in deployment["spec"]["template"]["spec"]["containers"]
    }
    assert images == {image["name"] for image in kustomization["images"]}


def containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, deployment in of_kind("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            yield name, pod, container


def test_deployments_run_serve_worker_and_consume() -> None:
    commands = {name: command_name(container["args"]) for name, _, container in containers()}
    assert commands == {"wanhook-serve": "serve", "wanhook-worker": "worker", "wanhook-consume": "consume"}
    serve = wanhook_command(next(c["args"] for name, _, c in containers() if name == "wanhook-serve"))
    assert serve.no_workers and serve.host == "0.0.0.0"


def test_every_container_has_requests_a_memory_limit_and_no_root() -> None:
    [user] = instructions(DockerfileParser(path=str(DOCKERFILE)), "USER")
    for name, pod, container in [*containers(), *stateful_containers()]:
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), name
        assert "memory" in resources["limits"], name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        if container["image"] == "wanhook":
            assert str(pod["securityContext"]["runAsUser"]) == user.split(":")[0], name
            # The root filesystem is read-only; /tmp (HOME in the image) is the writable scratch space.
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert "/tmp" in {mount["mountPath"] for mount in container["volumeMounts"]}, name


def stateful_containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, statefulset in of_kind("StatefulSet").items():
        pod = statefulset["spec"]["template"]["spec"]
        for container in pod["containers"]:
            assert PINNED.match(container["image"]), container["image"]
            yield name, pod, container


def test_serve_is_probed_on_healthz_and_readyz() -> None:
    [(_, _, serve)] = [item for item in containers() if item[0] == "wanhook-serve"]
    ports = {port["name"]: port["containerPort"] for port in serve["ports"]}
    assert ports["http"] == wanhook_command(serve["args"]).port
    assert serve["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert serve["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"/healthz", "/readyz", "/metrics"} <= ROUTE_PATHS
    service = of_kind("Service")["wanhook"]
    serve_labels = of_kind("Deployment")["wanhook-serve"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= serve_labels.items()
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= set(ports)


def test_serve_and_workers_share_settings_redis_and_a_read_write_many_volume() -> None:
    config = of_kind("ConfigMap")["wanhook-config"]["data"]
    secret = of_kind("Secret")["wanhook-secrets"]["stringData"]
    assert "WANHOOK_REDIS_URL" in secret and "WANHOOK_DATA_DIR" in config
    [claim] = of_kind("PersistentVolumeClaim").values()
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name, pod, container in containers():
        sources = {next(iter(source.values()))["name"] for source in container["envFrom"]}
        assert {"wanhook-config", "wanhook-secrets"} <= sources, name
        if name == "wanhook-consume":
            continue  # it records events in Redis and writes no files
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        data = volumes[mounts[config["WANHOOK_DATA_DIR"]]]
        assert data["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"], name


def test_disruption_budgets_and_autoscalers_point_at_the_deployments() -> None:
    deployments = of_kind("Deployment")
    for budget in of_kind("PodDisruptionBudget").values():
        selector = budget["spec"]["selector"]["matchLabels"]
        matching = [
            name
            for name, deployment in deployments.items()
            if selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matching) == 1, budget["metadata"]["name"]
        # A budget that keeps every replica up would block node drains for good.
        keep = budget["spec"].get("minAvailable", 0)
        assert keep < deployments[matching[0]]["spec"]["replicas"]
    autoscalers = of_kind("HorizontalPodAutoscaler")
    for autoscaler in autoscalers.values():
        assert autoscaler["spec"]["scaleTargetRef"]["name"] in deployments
    assert autoscalers["wanhook-worker"]["spec"]["scaleTargetRef"]["name"] == "wanhook-worker"


async def test_workers_scale_on_a_series_that_metrics_exposes(redis_url: str) -> None:
    from redis.asyncio import Redis

    from wanhook.service.observability.metrics import render
    from wanhook.service.persistence.store import TaskStore

    client = Redis.from_url(redis_url)
    try:
        text = await render(TaskStore(client))
    finally:
        await client.aclose()
    samples = [re.match(r"^(\w+)(?:\{(.*)\})? ", line) for line in text.splitlines() if not line.startswith("#")]
    series = {(match[1], frozenset(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))) for match in samples if match}
    [metric] = of_kind("HorizontalPodAutoscaler")["wanhook-worker"]["spec"]["metrics"]
    wanted = metric["external"]["metric"]
    labels = set(wanted.get("selector", {}).get("matchLabels", {}).items())
    assert any(name == wanted["name"] and labels <= found for name, found in series), (
        f"/metrics has no {wanted['name']} with {labels}"
    )


def test_optional_redis_is_configured_for_nothing_lost() -> None:
    config = of_kind("ConfigMap")["wanhook-redis"]["data"]["redis.conf"]
    settings = dict(line.split(None, 1) for line in config.splitlines() if line and not line.startswith("#"))
    assert settings["appendonly"] == "yes"
    assert settings["appendfsync"] in {"everysec", "always"}
    assert settings["maxmemory-policy"] == "noeviction"


# --- Redis, highly available (deploy/redis) ----------------------------------------------------------------------

REDIS_HA = DEPLOY / "redis"


def redis_settings(path: Path) -> dict[str, str]:
    """A Redis config file's directives (the last of a repeated one), comments left out."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split(None, 1) for line in lines if line and not line.startswith("#"))


def test_ha_redis_keeps_what_wanhook_acknowledged() -> None:
    node = redis_settings(REDIS_HA / "redis.conf")
    assert node["appendonly"] == "yes" and node["appendfsync"] in {"everysec", "always"}
    assert node["maxmemory-policy"] == "noeviction"
    # A primary cut off from its replicas stops taking writes, soon.
    assert int(node["min-replicas-to-write"]) >= 1 and 0 < int(node["min-replicas-max-lag"]) <= 10
    replica = redis_settings(REDIS_HA / "replica.conf")
    assert replica["include"] == "/etc/redis/redis.conf" and replica["replicaof"].endswith(" 6379")
    name, _, port, quorum = sentinel_monitor(REDIS_HA / "sentinel.conf")
    assert name == "wanhook" and port == "6379"
    assert quorum == 2  # of the three Sentinels: a majority, so one cut off alone cannot fail over


def sentinel_monitor(path: Path) -> tuple[str, str, str, int]:
    found = re.search(r"^sentinel monitor (\S+) (\S+) (\d+) (\d+)$", path.read_text(), re.M)
    assert found, "sentinel.conf monitors no master"
    return found[1], found[2], found[3], int(found[4])


def test_ha_redis_files_start_real_servers(tmp_path: Path) -> None:
    """The files as redis-server reads them: a primary refuses writes until a replica is connected
    (min-replicas-to-write), a replica from replica.conf follows it, a Sentinel from sentinel.conf watches it."""
    import redis

    from ..support import Process, redis_binary, wait_for

    started: list[Process] = []

    def node(name: str, config: str) -> tuple[Process, redis.Redis]:
        directory, port = tmp_path / name, free_port()
        directory.mkdir()
        path = directory / f"{name}.conf"
        # redis-server changes to a dir as it reads the line: the deployed one does not exist here.
        path.write_text(re.sub(r"^dir .*$", f"dir {directory}", config, flags=re.M))
        process = Process(
            name,
            [
                redis_binary(),
                str(path),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(directory),
                "--daemonize",
                "no",
            ],
            directory,
        )
        started.append(process.launch())
        client = redis.Redis(port=port, decode_responses=True, socket_timeout=5)
        wait_for(client.ping, 15, what=f"{name} to answer")
        return process, client

    try:
        common = (REDIS_HA / "redis.conf").read_text()
        _, primary = node("primary", common)
        primary_port = primary.connection_pool.connection_kwargs["port"]
        with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
            primary.set("probe", "1")
        replica_config = (REDIS_HA / "replica.conf").read_text()
        replica_config = replica_config.replace("/etc/redis/redis.conf", str(tmp_path / "primary" / "primary.conf"))
        replica_config = re.sub(r"^replicaof .*$", f"replicaof 127.0.0.1 {primary_port}", replica_config, flags=re.M)
        _, replica = node("replica", replica_config)
        wait_for(lambda: primary.info("replication")["connected_slaves"] == 1, 30, what="the replica")
        wait_for(lambda: primary.set("probe", "1"), 15, what="the primary to take writes")
        wait_for(lambda: replica.get("probe") == "1", 15, what="the write on the replica")
        assert replica.config_get("appendonly")["appendonly"] == "yes"
        sentinel_config = re.sub(
            r"^sentinel monitor wanhook \S+ 6379",
            f"sentinel monitor wanhook 127.0.0.1 {primary_port}",
            (REDIS_HA / "sentinel.conf").read_text(),
            flags=re.M,
        )
        directory, port = tmp_path / "sentinel", free_port()
        directory.mkdir()
        (directory / "sentinel.conf").write_text(re.sub(r"^dir .*$", f"dir {directory}", sentinel_config, flags=re.M))
        started.append(
            Process(
                "sentinel",
                [
                    redis_binary(),
                    str(directory / "sentinel.conf"),
                    "--sentinel",
                    "--port",
                    str(port),
                    "--dir",
                    str(directory),
                ],
                directory,
            ).launch()
        )
        sentinel = redis.Redis(port=port, decode_responses=True, socket_timeout=5)
        master = wait_for(lambda: sentinel.sentinel_master("wanhook"), 15, what="the sentinel")
        assert int(master["quorum"]) == 2 and master["port"] == primary_port
        wait_for(
            lambda: int(sentinel.sentinel_master("wanhook")["num-slaves"]) == 1,
            30,
            what="the sentinel to find the replica",
        )
    finally:
        for process in started:
            process.stop()


# --- systemd -----------------------------------------------------------------------------------------------------


def unit(path: Path) -> configparser.ConfigParser:
    # systemd allows repeated keys (Environment=); strict=False keeps the parser from refusing them.
    config = configparser.ConfigParser(strict=False, interpolation=None)
    config.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    config.read_string(path.read_text())
    return config


UNITS = sorted(SYSTEMD.glob("*.service"))


@pytest.mark.parametrize("path", UNITS, ids=[path.name for path in UNITS])
def test_systemd_units_run_wanhook_as_its_own_user(path: Path) -> None:
    config = unit(path)
    assert {"Unit", "Service", "Install"} <= set(config.sections())
    service = config["Service"]
    program, *argv = shlex.split(service["ExecStart"])
    assert program == "/opt/wanhook/bin/wanhook"
    assert command_name(argv) in path.name
    assert service["User"] not in {"root", "0"}
    assert service["EnvironmentFile"] == "/etc/wanhook/wanhook.env"
    data_dir = "/var/lib/" + service["StateDirectory"]
    assert f"WANHOOK_DATA_DIR={data_dir}" in path.read_text()
    assert service["WorkingDirectory"] == data_dir
    assert config["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    # systemd-analyze checks that ExecStart's program exists: point it at this checkout's wanhook script.
    script = Path(sys.executable).parent / "wanhook"
    assert script.exists()
    names = []
    for path in UNITS:
        text = path.read_text().replace("/opt/wanhook/bin/wanhook", str(script))
        text = text.replace("EnvironmentFile=/", "EnvironmentFile=-/")  # the file exists only once installed
        (tmp_path / path.name).write_text(text)
        names.append(path.name.replace("@.service", "@1.service"))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    ours = [line for line in result.stderr.splitlines() if any(path.name.split("@")[0] in line for path in UNITS)]
    assert result.returncode == 0 and not ours, result.stderr


# --- across the files --------------------------------------------------------------------------------------------


def test_every_variable_set_in_deploy_is_documented(compose: dict[str, Any]) -> None:
    used: set[str] = set()
    for service in compose["services"].values():
        used |= set(service.get("environment", {}))
    for _, doc in manifests():
        if (
            doc["kind"] in {"ConfigMap", "Secret"}
            and doc["metadata"]["name"].startswith("wanhook-")
            and doc["metadata"]["name"] != "wanhook-redis"
        ):
            used |= set(doc.get("data") or {}) | set(doc.get("stringData") or {})
    for _, _, container in containers():
        used |= {variable["name"] for variable in container.get("env", [])}
    for line in (SYSTEMD / "wanhook.env.example").read_text().splitlines():
        name = line.lstrip("#").split("=", 1)[0]
        if "=" in line and re.fullmatch(r"[A-Z0-9_]+", name):
            used.add(name)
    unknown = {name for name in used if name.startswith(("WANHOOK_", "DASHSCOPE_"))} - known_variables()
    assert not unknown, f"not in the settings reference (DOCUMENTED, service/config.py): {sorted(unknown)}"
