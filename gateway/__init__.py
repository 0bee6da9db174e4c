"""The edge runtime: runs a site's collectors and sends what they read up to the server.

Public names: :func:`gateway.site.load_site`, :class:`gateway.runtime.Gateway`,
:class:`gateway.uplink.Uplink`. The disk-backed queue, edge rules and remote management
arrive with issue 4.
"""
