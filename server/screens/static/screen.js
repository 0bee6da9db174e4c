// Linli big screen (docs/screens.md). Opened as /screen/<id>#token=…: the token is kept for the
// tab (sessionStorage) and dropped from the address bar. Loads a snapshot, then reads the
// screen's stream (server-sent events, read with fetch so that the token goes in a header):
// frames are numbered; a skipped number, another server epoch or a broken connection makes
// it take a new snapshot, reconnecting with backoff and showing since when it is lost.
// ?lang=en (or the switch) for English; ?sound=1 beeps on a new critical alert (a kiosk
// browser started with --autoplay-policy=no-user-gesture-required).
"use strict";

const T = {
  zh: { other: "English", live: "实时", lost: (t) => `连接中断 自 ${t}`, connecting: "连接中…",
        none: "当前无告警", page: (i, n) => `第 ${i}/${n} 页`, gwOn: "网关在线", gwOff: "网关离线",
        gwUnknown: "网关未上报", laneMin: (m) => `占用 ${m ?? "—"} 分钟`,
        avail: (a) => `电梯可用 ${a == null ? "—" : (a * 100).toFixed(1) + "%"}`,
        alerts24: "24小时告警", ackd: "已响应", onsite: "已到场", open: "未响应",
        floor: (f) => `${f}层`, up: "↑", down: "↓", stopped: "",
        elevator: { ok: "运行正常", idle: "停靠", fault: "故障", trapped: "困人", offline: "离线",
                    out: "停用", stale: "无数据" },
        lane: { clear: "畅通", busy: (s) => `占用 ${Math.round((s || 0) / 60)} 分钟`,
                blocked: (s) => `堵塞 ${Math.round((s || 0) / 60)} 分钟`, fault: "故障" },
        stale: "数据过期", refused: "令牌无效", more: (n) => `另有 ${n} 项`,
        gate: { closed: "关闭", open: "开启", forced: "强行打开", held: "长开", fire: "消防释放",
                locked_down: "封闭" },
        panel: { alarm: "火警", normal: "正常" },
        rules: { trapped: "困人", elevator_fault: "电梯故障", frequent_faults: "频繁故障",
                 fire_lane_blocked: "消防通道占用", gate_forced: "门禁强行打开",
                 gate_held_open: "门禁长开", fire_release: "消防释放", device_offline: "设备离线",
                 gateway_offline: "网关离线", ebike_in_elevator: "电动车入梯",
                 maintenance_overdue: "维保超期", inspection_due: "检验到期",
                 inspection_overdue: "检验超期" },
        foot: "数据来自各小区网关的实时上报；红色为紧急告警。" },
  en: { other: "中文", live: "live", lost: (t) => `connection lost since ${t}`,
        connecting: "connecting…", none: "no open alerts", page: (i, n) => `page ${i}/${n}`,
        gwOn: "gateway online", gwOff: "gateway offline", gwUnknown: "gateway not seen",
        laneMin: (m) => `lanes occupied ${m ?? "—"} min`,
        avail: (a) => `lifts available ${a == null ? "—" : (a * 100).toFixed(1) + "%"}`,
        alerts24: "alerts, 24 h", ackd: "acknowledged", onsite: "on site", open: "unanswered",
        floor: (f) => `fl ${f}`, up: "↑", down: "↓", stopped: "",
        elevator: { ok: "running", idle: "idle", fault: "FAULT", trapped: "TRAPPED",
                    offline: "offline", out: "out of service", stale: "no data" },
        lane: { clear: "clear", busy: (s) => `occupied ${Math.round((s || 0) / 60)} min`,
                blocked: (s) => `BLOCKED ${Math.round((s || 0) / 60)} min`, fault: "fault" },
        stale: "stale", refused: "token refused", more: (n) => `+${n} more`,
        gate: { closed: "closed", open: "open", forced: "FORCED", held: "held open",
                fire: "fire release", locked_down: "locked down" },
        panel: { alarm: "FIRE ALARM", normal: "normal" },
        rules: { trapped: "trapped passengers", elevator_fault: "elevator fault",
                 frequent_faults: "frequent faults", fire_lane_blocked: "fire lane blocked",
                 gate_forced: "gate forced", gate_held_open: "gate held open",
                 fire_release: "fire release", device_offline: "device offline",
                 gateway_offline: "gateway offline", ebike_in_elevator: "e-bike in lift",
                 maintenance_overdue: "maintenance overdue", inspection_due: "inspection due",
                 inspection_overdue: "inspection overdue" },
        foot: "Live reports from each community's gateway; red is an emergency." },
};
const TOKEN_KEY = "linli.screen.token";
const STALE_S = 180;          // a tile older than this (3 heartbeats) is marked stale
const FAULTS = new Set(["safety_circuit_open", "door_close_fault", "door_open_fault",
  "stopped_outside_door_zone", "unintended_movement", "motor_runtime_limiter", "position_lost",
  "restart_prevented", "overtravel_top", "overtravel_bottom", "overspeed", "power_failure"]);

