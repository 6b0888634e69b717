-- Argo CD health of a ModelDeployment, from the operator's conditions.
local hs = {}
local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then return nil end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then return c end
  end
  return nil
end
if obj.status == nil or obj.status.observedGeneration == nil
    or obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local degraded = condition("Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.reason .. ": " .. (degraded.message or "")
  return hs
end
local rollout = obj.status.rollout
if rollout ~= nil and rollout.version ~= nil and (rollout.paused or rollout.awaitingPromotion) then
  hs.status = "Suspended"
  if rollout.paused then
    hs.message = "Rollout of " .. rollout.version .. " is paused"
  else
    hs.message = "Rollout of " .. rollout.version .. " waits for promotion"
  end
  return hs
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  return hs
end
hs.status = "Progressing"
local progressing = condition("Progressing")
if progressing ~= nil then hs.message = progressing.message or "" else hs.message = "" end
return hs
