"""Pure functions: (ModelDeployment, ModelVersion, config) -> the objects that should exist. No I/O."""