const params = new URLSearchParams(location.search);
const screenId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const hash = location.hash.match(/token=([^&]+)/);
if (hash) {
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(hash[1]));
  history.replaceState(null, "", location.pathname + location.search);
}
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
let lang = params.get("lang") || localStorage.getItem("linli.lang") || null;
const sound = params.get("sound") === "1";

// State: bounded by the screen's communities (replaced on each snapshot, never appended).
let snap = null;              // {screen, communities: [...], epoch}
const devices = new Map();    // "c/dev" -> public device
const gateways = new Map();   // "c/gw" -> public gateway
const alerts = new Map();     // id -> public alert (open ones only)
let epoch = null, seq = 0, pageIndex = 0, lostSince = null, backoff = 1000, stream = null;
let rotateTimer = null, heard = new Set();

const t = () => T[lang || (snap && snap.screen.lang) || "zh"];
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
};
const hhmm = (ms, secs) => new Date(ms).toLocaleTimeString("zh-CN", { timeZone: "Asia/Shanghai",
  hour12: false, hour: "2-digit", minute: "2-digit", ...(secs ? { second: "2-digit" } : {}) });

function setConn(state) {
  const c = document.getElementById("conn");
  c.dataset.state = state;
  c.textContent = state === "live" ? t().live : state === "refused" ? t().refused
    : state === "lost" ? t().lost(hhmm(lostSince ?? Date.now())) : t().connecting;
}

function load(body) {
  snap = body; epoch = body.epoch; seq = body.seq;
  devices.clear(); gateways.clear(); alerts.clear();
  for (const c of body.communities) {
    for (const d of c.devices) devices.set(`${c.id}/${d.dev}`, d);
    for (const g of c.gateways) gateways.set(`${c.id}/${g.gateway}`, g);
  }
  for (const a of body.alerts) if (a.open) alerts.set(a.id, a);
  document.body.classList.toggle("compact", body.screen.density === "compact");
  render();
}

function apply(u) {
  if (u.type === "device") devices.set(`${u.community}/${u.dev}`, u);
  else if (u.type === "gateway") gateways.set(`${u.community}/${u.gateway}`, u);
  else if (u.type === "alert") {
    const had = alerts.get(u.id);
    if (had && had.updated_t > u.updated_t) return;  // an older state of it: already past
    if (u.open) {
      if (!alerts.has(u.id) && critical(u)) beep();
      alerts.set(u.id, u);
    } else alerts.delete(u.id);
  }
}

function critical(a) {
  return a.rule === "trapped" || (a.rule === "fire_lane_blocked" && a.level > 0)
    || a.severity === "critical";
}

function beep() {
  if (!sound) return;
  try {
    const ctx = new AudioContext(), osc = ctx.createOscillator();
    osc.frequency.value = 880; osc.connect(ctx.destination); osc.start();
    osc.stop(ctx.currentTime + 0.6); osc.onended = () => ctx.close();
  } catch (e) { /* no audio: the colour and motion still show it */ }
}

// --- the stream -------------------------------------------------------------------------

async function connect() {
  try {
    const resp = await fetch(`/screen-data/${encodeURIComponent(screenId)}/stream`,
      { headers: { Authorization: `Bearer ${token()}` }, cache: "no-store" });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      const e = new Error(body.error || `HTTP ${resp.status}`); e.status = resp.status; throw e;
    }
    stream = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await stream.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
        if (!handle(block)) { stream.cancel(); throw new Error("resync"); }
      }
    }
    throw new Error("stream ended");
  } catch (e) {
    if (e.status === 401 || e.status === 404 || e.status === 429) {
      setConn("refused"); showError(e.message);
      if (e.status === 429) setTimeout(connect, 30000);
      return;
    }
    if (lostSince == null) lostSince = Date.now();
    setConn("lost");
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 30000);
  }
}

