-- Argo CD resource actions of a ModelDeployment (what `kubectl model` offers).
local actions = {}
local rollout = nil
if obj.status ~= nil then rollout = obj.status.rollout end
local active = rollout ~= nil and rollout.version ~= nil
local paused = active and rollout.paused == true
actions["promote"] = {["disabled"] = not active or paused}
actions["promote-full"] = {["disabled"] = not active or paused}
actions["abort"] = {["disabled"] = not active}
actions["pause"] = {["disabled"] = not active or paused}
actions["resume"] = {["disabled"] = not paused}
return actions
