"""Safety-alert decision logic (rules, lifecycle, routing, escalation): issue 5.

Nothing is implemented here yet; the server raises no alerts in this version.
"""
