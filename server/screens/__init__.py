"""Live screens for neighbourhood centres, duty rooms and street offices (issue 16)."""
