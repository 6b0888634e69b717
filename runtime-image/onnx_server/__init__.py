"""The generic ONNX Runtime server (Open Inference Protocol v2)."""
