"""`make demo`: a guided tour on the local control plane (grows with the project)."""

from __future__ import annotations

import subprocess

from tests.cluster.localcluster import Cluster


def main() -> None:
    cluster = Cluster()
    cluster.up()
    print("\n$ kubectl get nodes")
    subprocess.run([str(cluster.paths.bin / "kubectl"), f"--kubeconfig={cluster.paths.kubeconfig}",
                    "get", "nodes"], check=True)
    print("\nThe local control plane is running. Try:\n"
          f"  {cluster.paths.bin}/kubectl --kubeconfig {cluster.paths.kubeconfig} get all -A\n"
          "Clean up with: make demo-down")


if __name__ == "__main__":
    main()
