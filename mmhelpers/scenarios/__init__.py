"""Scenario code: one package per application scenario, built on the reusable core (``mmhelpers.*``).

The rule: the core never imports a scenario, and scenarios never import each other
(``tests/test_layout.py`` checks both). A new scenario goes in ``scenarios/<name>/`` and may use any public
name of the core.
"""