// One SSE block; false when the page must reconnect for a new snapshot (a gap, a resync).
function handle(block) {
  let event = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return true;
  const msg = JSON.parse(data);
  if (event === "snapshot") {
    load(msg); lostSince = null; backoff = 1000; setConn("live");
    return true;
  }
  if (event === "revoked") { showError("revoked"); return false; }
  if (event === "resync") return false;
  if (msg.seq <= seq) return true;   // already in the snapshot
  if (msg.seq !== seq + 1) return false;
  seq = msg.seq;
  for (const u of msg.updates) apply(u);
  render();
  return true;
}

function showError(message) {
  document.getElementById("grid").replaceChildren(el("div", "panel", message));
}

// --- rendering ----------------------------------------------------------------------------

// Open alerts of a device, by rule: after a server restart the live state is refilled by
// the gateways' next reports, but the open alerts (from the database) already say what holds.
function alertRules(d) {
  const rules = new Set();
  for (const a of alerts.values()) if (a.community === d.community && a.device === d.dev) rules.add(a.rule);
  return rules;
}

function elevatorState(d) {
  const f = d.fields || {}, active = new Set(d.active || []), rules = alertRules(d);
  if (rules.has("trapped")) active.add("trapped");
  if (rules.has("elevator_fault")) return ["bad", t().elevator.fault];
  if (active.has("trapped")) return ["bad", t().elevator.trapped];
  if (active.has("terminal_offline")) return ["warn", t().elevator.offline];
  if ([...active].some((e) => FAULTS.has(e))) return ["bad", t().elevator.fault];
  if (f.service_mode && f.service_mode !== "normal") return ["warn", t().elevator.out];
  if (!d.t) return ["warn", t().elevator.stale];
  const dir = f.direction === "up" ? t().up : f.direction === "down" ? t().down : "";
  const where = f.floor != null ? ` ${t().floor(f.floor)}${dir}` : "";
  return ["ok", (f.running ? t().elevator.ok : t().elevator.idle) + where];
}

function laneState(d) {
  const f = d.fields || {}, active = new Set(d.active || []), rules = alertRules(d);
  if (active.has("sensor_fault")) return ["warn", t().lane.fault];
  if (active.has("obstruction") || rules.has("fire_lane_blocked")) return ["bad", t().lane.blocked(f.dwell_s)];
  if (f.occupied) return ["warn", t().lane.busy(f.dwell_s)];
  return ["ok", t().lane.clear];
}

function gateState(d) {
  const f = d.fields || {}, active = new Set(d.active || []), rules = alertRules(d);
  if (active.has("forced_open") || rules.has("gate_forced")) return ["bad", t().gate.forced];
  if (active.has("fire_release") || f.mode === "fire_release") return ["warn", t().gate.fire];
  if (active.has("held_open") || rules.has("gate_held_open") || f.mode === "held_open") return ["warn", t().gate.held];
  if (f.mode === "locked_down") return ["warn", t().gate.locked_down];
  return ["ok", f.open ? t().gate.open : t().gate.closed];
}

function tile(d, now) {
  const known = d.t || alertRules(d).size;
  const [cls, text] = !known ? ["warn", t().elevator.stale] : d.kind === "elevator" ? elevatorState(d)
    : d.kind === "fire_lane" ? laneState(d) : d.kind === "gate" ? gateState(d)
    : (d.fields || {}).alarm ? ["bad", t().panel.alarm] : ["ok", t().panel.normal];
  const e = el("div", `tile ${cls}`);
  e.dataset.dev = d.dev; e.dataset.state = cls;
  e.append(el("span", "n", en() ? d.name_en || d.name : d.name), el("span", "s", text));
  if (d.t && now - d.t > STALE_S * 1000) {
    e.classList.add("stale");
    e.append(el("span", "old", t().stale));
  }
  return e;
}

const en = () => (lang || (snap && snap.screen.lang)) === "en";

function strip(s) {
  const box = el("div", "strip");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 96 20"); svg.setAttribute("preserveAspectRatio", "none");
  const hours = s.alerts_per_hour || [], top = Math.max(1, ...hours);
  hours.forEach((n, i) => {
    const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    const h = n ? 4 + 16 * n / top : 2;
    r.setAttribute("x", i * 4); r.setAttribute("y", 20 - h);
    r.setAttribute("width", 3); r.setAttribute("height", h);
    if (!n) r.setAttribute("class", "zero");
    svg.append(r);
  });
  const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
  title.textContent = t().alerts24; svg.append(title);
  box.append(svg, el("span", null, `${t().laneMin(s.lane_min)} · ${t().avail(s.availability)}`));
  return box;
}

