-- Argo CD action "resume": the annotation the operator acts on (once per resourceVersion).
if obj.metadata.annotations == nil then obj.metadata.annotations = {} end
obj.metadata.annotations["serving.onnx-operator.io/action"] = "resume@argocd-" .. obj.metadata.resourceVersion
return obj
