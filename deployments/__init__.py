"""Ray Serve deployments: Encoder, TaskHead (bound once per task) and Ingress."""
