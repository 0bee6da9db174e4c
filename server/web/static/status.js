// Linli live status page: loads /api/overview once, then applies updates from /api/stream (SSE).
// Chinese by default; ?lang=en or the switch (remembered in localStorage) shows English.
// Every /api/ call carries a bearer token: opened as /#token=..., the page keeps it for the
// browser tab (sessionStorage) and drops it from the address bar; without one it asks for it.
// EventSource cannot send headers, so the stream is read with fetch.
"use strict";

const I18N = {
  zh: {
    title: "邻里 · 社区安全实时状态", other: "English",
    communities: (n) => `${n} 个小区`, devices: (live, n) => `设备 ${live}/${n} 在线`,
    alarms: (n) => (n ? `${n} 项告警` : "无告警"), connOn: "实时连接", connOff: "连接中断",
    gwOnline: "网关在线", gwOffline: "网关离线", gwUnknown: "网关未上报",
    elevator: "电梯", fire_lane: "消防通道", gate: "门禁", fire_panel: "消防报警",
    floor: (f) => `${f} 层`, up: "上行", down: "下行", none: "停",
    door: { closed: "门关", open: "门开", opening: "开门中", closing: "关门中" },
    occupied: "有人", empty: "无人",
    mode: { normal: "正常", out_of_service: "停用", inspection: "检修", fire_return: "消防返回",
            firefighter: "消防员", emergency_power: "应急电源", earthquake: "地震", unknown: "未知" },
    laneBusy: "占用", laneFree: "畅通", dwell: (s) => `已停 ${s} 秒`,
    obj: { vehicle: "车辆", ebike: "电动车", goods: "杂物", unknown: "不明物" },
    gateOpen: "开", gateClosed: "关", passages: (n) => `通行 ${n} 次`,
    gateMode: { normal: "正常", held_open: "常开", locked_down: "封闭", fire_release: "消防释放" },
    noData: "暂无数据",
    events: { trapped: "困人", forced_open: "强行开门", held_open: "门长开", obstruction: "通道堵塞",
              fire_alarm: "火警", fire_release: "消防释放", power_failure: "停电" },
    fault: "故障", updated: (t) => `更新于 ${t}`,
    tokenAsk: "请输入访问令牌", tokenGo: "进入", tokenBad: (m) => `令牌无效：${m}`,
    footer: "数据来自各小区网关的实时上报；红色为告警，黄色为需关注。",
  },
  en: {
    title: "Linli · Live community safety", other: "中文",
    communities: (n) => `${n} communities`, devices: (live, n) => `${live}/${n} devices reporting`,
    alarms: (n) => (n ? `${n} alarms` : "no alarms"), connOn: "live", connOff: "disconnected",
    gwOnline: "gateway online", gwOffline: "gateway offline", gwUnknown: "gateway not seen",
    elevator: "Elevator", fire_lane: "Fire lane", gate: "Gate", fire_panel: "Fire alarm",
    floor: (f) => `floor ${f}`, up: "up", down: "down", none: "stopped",
    door: { closed: "doors closed", open: "doors open", opening: "opening", closing: "closing" },
    occupied: "occupied", empty: "empty",
    mode: { normal: "normal", out_of_service: "out of service", inspection: "inspection",
            fire_return: "fire return", firefighter: "firefighter", emergency_power: "emergency power",
            earthquake: "earthquake", unknown: "unknown" },
    laneBusy: "occupied", laneFree: "clear", dwell: (s) => `for ${s} s`,
    obj: { vehicle: "vehicle", ebike: "e-bike", goods: "goods", unknown: "object" },
    gateOpen: "open", gateClosed: "closed", passages: (n) => `${n} passage${n === 1 ? "" : "s"}`,
    gateMode: { normal: "normal", held_open: "held open", locked_down: "locked down",
                fire_release: "fire release" },
    noData: "no data yet",
    events: { trapped: "TRAPPED", forced_open: "forced open", held_open: "held open",
              obstruction: "obstructed", fire_alarm: "fire alarm", fire_release: "fire release",
              power_failure: "power failure" },
    fault: "fault", updated: (t) => `updated ${t}`,
    tokenAsk: "Enter your access token", tokenGo: "Open", tokenBad: (m) => `Token refused: ${m}`,
    footer: "Live reports from each community's gateway; red is an alarm, amber needs attention.",
  },
};

// Events that make a tile red (alarm) while active; any other active event makes it amber.
const ALARM_EVENTS = new Set(["trapped", "obstruction", "forced_open", "fire_alarm",
  "safety_circuit_open", "unintended_movement", "stopped_outside_door_zone", "overspeed"]);
const RECENT_INSTANT_MS = 60_000;

const params = new URLSearchParams(location.search);
let lang = params.get("lang") || localStorage.getItem("linli.lang") || "zh";
if (!(lang in I18N)) lang = "zh";

const model = { communities: [], devices: new Map(), gateways: new Map(), connected: false };

