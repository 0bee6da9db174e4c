"""The notifier: sends the outbox (``deliveries``) that alert changes write.

Channels (``org_channels``, declared per organisation in the registry):

* ``webhook``: ``POST`` the alert JSON with ``X-Linli-Timestamp`` (Unix seconds of the
  attempt), ``X-Linli-Delivery`` (the delivery id) and ``X-Linli-Signature-256:
  sha256=<hex>``, the HMAC-SHA256 under the organisation's secret of
  ``<timestamp>.<delivery id>.<body>`` (the scheme Stripe's and GitHub's receivers know), so a
  captured request cannot be replayed later or twice (docs/alerts.md has the receiver's
  check). ``X-Linli-Signature`` (the body alone) is still sent, deprecated, for one release.
  2xx is delivered; anything else, or no answer within the timeout, is retried.
* ``robot``: a group-chat robot webhook of the kind WeCom (企业微信) and DingTalk (钉钉) use:
  ``{"msgtype": "text", "text": {"content": …}}`` with a Chinese one-line summary; their
  APIs answer 200 with ``errcode`` 0 on success, and anything else is retried.
* ``mqtt``: the organisation's feed, ``{prefix}/org/{org}/alerts`` (QoS 1, not retained),
  published by the server's management link.
* ``email``: a plain-text mail (Chinese summary, then the alert JSON) through the SMTP
  server of ``smtp_url``, sent with aiosmtplib; refused or unreachable is retried.

Every attempt is recorded (``delivery_attempts``). Retries back off exponentially with full
jitter, capped at ``notify_backoff_max_s``; after ``notify_max_attempts`` a delivery is
dead-lettered (``status = dead``, visible on the alert). Deliveries are claimed one by one
with a lease (``claimed_until``) and sent concurrently, each bounded by its own timeout, so
one organisation's dead endpoint never delays another's; a worker that dies mid-send leaves
the claim to run out and another worker sends it again (at least once: receivers dedupe on
the delivery id header ``X-Linli-Delivery``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Final

import aiohttp
import aiosmtplib
from sqlalchemy import select, update

from server.store import models
from server.store.db import Database

__all__ = ["Notifier", "NotifyPolicy", "SmtpTarget", "mail", "robot_text", "sign", "sign_v2"]

log = logging.getLogger(__name__)

POLL_S: Final = 0.25
BATCH: Final = 50

SEVERITY_ZH: Final = {"critical": "紧急", "major": "重要", "minor": "一般", "info": "提示"}
RULE_ZH: Final = {
    "trapped": "电梯困人",
    "elevator_fault": "电梯故障",
    "frequent_faults": "电梯频繁故障",
    "maintenance_overdue": "电梯维保超期",
    "inspection_due": "电梯检验即将到期",
    "inspection_overdue": "电梯检验超期",
    "ebike_in_elevator": "电动车入梯",
    "fire_lane_blocked": "消防通道堵塞",
    "gate_forced": "门禁被强行打开",
    "gate_held_open": "门禁长时间未关",
    "fire_release": "消防联动开门",
    "device_offline": "设备离线",
    "gateway_offline": "网关离线",
}
CHANGE_ZH: Final = {
    "opened": "新告警",
    "escalated": "告警升级",
    "acknowledged": "已响应",
    "on_site": "已到场",
    "resolved": "已处置",
    "closed": "已关闭",
    "false_alarm": "误报",
}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def sign(secret: str, body: bytes) -> str:
    """The deprecated ``X-Linli-Signature`` header value for ``body`` (replayable)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_v2(secret: str, timestamp: int, delivery: str, body: bytes) -> str:
    """The ``X-Linli-Signature-256`` header value: over ``timestamp.delivery.body``."""
    signed = f"{timestamp}.{delivery}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def robot_text(message: dict[str, Any]) -> str:
    """The one-line Chinese summary a chat robot posts."""
    rule = RULE_ZH.get(message["rule"], message["rule"])
    change = CHANGE_ZH.get(message["change"], message["change"])
    severity = SEVERITY_ZH.get(message["severity"], message["severity"])
    return (
        f"【{severity}】{rule}（{change}）小区 {message['community']} 设备 {message['device']}，"
        f"状态 {message['state']}，告警编号 {message['id']}"
    )


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    """Where mail goes out (the ``smtp_url`` setting, parsed)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    sender: str = "linli@localhost"

    @classmethod
    def parse(cls, url: str, sender: str) -> SmtpTarget:
        parsed = urllib.parse.urlsplit(url)
        tls = parsed.scheme == "smtps"
        return cls(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or (465 if tls else 25),
            username=urllib.parse.unquote(parsed.username) if parsed.username else None,
            password=urllib.parse.unquote(parsed.password) if parsed.password else None,
            use_tls=tls,
            sender=sender,
        )


def mail(message: dict[str, Any], sender: str, to: str) -> EmailMessage:
    """The email of one delivery."""
    out = EmailMessage()
    out["From"] = sender
    out["To"] = to
    out["Subject"] = robot_text(message).split("，", 1)[0]
    out["X-Linli-Alert"] = str(message["id"])
    out.set_content(
        robot_text(message) + "\n\n" + json.dumps(message, ensure_ascii=False, indent=2) + "\n"
    )
    return out


@dataclass(frozen=True, slots=True)
class NotifyPolicy:
    """Retry bounds (server settings ``notify_*``)."""

    max_attempts: int = 30
    backoff_min_s: float = 1.0
    backoff_max_s: float = 60.0
    timeout_s: float = 10.0

    def next_delay_s(self, attempts: int) -> float:
        """Full jitter (AWS architecture blog, "Exponential Backoff And Jitter")."""
        bound = min(self.backoff_max_s, self.backoff_min_s * 2 ** (attempts - 1))
        return random.uniform(bound / 2, bound)  # noqa: S311 (jitter, not security)


MqttPublish = Callable[[str, bytes], Awaitable[None]]


class Notifier:
    """Sends due deliveries until cancelled (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        *,
        policy: NotifyPolicy | None = None,
        mqtt_prefix: str = "linli/v1",
        mqtt_publish: MqttPublish | None = None,
        smtp: SmtpTarget | None = None,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.db = db
        self.policy = policy or NotifyPolicy()
        self.prefix = mqtt_prefix
        self._mqtt_publish = mqtt_publish
        self.smtp = smtp
        self.clock = clock
        #: How long a claim holds: a worker that died mid-send loses it after this.
        self.claim_ms = int(self.policy.timeout_s * 3000)
        self.wake = asyncio.Event()
        self.sent = 0
        self.failed = 0
        self.dead = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Claim and send due deliveries until cancelled."""
        timeout = aiohttp.ClientTimeout(total=self.policy.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            try:
                while True:
                    try:
                        for delivery_id in await self._claim():
                            task = asyncio.create_task(self._send(http, delivery_id))
                            self._tasks.add(task)
                            task.add_done_callback(self._tasks.discard)
                    except Exception:
                        log.exception("notifier failed to claim deliveries; retrying")
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), POLL_S)
            finally:
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _claim(self) -> list[int]:
        now = self.clock()
        async with self.db.session(write=True) as session:
            due = (
                await session.scalars(
                    select(models.Delivery.id)
                    .where(
                        models.Delivery.status == "pending",
                        models.Delivery.next_t <= now,
                        models.Delivery.claimed_until < now,
                    )
                    .order_by(models.Delivery.next_t)
                    .limit(BATCH)
                )
            ).all()
            mine: list[int] = []
            for delivery_id in due:
                claimed = await session.execute(
                    update(models.Delivery)
                    .where(models.Delivery.id == delivery_id, models.Delivery.claimed_until < now)
                    .values(claimed_until=now + self.claim_ms)
                )
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    mine.append(delivery_id)
        return mine

    async def _send(self, http: aiohttp.ClientSession, delivery_id: int) -> None:
        async with self.db.session() as session:
            delivery = await session.get(models.Delivery, delivery_id)
            channel = (
                await session.get(models.OrgChannel, delivery.channel_id) if delivery else None
            )
        if delivery is None or channel is None:
            return
        start = time.monotonic()
        status: int | None = None
        error = ""
        try:
            status, error = await self._deliver(http, delivery, channel)
        except (aiohttp.ClientError, aiosmtplib.SMTPException, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:
            log.exception("delivery %d failed unexpectedly", delivery_id)
            error = f"{type(exc).__name__}: {exc}"
        ok = not error
        took = int((time.monotonic() - start) * 1000)
        now = self.clock()
        async with self.db.session(write=True) as session:
            row = await session.get(models.Delivery, delivery_id)
            if row is None:
                return
            row.attempts += 1
            session.add(
                models.DeliveryAttempt(delivery_id=delivery_id, t=now, ok=ok, status=status,
                                       error=error[:1000], duration_ms=took)
            )  # fmt: skip
            row.claimed_until = 0
            if ok:
                row.status, row.delivered_t, row.last_error = "delivered", now, ""
                self.sent += 1
            else:
                row.last_error = error[:1000]
                self.failed += 1
                if row.attempts >= self.policy.max_attempts:
                    row.status = "dead"
                    self.dead += 1
                    log.error("delivery %d to %s dead after %d attempts: %s",
                              delivery_id, row.org_id, row.attempts, error)  # fmt: skip
                else:
                    row.next_t = now + int(self.policy.next_delay_s(row.attempts) * 1000)

    async def _deliver(
        self, http: aiohttp.ClientSession, delivery: models.Delivery, channel: models.OrgChannel
    ) -> tuple[int | None, str]:
        """Send once; (HTTP status or None, error or "")."""
        body = delivery.body.encode()
        if channel.kind == "webhook":
            timestamp = int(time.time())  # each attempt signs afresh
            headers = {
                "Content-Type": "application/json",
                "X-Linli-Timestamp": str(timestamp),
                "X-Linli-Delivery": str(delivery.id),
                "X-Linli-Signature-256": sign_v2(channel.secret, timestamp, str(delivery.id), body),
                "X-Linli-Signature": sign(channel.secret, body),  # deprecated
            }
            async with http.post(channel.target, data=body, headers=headers) as resp:
                await resp.read()
                ok = 200 <= resp.status < 300
                return resp.status, "" if ok else f"HTTP {resp.status}"
        if channel.kind == "robot":
            text = robot_text(json.loads(delivery.body))
            payload = {"msgtype": "text", "text": {"content": text}}
            async with http.post(channel.target, json=payload) as resp:
                answer = await resp.text()
                if not 200 <= resp.status < 300:
                    return resp.status, f"HTTP {resp.status}"
                try:
                    code = json.loads(answer).get("errcode", 0)
                except (json.JSONDecodeError, AttributeError):
                    code = 0
                return resp.status, "" if code == 0 else f"robot errcode {code}: {answer[:200]}"
        if channel.kind == "mqtt":
            if self._mqtt_publish is None:
                return None, "no MQTT link"
            topic = f"{self.prefix}/org/{delivery.org_id}/alerts"
            await self._mqtt_publish(topic, body)
            return None, ""
        if channel.kind == "email":
            smtp = self.smtp
            if smtp is None:
                return None, "no smtp_url set on the server"
            message = mail(json.loads(delivery.body), smtp.sender, channel.target)
            await aiosmtplib.send(
                message,
                hostname=smtp.host,
                port=smtp.port,
                username=smtp.username,
                password=smtp.password,
                use_tls=smtp.use_tls,
                timeout=self.policy.timeout_s,
            )
            return None, ""
        return None, f"channel kind {channel.kind!r} is not supported"
