"""Stand-ins for the external APIs the agent talks to, served over real loopback sockets.

Stand-ins, not the real services: in-memory fakes that speak the real
request and response shapes (and fail like them), for tests, benchmarks and
``gitlab-copilot-agent demo``. The agent's service code never imports this
package (a test checks it); only the ``demo`` command does, when it runs.

- ``base.Standin``: the shared base (fault script, recorded requests, reset,
  ``serve()`` on loopback in a thread, a route table);
- ``gitlab.GitLabStandin``: GitLab REST v4;
- ``jira.JiraStandin``: Jira Cloud REST v3;
- ``llm.LLMStandin``: an OpenAI-compatible ``/v1/chat/completions``;
- ``faults``: ``Fault.http/echo_header/slow/reset`` and the script they live in;
- ``servers.run_in_thread``: any ASGI app on a free loopback port, in a thread.
"""
