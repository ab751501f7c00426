-- Argo CD health check for parachute.dev/Rollout.
-- Install it under resource.customizations.health.parachute.dev_Rollout in argocd-cm
-- (see the chart's README). Without it Argo CD shows a Rollout as Healthy mid-release.
--
--   Progressing  the operator has not yet seen this generation, or a release runs or waits
--   Suspended    paused by spec.paused
--   Degraded     rolling back, rolled back, aborted, or Invalid
--   Healthy      released: nothing left to do
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Parachute operator to report status"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Parachute operator to observe generation " .. tostring(generation)
  return hs
end
local phase = status.phase
local health = {
  Healthy = "Healthy",
  Pending = "Progressing",
  Waiting = "Progressing",
  Progressing = "Progressing",
  Paused = "Suspended",
  RollingBack = "Degraded",
  RolledBack = "Degraded",
  Aborted = "Degraded",
  Invalid = "Degraded",
}
hs.status = health[phase] or "Unknown"
if status.message ~= nil and status.message ~= "" then
  hs.message = phase .. ": " .. status.message
else
  hs.message = phase
end
return hs