function t() { return I18N[lang]; }
function key(community, dev) { return `${community}/${dev}`; }

function describe(device) {
  const s = device.state, L = t();
  if (!s) return { cls: "nodata", main: L.noData, sub: "", badge: "" };
  const f = s.fields || {};
  const active = s.active || [];
  let badge = active.map((e) => L.events[e] || `${L.fault}: ${e}`).join(" · ");
  const last = s.last_event;
  if (last && last.state === "instant" && Date.now() - last.t < RECENT_INSTANT_MS) {
    badge = [badge, L.events[last.event] || last.event].filter(Boolean).join(" · ");
    if (ALARM_EVENTS.has(last.event)) active.push(last.event);
  }
  let cls = "ok";
  if (active.some((e) => ALARM_EVENTS.has(e))) cls = "alarm";
  else if (active.length) cls = "warn";
  let main = "", sub = "";
  if (device.kind === "elevator") {
    const arrow = f.direction === "up" ? "↑" : f.direction === "down" ? "↓" : "";
    main = `${f.floor ?? "?"}${arrow}`;
    sub = [L.door[f.door] || "", f.occupied ? L.occupied : L.empty,
           f.service_mode && f.service_mode !== "normal" ? L.mode[f.service_mode] : ""]
      .filter(Boolean).join(" · ");
    if (f.service_mode && f.service_mode !== "normal" && cls === "ok") cls = "warn";
  } else if (device.kind === "fire_lane") {
    main = f.occupied ? L.laneBusy : L.laneFree;
    sub = f.occupied ? `${L.obj[f.object] || ""} ${L.dwell(f.dwell_s ?? 0)}` : "";
    if (f.occupied && cls === "ok") cls = "warn";
  } else if (device.kind === "gate") {
    main = f.open ? L.gateOpen : L.gateClosed;
    sub = [L.passages(f.passages ?? 0), f.mode && f.mode !== "normal" ? L.gateMode[f.mode] : ""]
      .filter(Boolean).join(" · ");
  } else {
    main = f.alarm ? L.events.fire_alarm : "—";
  }
  return { cls, main, sub, badge };
}

function deviceName(d) { return lang === "en" && d.name_en ? d.name_en : d.name; }

function renderTile(el, device) {
  const d = describe(device);
  el.className = `tile ${d.cls}`;
  el.dataset.kind = device.kind;
  el.querySelector(".name").textContent = deviceName(device);
  el.title = `${t()[device.kind] || device.kind} · ${deviceName(device)}`;
  el.querySelector(".main").textContent = d.main;
  el.querySelector(".sub").textContent = d.sub;
  el.querySelector(".badge").textContent = d.badge;
}

function gatewayLabel(communityId) {
  const L = t();
  const gws = [...model.gateways.values()].filter((g) => g.community === communityId);
  if (!gws.length) return ["unknown", L.gwUnknown];
  const off = gws.some((g) => g.status === "offline");
  return off ? ["offline", L.gwOffline] : ["online", L.gwOnline];
}

function renderCommunityHeader(section, c) {
  const [cls, label] = gatewayLabel(c.id);
  section.querySelector(".cname").textContent = lang === "en" && c.name_en ? c.name_en : c.name;
  const gw = section.querySelector(".gw");
  gw.className = `gw ${cls}`;
  gw.textContent = label;
  section.querySelector(".committee").textContent =
    lang === "en" && c.committee_en ? c.committee_en : c.committee;
  const alarm = c.devices.some((d) => describe(model.devices.get(key(c.id, d.id))).cls === "alarm");
  section.classList.toggle("has-alarm", alarm);
}

function renderAll() {
  const L = t();
  document.documentElement.lang = lang === "en" ? "en" : "zh-CN";
  document.title = L.title;
  document.getElementById("title").textContent = L.title;
  document.getElementById("lang").textContent = L.other;
  document.getElementById("footer").textContent = L.footer;
  const main = document.getElementById("communities");
  main.replaceChildren();
  for (const c of model.communities) {
    const section = document.createElement("section");
    section.className = "community";
    section.dataset.community = c.id;
    section.innerHTML = '<h2><span class="cname"></span><span class="gw"></span></h2>' +
      '<div class="committee"></div><div class="tiles"></div>';
    const tiles = section.querySelector(".tiles");
    for (const d of c.devices) {
      const el = document.createElement("div");
      el.dataset.dev = key(c.id, d.id);
      el.innerHTML = '<div class="name"></div><div class="main"></div><div class="sub"></div>' +
        '<div class="badge"></div>';
      renderTile(el, model.devices.get(key(c.id, d.id)));
      tiles.appendChild(el);
    }
    renderCommunityHeader(section, c);
    main.appendChild(section);
  }
  renderSummary();
}

