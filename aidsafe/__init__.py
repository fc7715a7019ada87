"""aidsafe: policy-embedded chain-of-thought safety data by multi-agent deliberation (AIDSAFE)."""

__version__ = "0.1.0"
