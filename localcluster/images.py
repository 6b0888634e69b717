"""The real node's images: built with buildah, moved into containerd, both steps cached.

No registry is reachable, so every image a pod runs is built here:
- `pause`: the sandbox image, one static Go binary (localcluster/pause) in a `FROM scratch` image;
- `runtime` and `operator`: the project's two images (runtime-image/build-image.sh).
Images are tagged with a hash of their sources, so a checkout whose code did not change reuses the
built image, and containerd re-imports only an image whose buildah ID changed (recorded per name).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILDAH = ("buildah", "--storage-driver", "vfs")
# what goes into the project's images (the wheel holds both packages, so both images share the hash)
SOURCES = ("pyproject.toml", "operator", "runtime-image")


def log(msg: str) -> None:
    print(f"[images] {msg}", flush=True)


def source_hash(paths: tuple[str, ...] = SOURCES) -> str:
    digest = hashlib.sha256()
    for rel in paths:
        root = REPO / rel
        files = [root] if root.is_file() else sorted(
            p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
        for f in files:
            digest.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def buildah_id(name: str) -> str | None:
    out = subprocess.run([*BUILDAH, "inspect", "--type", "image", "--format", "{{.FromImageID}}", name],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or None if out.returncode == 0 else None


def project_image(kind: str) -> str:
    """`localhost/onnx-operator/<kind>:src-<hash>`, built unless buildah already has it."""
    name = f"localhost/onnx-operator/{kind}:src-{source_hash()}"
    if buildah_id(name) is None:
        log(f"building {name} (runtime-image/build-image.sh)")
        subprocess.run([str(REPO / "runtime-image/build-image.sh"), kind, name], check=True)
    return name


def pause_image(pause_bin: Path) -> str:
    """The sandbox image: the static pause binary as the only file of a `FROM scratch` image."""
    name = f"localhost/onnx-operator/pause:{hashlib.sha256(pause_bin.read_bytes()).hexdigest()[:12]}"
    if buildah_id(name) is None:
        ctr = subprocess.run([*BUILDAH, "from", "scratch"], capture_output=True, text=True, check=True).stdout.strip()
        try:
            subprocess.run([*BUILDAH, "copy", "--chmod", "0755", ctr, str(pause_bin), "/pause"], check=True,
                           capture_output=True)
            subprocess.run([*BUILDAH, "config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr],
                           check=True, capture_output=True)
            subprocess.run([*BUILDAH, "commit", "--quiet", ctr, name], check=True, capture_output=True)
        finally:
            subprocess.run([*BUILDAH, "rm", ctr], capture_output=True, check=False)
    return name


def node_images(pause_bin: Path) -> dict[str, str]:
    """Every image the real node runs, built unless buildah has it: {"pause", "runtime", "operator"}."""
    return {"pause": pause_image(pause_bin), "runtime": project_image("runtime"),
            "operator": project_image("operator")}


class ContainerdImages:
    """Imports buildah images into containerd's `k8s.io` namespace, skipping ones already there."""

    def __init__(self, ctr: list[str], record: Path) -> None:
        self.ctr, self.record = ctr, record

    def _imported(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.record.read_text()))
        except (OSError, ValueError):
            return {}

    def present(self, name: str) -> bool:
        out = subprocess.run([*self.ctr, "-n", "k8s.io", "images", "ls", "-q", f"name=={name}"],
                             capture_output=True, text=True, check=False)
        return name in out.stdout.split()

    def ensure(self, name: str) -> bool:
        """Returns True when the image had to be imported."""
        image_id = buildah_id(name)
        if image_id is None:
            raise RuntimeError(f"image {name} is not in buildah's storage")
        imported = self._imported()
        if imported.get(name) == image_id and self.present(name):
            return False
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="oci-") as tmp:
            archive = Path(tmp) / "image.tar"
            subprocess.run([*BUILDAH, "push", "--quiet", name, f"oci-archive:{archive}:{name}"], check=True,
                           capture_output=True)
            subprocess.run([*self.ctr, "-n", "k8s.io", "images", "import", str(archive)],
                           check=True, capture_output=True)
        imported[name] = image_id
        self.record.write_text(json.dumps(imported, indent=2))
        log(f"imported {name} into containerd in {time.monotonic() - t0:.1f}s")
        return True

    def prune(self, keep: set[str]) -> list[str]:
        """Removes this project's older `src-` images from containerd and buildah (each code change makes
        a new pair; without this the cache grows by a few hundred MB per change)."""
        out = subprocess.run([*self.ctr, "-n", "k8s.io", "images", "ls", "-q"], capture_output=True, text=True,
                             check=False).stdout.split()
        stale = [n for n in out if n.startswith("localhost/onnx-operator/") and ":src-" in n and n not in keep]
        if stale:
            subprocess.run([*self.ctr, "-n", "k8s.io", "images", "rm", *stale], capture_output=True, check=False)
        for name in stale:
            subprocess.run([*BUILDAH, "rmi", name], capture_output=True, check=False)
        return stale
