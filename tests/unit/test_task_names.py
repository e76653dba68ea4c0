"""Task names: a new task must fit a route and a Serve deployment name, and clash with no existing task."""

from __future__ import annotations

import pytest

from multitask.task_names import MAX_TASK_NAME, TaskNameError, check_task_name, head_deployment_name


@pytest.mark.parametrize("name", ["news", "news_region", "a", "tweets2", "t_2026_q1", "x" * MAX_TASK_NAME])
def test_names_that_fit_a_route_and_a_deployment_are_accepted(name):
    assert check_task_name(name, existing=["topic", "sentiment"]) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("News", "does not fit"),
        ("2news", "does not fit"),
        ("news-region", "does not fit"),
        ("news region", "does not fit"),
        ("news/region", "does not fit"),
        ("news__region", "does not fit"),
        ("news_", "does not fit"),
        ("_news", "does not fit"),
        ("nöws", "does not fit"),
        ("x" * (MAX_TASK_NAME + 1), f"{MAX_TASK_NAME + 1} characters"),
    ],
)
def test_names_that_cannot_be_a_route_or_deployment_are_refused_with_the_rule(name, why):
    with pytest.raises(TaskNameError, match=why) as error:
        check_task_name(name)
    assert "a-z, 0-9 and single underscores" in str(error.value)


def test_an_existing_task_is_refused_naming_the_tasks():
    with pytest.raises(TaskNameError, match=r"Task 'topic' exists already \(tasks: \['topic', 'sentiment'\]\)"):
        check_task_name("topic", existing=["topic", "sentiment"])


def test_a_name_that_would_reuse_another_tasks_deployment_name_is_refused():
    assert head_deployment_name("a_1b") == head_deployment_name("a1b") == "A1bHead"
    with pytest.raises(TaskNameError, match="would deploy as A1bHead, the deployment of the existing task 'a1b'"):
        check_task_name("a_1b", existing=["a1b"])


def test_deployment_names_follow_the_task_names():
    assert head_deployment_name("topic") == "TopicHead"
    assert head_deployment_name("news_region") == "NewsRegionHead"
