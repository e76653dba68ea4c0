"""Ray Serve deployments: Encoder, the head deployment (bound once per task: TopicHead, SentimentHead, ...) and Ingress."""
