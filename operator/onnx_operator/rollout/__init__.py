"""The rollout state machine as pure functions: (spec, status, observations) -> (next status, actions)."""
