"""Docker hosts in containers: a container per host, each running its own ``dockerd``.

For tests that need a remote Docker engine (shipping images, several hosts)
on one machine. The host image is made from Debian's packages with
``mmdebstrap`` and ``docker import`` (no registry), tagged by a digest of its
inputs and made only when that tag is missing. A host container runs without
``--privileged`` (the machine's capability bounding set lacks
CAP_SYS_RESOURCE): the flags of :func:`start_host` are the ones that work
(see shared/FIELD-NOTES.md, "Several Docker hosts on one machine").

Every container, volume and network made here carries the label
``io.lbcluster.cluster`` and every image ``io.lbcluster.image``: the cleanup
of ``.ci/run`` removes them when a run was killed before its own cleanup.
A registry for such hosts (:class:`Registry`): Debian's ``docker-registry``
run as a process on the network's gateway address, with TLS.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from . import poll
from .containers import docker_client

PREFIX = "lbcluster-testhost"
"""Prefix of everything made here: image, containers, volumes, networks."""

IMAGE_LABEL = "io.lbcluster.image"
CLUSTER_LABEL = "io.lbcluster.cluster"
LABEL_VALUE = "testhost"

SUITE = "bookworm"
PACKAGES = (
    "ca-certificates",
    "docker.io",
    "fuse-overlayfs",
    "iproute2",
    "iptables",
    "procps",
    "python3",
    "python3-docker",
    "python3-requests",
)
"""Debian packages of the host image: the engine, and what Ansible's docker modules need."""

MMDEBSTRAP_OPTIONS = (
    "--quiet",
    "--variant=apt",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
)

ENTRY = """set -e
# The container's /sys and cgroup hierarchies are read-only: dockerd needs them writable.
mount -o remount,rw /sys
for hierarchy in /sys/fs/cgroup/*/; do
    mount -o remount,bind,rw "$hierarchy" 2>/dev/null || true
done
exec dockerd "$@"
"""
"""The host's entry script (``sh -c``); its arguments are dockerd's."""

SOCKET_WAIT = 60.0
"""Seconds a new host's dockerd may take to answer (1 to 2 s usually)."""


def apt_sources() -> Path:
    """The machine's Debian sources, given to mmdebstrap (as the cluster_images role does)."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    return deb822 if deb822.is_file() else Path("/etc/apt/sources.list")


def host_image_name(sources: Path | None = None) -> str:
    """``lbcluster-testhost:<12 hex digits>``: a digest of the suite, packages, options, sources."""
    sources = sources or apt_sources()
    digest = hashlib.sha256()
    for part in (SUITE, *sorted(PACKAGES), *MMDEBSTRAP_OPTIONS):
        digest.update(part.encode() + b"\0")
    digest.update(sources.read_bytes())
    return f"{PREFIX}:{digest.hexdigest()[:12]}"


def ensure_host_image(sources: Path | None = None) -> str:
    """The host image's name; made (mmdebstrap, docker import) only when missing."""
    sources = sources or apt_sources()
    name = host_image_name(sources)
    client = docker_client()
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(name)
        return name
    if shutil.which("mmdebstrap") is None:
        raise FileNotFoundError("mmdebstrap: not installed (apt-get install mmdebstrap)")
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-", dir="/var/tmp") as tmp:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(name)  # made meanwhile by another process
            return name
        rootfs = Path(tmp) / "rootfs.tar"
        subprocess.run(
            [
                "mmdebstrap",
                *MMDEBSTRAP_OPTIONS,
                f"--include={','.join(sorted(PACKAGES))}",
                SUITE,
                str(rootfs),
                str(sources),
            ],
            check=True,
        )
        repository, tag = name.split(":")
        client.api.import_image_from_file(
            str(rootfs),
            repository=repository,
            tag=tag,
            changes=[f"LABEL {IMAGE_LABEL}={LABEL_VALUE}"],
        )
    return name


def _labels() -> dict[str, str]:
    return {CLUSTER_LABEL: LABEL_VALUE}


@dataclass(frozen=True)
class HostNetwork:
    """A Docker network made for test hosts; ``gateway`` is the machine's address on it."""

    name: str
    subnet: str
    gateway: str


