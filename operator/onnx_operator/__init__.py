"""onnx-operator: serve ONNX models on Kubernetes with safe rollouts."""
