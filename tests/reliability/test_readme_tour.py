"""README's 60-second tour, run as written against `make run` (the shipped checkpoint, the local config, serve.env):
every curl command of the tour answers without an error, the answer README prints for the first one is the
service's own (labels and confidences to the digits shown, the model's fields), and the OpenAI snippet runs. So
README's examples cannot go stale: a new checkpoint or runtime that changes them fails here until README shows the
new answers. (Here, not in tests/graph: the graph tier serves seeded untrained heads; README shows the shipped ones.)
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.support.make_run import MakeRun
from tests.support.paths import ROOT

pytestmark = pytest.mark.slow

README = (ROOT / "README.md").read_text()
SERVING_DOC = (ROOT / "docs" / "serving.md").read_text()
TOUR = README.split("## A 60-second tour", 1)[1].split("\n## ", 1)[0]
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", TOUR, flags=re.DOTALL)
SHOWN_DIGITS = 0.0005  # README and docs round to 3 digits
SHOWN_RESULT = re.compile(r'"(topic|sentiment)": \{"label": "([^"]+)"(?:, "confidence": ([\d.]+))?')


def curl_commands() -> list[str]:
    """The tour's curl commands, continuation lines joined, comments kept (bash ignores them)."""
    code = "\n".join(block for language, block in BLOCKS if language == "bash").replace("\\\n", " ")
    return [line.strip() for line in code.splitlines() if line.strip().startswith("curl ")]


def run_curl(command: str, port: int) -> dict:
    done = subprocess.run(
        ["bash", "-c", command.replace("localhost:8000", f"127.0.0.1:{port}")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    body = json.loads(done.stdout)
    assert "error_type" not in body, f"{command}\n{body}"
    return body


def test_readmes_tour_runs_as_written_and_shows_the_services_answers(make_run: MakeRun):
    make_run.start()
    commands = curl_commands()
    assert len(commands) == 5, commands  # predict, predict with tasks, one task by route, embed, tasks
    answers = [run_curl(command, make_run.port) for command in commands]

    first = answers[0]
    (shown,) = [block for language, block in BLOCKS if language == "json"]
    assert shown in SERVING_DOC  # the same example there, the same answer
    shown_model = json.loads("{" + re.search(r'"model": (\{.*?\})', shown, flags=re.DOTALL).group(0) + "}")["model"]
    assert shown_model == first["model"]
    per_result = [(i, task) for i in range(len(first["results"])) for task in ("topic", "sentiment")]
    found = SHOWN_RESULT.findall(shown)
    assert [task for task, _, _ in found] == [task for _, task in per_result], found
    for (i, task), (_, label, confidence) in zip(per_result, found):
        served = first["results"][i][task]
        assert label == served["label"], (i, task, served)
        if confidence:
            assert abs(float(confidence) - served["confidence"]) <= SHOWN_DIGITS, (i, task, served)

    assert set(answers[1]["results"][0]) == {"sentiment", "truncated", "embedding"}  # only the asked head
    assert len(answers[1]["results"][0]["embedding"]) == first["model"]["embedding_dim"]
    assert set(answers[2]["results"][0]) == {"topic", "truncated"}
    assert answers[3]["dimension"] == first["model"]["embedding_dim"] == len(answers[3]["embeddings"][0])
    # docs/serving.md shows the first values of that embedding ("hello world", unit-normalized)
    shown_values = re.search(r'# -> \{"embeddings": \[\[([-\d., ]+), \.\.\.\]\]', SERVING_DOC).group(1).split(", ")
    for shown_value, served_value in zip(shown_values, answers[3]["embeddings"][0], strict=False):
        assert abs(float(shown_value) - served_value) <= SHOWN_DIGITS, (shown_values, answers[3]["embeddings"][0][:3])
    assert [task["name"] for task in answers[4]["tasks"]] == ["topic", "sentiment"]

    (openai_snippet,) = [block for language, block in BLOCKS if language == "python" and "OpenAI(" in block]
    namespace: dict = {}
    exec(openai_snippet.replace("127.0.0.1:8000", f"127.0.0.1:{make_run.port}"), namespace)  # noqa: S102 - README's own code
    assert len(namespace["response"].data[0].embedding) == first["model"]["embedding_dim"] == 1024