def create_network(name: str) -> HostNetwork:
    """A new bridge network ``name``, labelled; its subnet is Docker's choice."""
    client = docker_client()
    network = client.networks.create(name, driver="bridge", labels=_labels())
    network.reload()
    config = network.attrs["IPAM"]["Config"][0]
    return HostNetwork(name=name, subnet=config["Subnet"], gateway=config["Gateway"])


def remove_network(network: HostNetwork) -> None:
    """Remove a network made by :func:`create_network` (gone already: nothing to do)."""
    with contextlib.suppress(docker.errors.NotFound):
        docker_client().networks.get(network.name).remove()


@dataclass(frozen=True)
class DockerHost:
    """A running host container and its engine."""

    name: str
    network: HostNetwork
    address: str
    volume: str

    def exec(self, *argv: str, check: bool = True) -> str:
        """Output of ``argv`` in the host container (stdout and stderr)."""
        result = docker_client().containers.get(self.name).exec_run(list(argv))
        output = str(result.output.decode(errors="replace"))
        if check and result.exit_code != 0:
            raise RuntimeError(f"{self.name}: {' '.join(argv)} -> {result.exit_code}: {output}")
        return output

    def image_tags(self) -> set[str]:
        """``repository:tag`` of every image in the host's engine."""
        output = self.exec("docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}")
        return {line for line in output.split() if line and not line.endswith(":<none>")}

    def remove_image(self, name: str) -> None:
        """``docker rmi name`` in the host's engine (the tag only, when others share the image)."""
        self.exec("docker", "image", "rm", name)

    def inventory_vars(self) -> dict[str, str]:
        """Ansible reaches the host by connecting into its container."""
        return {
            "ansible_connection": "community.docker.docker",
            "ansible_host": self.name,
            "ansible_python_interpreter": "/usr/bin/python3",
        }


def start_host(
    name: str,
    network: HostNetwork,
    *,
    insecure_registries: Sequence[str] = (),
    image: str | None = None,
) -> DockerHost:
    """Start host container ``name`` on ``network`` and wait until its dockerd answers.

    ``/var/lib/docker`` is a new named volume (overlay2 needs it: on the
    container's own filesystem dockerd exits "driver not supported").
    ``insecure_registries``: ``host:port`` the engine may pull from without a
    verified certificate (``dockerd --insecure-registry``).
    """
    image = image or ensure_host_image()
    client = docker_client()
    volume = f"{name}-docker"
    dockerd = [
        "--host=unix:///var/run/docker.sock",
        "--storage-driver=overlay2",
        *(f"--insecure-registry={registry}" for registry in insecure_registries),
    ]
    host_config = client.api.create_host_config(
        cap_add=["ALL"],
        cap_drop=["SYS_RESOURCE"],
        # What --security-opt systempaths=unconfined does (the docker CLI turns it
        # into empty MaskedPaths and ReadonlyPaths; the engine does not read it).
        security_opt=["seccomp=unconfined"],
        cgroupns="private",
        devices=["/dev/fuse:/dev/fuse:rwm"],
        device_cgroup_rules=["a *:* rwm"],
        init=True,  # dockerd as PID 1 would leave zombie shims
        binds=[f"{volume}:/var/lib/docker:rw"],
        network_mode=network.name,
    )
    host_config["MaskedPaths"] = []
    host_config["ReadonlyPaths"] = []
    client.volumes.create(volume, labels=_labels())
    created = client.api.create_container(
        image,
        name=name,
        hostname=name,
        entrypoint=["/bin/sh", "-c", ENTRY, "entry"],
        command=dockerd,
        labels=_labels(),
        host_config=host_config,
    )
    client.api.start(created["Id"])
    container = client.containers.get(name)
    address = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
    host = DockerHost(name=name, network=network, address=address, volume=volume)
    try:
        poll.wait_until(lambda: "Server Version" in host.exec("docker", "info"), SOCKET_WAIT, 0.5)
    except poll.WaitTimeout as timed_out:
        logs = container.logs(tail=30).decode(errors="replace")
        raise RuntimeError(f"{name}: dockerd did not answer in {SOCKET_WAIT} s:\n{logs}") from (
            timed_out
        )
    return host


def remove_host(host: DockerHost) -> None:
    """Remove the host container and its volume (gone already: nothing to do)."""
    client = docker_client()
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(host.name).remove(force=True, v=True)
    with contextlib.suppress(docker.errors.NotFound):
        client.volumes.get(host.volume).remove(force=True)


