"""The GitLab Copilot merge-request agent, built on the ``auditkeep`` audit library.

It authenticates GitLab webhooks, reviews merge requests with an LLM, answers
``/copilot`` commands, and leaves an audit entry for every call it makes.
``gitlab-copilot-agent serve`` runs it (``cli``); ``composition`` builds its
parts from ``settings``; workflows plug into the event and command routers
(``plugins``, ``events``, ``commands``).
"""

__version__ = "0.1.0"
