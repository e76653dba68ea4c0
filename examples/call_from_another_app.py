"""Call the classifier from another Ray Serve application (or any Ray driver) through a Python handle.

Start the service on a Ray cluster first, then run this against that cluster's address:

    set -a; . ./serve.env; set +a                      # RAY_AUTH_MODE=token: Ray's token auth (README, Security)
    ray get-auth-token --generate > /dev/null          # the token, in ~/.ray/auth_token (or set RAY_AUTH_TOKEN)
    ray start --head                                   # a local cluster that other drivers can join
    serve run serve_config.local.yaml --non-blocking   # deploys `multitask` onto it
    RAY_ADDRESS=auto python examples/call_from_another_app.py
    ray stop

(On a real cluster set RAY_ADDRESS to its address, e.g. the GCS address <head>:6379, with RAY_AUTH_MODE=token and
the cluster's RAY_AUTH_TOKEN in the environment: without the token, Ray refuses the driver.)

It deploys a tiny application, `digest`, whose replicas reach the classifier by its application name only
(`serve.get_app_handle("multitask")`), calls it, prints the answers, and deletes `digest` again. The handle
methods take the same arguments and return the same dicts as the HTTP routes.
"""

from __future__ import annotations

import json
import os
import sys

import ray
from ray import serve

CLASSIFIER_APP = "multitask"


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Digest:
    """Another team's service: summarises a batch of headlines with the classifier's help."""

    def __init__(self):
        self.classifier = serve.get_app_handle(CLASSIFIER_APP)  # the ingress of the classifier

    async def __call__(self, headlines: list[str]) -> dict:
        # one call; the classifier encodes each text once and asks only the heads named in `tasks`
        prediction = await self.classifier.predict.remote(headlines, tasks=["topic", "sentiment"])
        embedded = await self.classifier.embed.remote(headlines, normalize=True)
        return {
            "items": [
                {"text": text, "topic": r["topic"]["label"], "sentiment": r["sentiment"]["label"]}
                for text, r in zip(headlines, prediction["results"])
            ],
            "dimension": embedded["dimension"],
            "model": prediction["model"],
        }


def main() -> None:
    address = os.environ.get("RAY_ADDRESS")
    if not address:  # never guess: "auto" on a shared machine may find somebody else's cluster
        sys.exit("Set RAY_ADDRESS to the cluster that runs the classifier (see the docstring).")
    ray.init(address=address, log_to_driver=False)
    headlines = ["Shares tumble as the central bank raises rates.", "What a fantastic final, we won!"]

    # 1. from a driver: the application handle directly
    classifier = serve.get_app_handle(CLASSIFIER_APP)
    result = classifier.predict.remote(headlines, tasks=["sentiment"]).result()
    print("sentiment:", [r["sentiment"]["label"] for r in result["results"]])

    # 2. from another application's replica
    digest = serve.run(Digest.bind(), name="digest", route_prefix=None)
    try:
        answer = digest.remote(headlines).result()
        print(json.dumps(answer["items"], indent=2))
        print(f"embeddings of dimension {answer['dimension']} from {answer['model']['encoder']}")
    finally:
        serve.delete("digest")


if __name__ == "__main__":
    main()
