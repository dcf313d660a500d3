"""Dataset builders: source readers → the ReasonSeg release, the template QA set, LLM rephrasing, publishing."""