@contextlib.contextmanager
def running_hosts(
    count: int = 1, *, insecure_registries: Sequence[str] = (), prefix: str = PREFIX
) -> Iterator[list[DockerHost]]:
    """``count`` hosts on a new network of their own, all removed (with the network) at the end.

    Names are ``<prefix>-<token>-<n>``, the network ``<prefix>-<token>``: a
    fresh token each time, so runs never collide. For a registry on the
    network's gateway, make the network first (:func:`create_network`) and
    use :func:`start_host`.
    """
    network = create_network(f"{prefix}-{secrets.token_hex(3)}")
    hosts: list[DockerHost] = []
    try:
        for index in range(1, count + 1):
            hosts.append(
                start_host(
                    f"{network.name}-{index}", network, insecure_registries=insecure_registries
                )
            )
        yield hosts
    finally:
        for host in hosts:
            remove_host(host)
        remove_network(network)


def free_port(address: str) -> int:
    """A TCP port free on ``address`` now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def self_signed_certificate(address: str, directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for IP ``address`` (its own CA) and its key, in ``directory``."""
    from cryptography import x509  # noqa: PLC0415 (only the registry needs it)
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{PREFIX} registry")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "registry.crt", directory / "registry.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


DOCKER_CERTS_DIR = Path("/etc/docker/certs.d")
"""Where the machine's engine finds the CA of a registry (``<host:port>/ca.crt``), at each push."""


@dataclass
class Registry:
    """Debian's ``docker-registry`` on ``address`` (a test network's gateway), with TLS.

    ``with Registry(address, workdir) as registry:`` starts it (storage,
    configuration and certificate under ``workdir``) and waits until it
    answers; the exit stops it. With ``trust_engine``, the machine's Docker
    engine trusts its certificate while it runs (``/etc/docker/certs.d/<name>/``:
    the engine pushes over HTTP only to 127.0.0.0/8, and its configuration is
    not ours to change); the test hosts' engines use ``--insecure-registry``.
    """

    address: str
    workdir: Path
    trust_engine: bool = True
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _made_certs_dir: bool = field(default=False, init=False)

    @property
    def name(self) -> str:
        """``address:port``, as image names and ``--insecure-registry`` spell it."""
        return f"{self.address}:{self.port}"

    @property
    def certificate(self) -> Path:
        return self.workdir / "registry.crt"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certificate))

    def get(self, path: str) -> Any:
        """``GET https://<name><path>``, parsed JSON."""
        url = f"https://{self.name}{path}"
        with urllib.request.urlopen(url, timeout=10, context=self.ssl_context()) as response:
            return json.loads(response.read())

    def tags(self, repository: str) -> set[str]:
        """Tags of ``repository`` in the registry (none: an empty set)."""
        try:
            return set(self.get(f"/v2/{repository}/tags/list").get("tags") or ())
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return set()
            raise

    def __enter__(self) -> Registry:
        if shutil.which("docker-registry") is None:
            raise FileNotFoundError(
                "docker-registry: not installed (apt-get install docker-registry)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.address)
        cert_file, key_file = self_signed_certificate(self.address, self.workdir)
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "storage")}},
            "http": {
                "addr": self.name,
                "tls": {"certificate": str(cert_file), "key": str(key_file)},
            },
        }
        config_file = self.workdir / "config.yml"
        config_file.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        log = (self.workdir / "registry.log").open("wb")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(config_file)], stdout=log, stderr=log
        )
        log.close()
        if self.trust_engine:
            self._made_certs_dir = not DOCKER_CERTS_DIR.exists()
            trusted = DOCKER_CERTS_DIR / self.name
            trusted.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cert_file, trusted / "ca.crt")
        try:
            poll.wait_until(lambda: self.get("/v2/") == {}, 20.0, 0.2)
        except poll.WaitTimeout as timed_out:
            self.__exit__()
            log_text = (self.workdir / "registry.log").read_text(errors="replace")
            raise RuntimeError(
                f"docker-registry on {self.name} did not answer:\n{log_text}"
            ) from timed_out
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self.trust_engine:
            shutil.rmtree(DOCKER_CERTS_DIR / self.name, ignore_errors=True)
            if self._made_certs_dir:
                with contextlib.suppress(OSError):  # not empty: another registry's
                    DOCKER_CERTS_DIR.rmdir()