function renderSummary() {
  const L = t();
  let reporting = 0, alarms = 0;
  for (const d of model.devices.values()) {
    if (d.state) reporting += 1;
    if (describe(d).cls === "alarm") alarms += 1;
  }
  document.getElementById("sum-communities").textContent = L.communities(model.communities.length);
  document.getElementById("sum-devices").textContent = L.devices(reporting, model.devices.size);
  const al = document.getElementById("sum-alarms");
  al.textContent = L.alarms(alarms);
  al.classList.toggle("active", alarms > 0);
  const conn = document.getElementById("conn");
  conn.className = `conn ${model.connected ? "on" : "off"}`;
  conn.textContent = model.connected ? L.connOn : L.connOff;
}

function applyUpdates(updates) {
  const touched = new Set();
  for (const u of updates) {
    if (u.type === "device") {
      const k = key(u.community, u.dev);
      const device = model.devices.get(k);
      if (!device) continue;  // not in the registry this page loaded
      device.state = u;
      const el = document.querySelector(`[data-dev="${CSS.escape(k)}"]`);
      if (el) { renderTile(el, device); el.classList.add("flash"); setTimeout(() => el.classList.remove("flash"), 300); }
      touched.add(u.community);
    } else if (u.type === "gateway") {
      model.gateways.set(key(u.community, u.gateway), u);
      touched.add(u.community);
    }
  }
  for (const c of model.communities) {
    if (!touched.has(c.id)) continue;
    const section = document.querySelector(`section[data-community="${CSS.escape(c.id)}"]`);
    if (section) renderCommunityHeader(section, c);
  }
  renderSummary();
}

// --- the token ---------------------------------------------------------------------------
const TOKEN_KEY = "linli.token";
(function takeTokenFromAddress() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!m) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
  history.replaceState(null, "", location.pathname + location.search);
})();
function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function authHeaders() { return { Authorization: `Bearer ${token()}` }; }

class Unauthorized extends Error {}

function askForToken(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  const main = document.getElementById("communities");
  main.replaceChildren();
  const form = document.createElement("form");
  form.id = "token-form";
  const label = document.createElement("label");
  label.textContent = message ? t().tokenBad(message) : t().tokenAsk;
  const input = document.createElement("input");
  input.type = "password"; input.name = "token"; input.autocomplete = "off";
  const button = document.createElement("button");
  button.type = "submit"; button.textContent = t().tokenGo;
  label.append(input);
  form.append(label, button);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    location.reload();
  });
  main.append(form);
}

async function apiJson(path) {
  const res = await fetch(path, { headers: authHeaders() });
  const body = await res.json().catch(() => ({}));
  if (res.status === 401) throw new Unauthorized(body.error || res.statusText);
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

async function load() {
  const body = await apiJson("/api/overview");
  model.communities = body.communities;
  model.devices.clear();
  for (const c of body.communities) {
    for (const d of c.devices) model.devices.set(key(c.id, d.id), { ...d, state: d.state });
  }
  model.gateways.clear();
  for (const g of body.gateways) model.gateways.set(key(g.community, g.gateway), g);
  renderAll();
}

// The overview is loaded once the stream is open (the server subscribes it before answering),
// so no update can fall between the two; updates that arrive meanwhile wait in `early`.
// The same happens after a reconnect (server restart, network blip), when changes may have
// been missed: `resync` reloads the whole state and then applies what was buffered.
let early = [];
let everConnected = false;

function resync() {
  early = early || [];
  return load()
    .catch((err) => {
      if (err instanceof Unauthorized) { askForToken(err.message); return; }
      document.getElementById("footer").textContent = `/api/overview: ${err}`;
    })
    .finally(() => { const pending = early; early = null; applyUpdates(pending); });
}

const RETRY_MS = 2000;

function onOpen() {
  model.connected = true;
  if (!everConnected || !early) resync();
  everConnected = true;
  if (!early) renderSummary();
}

function onUpdates(updates) {
  if (early) early.push(...updates); else applyUpdates(updates);
}

function lost() {
  model.connected = false;
  if (!early) renderSummary();
  setTimeout(connect, RETRY_MS);
}

// Server-sent events over fetch: "data:" lines up to a blank line make one message; an
// "event: revoked" message (the token stopped working) ends it for good.
async function connect() {
  if (!token()) { askForToken(""); return; }
  let res;
  try {
    res = await fetch("/api/stream", { headers: { ...authHeaders(), Accept: "text/event-stream" } });
  } catch (_err) { lost(); return; }
  if (res.status === 401) {
    const body = await res.json().catch(() => ({}));
    askForToken(body.error || res.statusText);
    return;
  }
  if (!res.ok || !res.body) { lost(); return; }
  onOpen();
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const lines = block.split("\n");
        if (lines.includes("event: revoked")) { askForToken("revoked"); return; }
        const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim());
        if (data.length) onUpdates(JSON.parse(data.join("\n")));
      }
    }
  } catch (_err) { /* the connection broke: reconnect below */ }
  lost();
}

document.getElementById("lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("linli.lang", lang);
  renderAll();
});

// Instant events (a forced gate) fade from red after a minute without any new message.
setInterval(() => { if (model.communities.length) renderAll(); }, 30_000);

connect();
