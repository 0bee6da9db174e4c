"""The web room: HTTP pieces every room's handlers share (JSON errors, auth helpers), the
status page with its SSE stream and static files, and the live state it streams. The live
state and the helpers sit low (ingest feeds the live state); the status handlers sit at the
top with the other rooms' handlers."""
