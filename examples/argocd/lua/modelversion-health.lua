-- Argo CD health of a ModelVersion: Healthy once verified, Degraded when verification failed.
local hs = {}
if obj.status == nil or obj.status.phase == nil or obj.status.observedGeneration == nil
    or obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for verification"
  return hs
end
local verified = nil
for _, c in ipairs(obj.status.conditions or {}) do
  if c.type == "Verified" then verified = c end
end
local message = ""
if verified ~= nil then message = verified.reason .. ": " .. (verified.message or "") end
if obj.status.phase == "Ready" then
  hs.status = "Healthy"
elseif obj.status.phase == "Failed" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = message
return hs
