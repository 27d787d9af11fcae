"""Routing service: turns a conversation's context into a routing decision (connector,
queue, priority, skills) with rules from a YAML file that is reloaded when it changes."""
