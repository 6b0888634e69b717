"""`make run`: the operator in the foreground, serving with the runtime image the cluster's node has.

The operator's default runtime image (`onnx-operator/runtime:0.1.0`) is on no node of the local
cluster, and no registry is reachable from it: against the local cluster's kubeconfig this points
`ONNX_OPERATOR_RUNTIME_IMAGE` at the image `make cluster` imported into the real node's containerd
(`localhost/onnx-operator/runtime:src-<hash>`) and says so. An image set in the environment wins;
against any other cluster nothing is changed.

    KUBECONFIG=.cluster/kubeconfig python -m localcluster.run_operator [operator flags...]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from onnx_operator.config import OperatorConfig

from localcluster.cluster import Cluster

ENV = "ONNX_OPERATOR_RUNTIME_IMAGE"


def runtime_image(kubeconfig: str, cluster: Cluster, environ: dict[str, str]) -> tuple[str, str]:
    """(image, why): the runtime image the operator gets and where it comes from."""
    if environ.get(ENV):
        return environ[ENV], f"from ${ENV}"
    default = str(OperatorConfig.model_fields["runtime_image"].default)
    if Path(kubeconfig).resolve() != cluster.paths.kubeconfig.resolve():
        return default, f"the operator's default (set ${ENV} to the image your nodes can pull)"
    image = cluster.images().get("runtime")
    if not image:
        return default, "the operator's default: the local cluster is not running (`make cluster` first)"
    return image, "the one the local cluster imported into the real node"


def main(argv: list[str]) -> int:
    kubeconfig = os.environ.get("KUBECONFIG", "")
    image, why = runtime_image(kubeconfig, Cluster(), dict(os.environ))
    print(f"make run: kubeconfig {kubeconfig}; runtime image {image} ({why})", flush=True)
    env = {**os.environ, ENV: image}
    os.execve(sys.executable, [sys.executable, "-m", "onnx_operator", *argv], env)
    return 1  # not reached: execve replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
