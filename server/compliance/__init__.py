"""Compliance records, assessments and reports (issue 15)."""
