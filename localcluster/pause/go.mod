module onnx-operator.local/cluster/pause

go 1.26.0
