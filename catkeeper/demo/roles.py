"""What a synthetic host holds: VM roles (name patterns, sizes, how many run), one-off
service VMs, GPU roles, and the host profiles that mix them.

Pure data for ``nodes``; changing it changes every generated fleet (and the committed demo
files, which ``tests/test_fleetgen.py`` checks are current).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    pattern: str  # str.format with distro, n (series counter) and user
    distros: tuple[str, ...]
    vcpus: tuple[int, ...]
    memory_mib: tuple[int, ...]
    service: bool = False  # long-lived services run more often than throwaway VMs
    titles: tuple[str, ...] = ()
    descriptions: tuple[str, ...] = ()


_GIB = 1024
_BUILD_DISTROS = ("sles15-sp5", "sles15-sp6", "fedora40", "rhel9", "opensuse-tw", "debian12")
_CI_DISTROS = ("fedora40", "fedora41", "ubuntu2404", "debian12", "rocky9")
_TEST_DISTROS = (
    "sles15-sp6",
    "fedora41",
    "rhel9",
    "rhel8",
    "ubuntu2204",
    "ubuntu2404",
    "debian12",
    "alma9",
    "centos-stream9",
    "opensuse-leap15",
    "freebsd14",
)
USERS = ("alice", "bogdan", "chen", "dana", "emeka", "farah", "gustav", "hiro", "ines")

_BUILD = Role(
    "{distro}-build-{n:02d}",
    _BUILD_DISTROS,
    (8, 12, 16),
    (16 * _GIB, 24 * _GIB, 32 * _GIB),
    titles=("Package build box", "Nightly build worker", "OBS worker"),
    descriptions=(
        "Nightly builds run 01:00-05:00 UTC; do not reboot then.",
        "Build cache on /srv/ccache survives reboots; wipe it with make distclean-cache.",
    ),
)
_CI_RUNNER = Role(
    "{distro}-ci-runner-{n:02d}",
    _CI_DISTROS,
    (2, 4, 8),
    (4 * _GIB, 8 * _GIB, 16 * _GIB),
    titles=("GitLab CI runner", "Jenkins agent", "GitHub Actions self-hosted runner"),
    descriptions=("Registered with tags: kvm, linux. Re-register after a reinstall.",),
)
_TEST = Role(
    "{distro}-test-{n:02d}",
    _TEST_DISTROS,
    (1, 2, 2, 4),
    (512, 1 * _GIB, 2 * _GIB, 4 * _GIB),
    titles=("Install test", "Upgrade test from previous release", "Regression test VM"),
    descriptions=("Snapshot 'clean' is the freshly installed state.",),
)
_DEV = Role(
    "{distro}-dev-{user}",
    ("fedora41", "ubuntu2404", "debian12", "opensuse-tw"),
    (4, 8),
    (8 * _GIB, 16 * _GIB),
    titles=("Personal dev box",),
)
_K8S_WORKER = Role(
    "{distro}-k8s-worker-{n}",
    ("ubuntu2404", "rocky9"),
    (4, 8),
    (8 * _GIB, 16 * _GIB),
    service=True,
    titles=("Lab Kubernetes worker",),
)
_K8S_CP = Role(
    "{distro}-k8s-cp-{n}",
    ("ubuntu2404", "rocky9"),
    (2, 4),
    (4 * _GIB, 8 * _GIB),
    service=True,
    titles=("Lab Kubernetes control plane",),
    descriptions=("kubeadm cluster 'lab'; kubeconfig in the team vault.",),
)
_WIN_TEST = Role(
    "{distro}-test-{n:02d}",
    ("win11", "win2022", "win2019"),
    (2, 4),
    (4 * _GIB, 8 * _GIB),
    titles=("Windows driver test",),
)


def _service(name: str, vcpus: int, memory_mib: int, title: str, description: str = "") -> Role:
    return Role(
        name,
        ("",),
        (vcpus,),
        (memory_mib,),
        service=True,
        titles=(title,),
        descriptions=(description,) if description else (),
    )


# One-off infrastructure VMs. A host gets the ones named in ``services`` (its profile's list by
# default) first, then a weighted random mix of the series roles below: drawing services at
# random would put two firewalls on one host.
_ONE_OFF_ROLES = (
    _service(
        "rhel9-db",
        8,
        32 * _GIB,
        "PostgreSQL 16 for the results dashboard",
        "Backups nightly to nfs:/backup/db. Ask #lab-infra before stopping.",
    ),
    _service("debian12-mirror", 2, 4 * _GIB, "Local apt mirror (apt-cacher-ng)"),
    _service(
        "win2022-ad",
        4,
        8 * _GIB,
        "Active Directory DC for lab.example.com",
        "Domain admin credentials are in the team vault.",
    ),
    _service("sles15-sp6-rmt", 2, 4 * _GIB, "SUSE RMT repository mirror"),
    _service("ubuntu2404-gitlab", 8, 16 * _GIB, "GitLab CE for the lab"),
    _service("debian12-grafana", 2, 2 * _GIB, "Grafana + Prometheus for host metrics"),
    _service("rocky9-nfs", 2, 4 * _GIB, "NFS exports: /srv/images, /backup"),
    _service("freebsd14-pf", 1, 1 * _GIB, "pf firewall between lab VLANs"),
    _service(
        "fedora41-kernel-bisect",
        4,
        8 * _GIB,
        "Bisecting the virtio-net regression",
        "git bisect in ~/linux; do not reset.",
    ),
    _service("debian12-sccache", 4, 8 * _GIB, "sccache/ccache server for the build farm"),
    _service("ubuntu2404-artifactory", 4, 16 * _GIB, "Artifact store (Artifactory OSS)"),
    _service("win2022-build", 8, 16 * _GIB, "MSVC build box for the Windows installer"),
    _service("rocky9-jupyterhub", 8, 32 * _GIB, "JupyterHub for the ML team"),
    _service("ubuntu2404-mlflow", 2, 4 * _GIB, "MLflow tracking server"),
)
SERVICE_ROLES: dict[str, Role] = {role.pattern: role for role in _ONE_OFF_ROLES}
SERVICES: tuple[str, ...] = tuple(SERVICE_ROLES)

_GPU_ROLES = (
    Role(
        "{distro}-cuda-train-{n:02d}",
        ("ubuntu2204", "ubuntu2404"),
        (8, 16),
        (16 * _GIB, 32 * _GIB),
        titles=("CUDA training box (GPU passthrough)",),
        descriptions=("Datasets on /data (NFS); checkpoints are not backed up.",),
    ),
    Role(
        "{distro}-llm-eval-{n:02d}",
        ("ubuntu2404", "fedora41"),
        (8, 16),
        (32 * _GIB,),
        titles=("LLM evaluation harness",),
    ),
    Role(
        "{distro}-cad-{n:02d}", ("win11",), (4, 8), (16 * _GIB,), titles=("CAD workstation (vGPU)",)
    ),
    Role("{distro}-rocm-test-{n:02d}", ("fedora40", "fedora41"), (4,), (8 * _GIB,)),
)


@dataclass(frozen=True)
class Profile:
    mix: tuple[tuple[Role, float], ...]  # (series role, weight)
    services: tuple[str, ...]


PROFILE_MIX: dict[str, Profile] = {
    "lab": Profile(
        (
            (_BUILD, 2.0),
            (_CI_RUNNER, 3.0),
            (_TEST, 6.0),
            (_DEV, 2.0),
            (_K8S_WORKER, 2.0),
            (_K8S_CP, 0.7),
            (_WIN_TEST, 1.0),
        ),
        ("rhel9-db", "debian12-mirror", "win2022-ad", "rocky9-nfs"),
    ),
    "build": Profile(
        ((_BUILD, 6.0), (_CI_RUNNER, 6.0), (_TEST, 1.5)),
        ("debian12-sccache", "ubuntu2404-artifactory", "win2022-build"),
    ),
    "gpu": Profile(
        ((_GPU_ROLES[0], 3.0), (_GPU_ROLES[1], 2.0), (_GPU_ROLES[2], 1.0), (_GPU_ROLES[3], 1.0)),
        ("rocky9-jupyterhub",),
    ),
}
PROFILES: tuple[str, ...] = tuple(PROFILE_MIX)
