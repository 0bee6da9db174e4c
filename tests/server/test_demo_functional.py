"""``linli demo`` as a user runs it: it starts, at least 20 communities change live, and
Ctrl-C (SIGINT) stops everything, leaving no process and no port behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.site import load_site_with_profiles
from server.demo import site_configs
from server.store.registry import load_registry
from tests.conftest import ADMIN_TOKEN, DEMO_REGISTRY, ROOT, api_json, free_port, linli, wait_port


def snapshot(url: str) -> dict[str, Any]:
    body = api_json(url + "/api/overview")
    return {
        c["id"]: {d["id"]: (d["state"] or {}).get("fields") for d in c["devices"]}
        for c in body["communities"]
    }


def children_of(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def test_demo_sites_pass_the_site_check_with_a_speaker_on_every_lane(tmp_path: Path) -> None:
    """The demo's sites are configured as real ones: no rule without its output (issue 12:
    the demo logged "voice_warning ... no output is configured" every few seconds)."""
    sites = site_configs(load_registry(DEMO_REGISTRY), "mqtt://127.0.0.1:1883", "linli/v1",
                         tmp_path, seed=1)  # fmt: skip
    lanes = 0
    for name, site in sites.items():
        path = tmp_path / name
        path.write_text(yaml.safe_dump(site, allow_unicode=True))
        config, profiles = load_site_with_profiles(path)  # raises on any problem
        kinds = config.device_kinds(profiles)
        spoken = {o.device for o in config.outputs if o.action == "voice_warning"}
        assert spoken == {d for d, k in kinds.items() if k == "fire_lane"}, name
        lanes += len(spoken)
    assert lanes >= 20


@pytest.mark.functional
def test_demo_runs_live_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        linli("demo", "--state-dir", str(tmp_path / "demo")),
        cwd=ROOT,
        env={**os.environ, "LINLI_HTTP_PORT": str(port), "LINLI_ADMIN_TOKEN": ADMIN_TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_port(port, timeout=60)
        url = f"http://127.0.0.1:{port}"
        time.sleep(3)
        before = snapshot(url)
        gateway_pids = children_of(proc.pid)
        assert gateway_pids, "the demo runs its gateways as a child process"
        # The simulators are seeded: which communities are quiet in a given 6 s depends on
        # where the run starts. Every community that changes at any point counts.
        changed: set[str] = set()
        deadline = time.monotonic() + 20
        while len(changed) < 20 and time.monotonic() < deadline:
            time.sleep(1)
            after = snapshot(url)
            changed |= {c for c in after if after[c] != before[c]}
        assert time.monotonic() - started < 60
        assert len(after) >= 20
        # The neighbourhood centre's screen shows the 22 communities, live.
        request = urllib.request.Request(
            f"{url}/screen-data/shancheng-hall/snapshot",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            screen = json.loads(resp.read())
        assert len(screen["communities"]) == 22
        assert sum(1 for c in screen["communities"] for d in c["devices"] if d["t"]) > 100
        assert len(changed) >= 20, f"only {len(changed)} communities changed"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert f"http://127.0.0.1:{port}/" in out
    assert f"http://127.0.0.1:{port}/screen/shancheng-hall#token=scr_" in out
    assert "Linli demo stopped." in out
    assert "no output is configured" not in out  # every rule has its output (issue 12)
    for pid in gateway_pids:
        assert not Path(f"/proc/{pid}").exists(), f"gateway process {pid} left running"
    with pytest.raises(TimeoutError):
        wait_port(port, timeout=0.5)
