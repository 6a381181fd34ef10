"""Semantic routing: routes as declared, scoring maths, fitting, decisions, the task."""
