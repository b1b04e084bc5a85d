"""Coding tasks as separate processes: what a task is (``spec``), how the agent runs one
(``executor``: the ``Executor`` protocol and the ``LocalExecutor``), the pipe between the
agent and its task process (``channel``), and what the task process does (``runner``,
behind ``gitlab-copilot-agent run-task``)."""
