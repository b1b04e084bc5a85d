"""The agent's workflows. Each module has an ``install(parts)`` that plugs it into the
event and command routers (``plugins.Parts``); the composition root lists them."""