function pages() {
  const per = snap.screen.density === "compact" ? 8 : 6;
  const coms = snap.communities;
  const hot = new Set([...alerts.values()].filter(critical).map((a) => a.community));
  const pinned = coms.filter((c) => hot.has(c.id)).slice(0, per - 1);
  const rest = coms.filter((c) => !pinned.includes(c));
  const room = per - pinned.length, out = [];
  for (let i = 0; i < Math.max(1, rest.length); i += room) out.push([...pinned, ...rest.slice(i, i + room)]);
  return out;
}

function render() {
  if (!snap) return;
  const now = Date.now(), tt = t();
  document.documentElement.lang = (lang || snap.screen.lang) === "en" ? "en" : "zh-CN";
  document.getElementById("name").textContent = snap.screen.name;
  document.getElementById("org").textContent = en() ? snap.screen.org_en || snap.screen.org : snap.screen.org;
  document.getElementById("lang").textContent = tt.other;
  document.getElementById("foot").textContent = tt.foot;
  const names = new Map(snap.communities.map((c) => [c.id, (lang || snap.screen.lang) === "en" ? c.name_en : c.name]));
  // The band: open alerts, critical first, then the oldest.
  const band = document.getElementById("band");
  band.dataset.empty = tt.none;
  const open = [...alerts.values()].sort((a, b) => (critical(b) - critical(a)) || a.opened_t - b.opened_t);
  const shown = open.length > 4 ? open.slice(0, 3) : open;
  band.replaceChildren(...shown.map((a) => {
    const e = el("div", critical(a) ? "alert critical" : "alert");
    e.dataset.id = a.id; e.dataset.community = a.community;
    const age = Math.max(0, Math.floor((now - a.opened_t) / 1000));
    const state = a.state === "on_site" ? tt.onsite : a.state === "acknowledged" ? tt.ackd : tt.open;
    const device = en() ? a.device_name_en || a.device_name : a.device_name;
    const handler = en() ? a.handler_en || a.handler : a.handler;
    e.append(el("b", null, tt.rules[a.rule] || a.rule), el("span", null, ` ${names.get(a.community) || a.community} ${device}`),
      el("span", "age", `${Math.floor(age / 60)}:${String(age % 60).padStart(2, "0")}`),
      el("span", "who", `${state}${handler ? " · " + handler : ""}`));
    return e;
  }));
  if (open.length > shown.length) band.append(el("div", "alert more", tt.more(open.length - shown.length)));
  // The panels of the current page.
  const all = pages();
  pageIndex %= all.length;
  document.getElementById("page").textContent = all.length > 1 ? tt.page(pageIndex + 1, all.length) : "";
  const hot = new Set(open.filter(critical).map((a) => a.community));
  document.getElementById("grid").replaceChildren(...all[pageIndex].map((c) => {
    const p = el("section", hot.has(c.id) ? "panel critical" : "panel");
    p.dataset.community = c.id;
    const gws = c.gateways.map((g) => gateways.get(`${c.id}/${g.gateway}`) || g);
    const gwState = gws.some((g) => g.status === "offline") ? "offline"
      : gws.some((g) => g.status === "online") ? "online" : "unknown";
    const h = el("h2", null, names.get(c.id));
    h.append(el("span", `gw ${gwState}`, gwState === "online" ? tt.gwOn : gwState === "offline" ? tt.gwOff : tt.gwUnknown));
    const tiles = el("div", "tiles");
    for (const d of c.devices) tiles.append(tile(devices.get(`${c.id}/${d.dev}`) || d, now));
    p.append(h, tiles, strip(c.strip));
    return p;
  }));
}

function tick() {
  document.getElementById("clock").textContent = hhmm(Date.now(), true);
  if (lostSince != null) setConn("lost");
  render();
}

function rotate() {
  pageIndex += 1;
  render();
}

document.getElementById("lang").onclick = () => {
  lang = (lang || (snap && snap.screen.lang) || "zh") === "zh" ? "en" : "zh";
  localStorage.setItem("linli.lang", lang);
  render();
};

setInterval(tick, 1000);
connect().then(() => {});
(async function startRotation() {
  // The page length comes with the snapshot; until then, check every second.
  while (!snap) await new Promise((r) => setTimeout(r, 1000));
  rotateTimer = setInterval(rotate, snap.screen.rotate_s * 1000);
})();
