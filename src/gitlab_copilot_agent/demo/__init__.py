"""Local stand-ins for GitLab and an OpenAI-compatible LLM, and a helper to serve them.

- ``gitlab_standin.GitLabStandin``: GitLab REST v4 shapes, scripted faults.
- ``llm_standin.LLMStandin``: ``/v1/chat/completions`` with deterministic reviews.
- ``faults``: the fault script both stand-ins share (``Fault.http/slow/reset``).
- ``servers.run_in_thread``: uvicorn on a free loopback port, in a thread.

Used by the tests, the benchmarks and ``gitlab-copilot-agent demo``.
"""
