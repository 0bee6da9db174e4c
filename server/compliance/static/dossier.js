// Linli spot-check dossier (检查档案, "四不两直"): one community on a phone, for an inspector
// on site. Reads /api/compliance/dossier/{community} with the bearer token given as
// /dossier/{community}#token=... (kept for the tab in sessionStorage, dropped from the address
// bar), and records findings (item of the city table, points, note, photo) through
// /api/compliance/findings. Chinese by default; the switch (remembered) shows English.
"use strict";

const T = {
  zh: { title: "检查档案", devices: "设备", alerts: "近30天告警", maint: "维保与检验",
        scores: "企业考核", findings: "现场检查记录", record: "记录检查发现", item: "检查项目",
        points: "扣分", note: "说明", photo: "照片", save: "提交", saved: "已记录",
        company: "物业企业", none: "无（社区代管）", lastMaint: "最近维保", nextInsp: "下次检验",
        overdue: "超期", noneYet: "暂无", tokenAsk: "请输入访问令牌", go: "进入",
        state: { open: "未处理", acknowledged: "已响应", on_site: "已到场", resolved: "已解除",
                 closed: "已关闭", false_alarm: "误报" },
        kind: { elevator: "电梯", fire_lane: "消防通道", gate: "门禁", fire_panel: "消防报警" },
        other: "English" },
  en: { title: "Spot-check dossier", devices: "Devices", alerts: "Alerts, last 30 days",
        maint: "Maintenance and inspection", scores: "Company scores", findings: "Findings",
        record: "Record a finding", item: "Item", points: "Points off", note: "Note",
        photo: "Photo", save: "Submit", saved: "Recorded", company: "Company",
        none: "none (committee)", lastMaint: "last maintained", nextInsp: "next inspection",
        overdue: "overdue", noneYet: "none", tokenAsk: "Enter your access token", go: "Open",
        state: { open: "open", acknowledged: "acknowledged", on_site: "on site",
                 resolved: "resolved", closed: "closed", false_alarm: "false alarm" },
        kind: { elevator: "Elevator", fire_lane: "Fire lane", gate: "Gate", fire_panel: "Fire panel" },
        other: "中文" },
};
const TOKEN_KEY = "linli.token";
let lang = localStorage.getItem("linli.lang") || "zh";
const community = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const m = location.hash.match(/token=([^&]+)/);
if (m) {
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
  history.replaceState(null, "", location.pathname + location.search);
}
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
};
const when = (t) => new Date(t).toLocaleString(lang === "zh" ? "zh-CN" : "en-GB",
  { timeZone: "Asia/Shanghai", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });

function askToken(message) {
  const main = document.getElementById("main");
  const input = el("input", { type: "password", id: "token" });
  const go = el("button", { class: "primary", type: "button" }, T[lang].go);
  go.onclick = () => { sessionStorage.setItem(TOKEN_KEY, input.value.trim()); load(); };
  main.replaceChildren(el("section", {}, el("label", { for: "token" }, T[lang].tokenAsk), input,
    go, el("p", { class: "muted" }, message || "")));
}

async function load() {
  const t = T[lang];
  document.getElementById("lang").textContent = t.other;
  document.getElementById("title").textContent = t.title;
  if (!token()) return askToken("");
  const resp = await fetch(`/api/compliance/dossier/${encodeURIComponent(community)}`,
    { headers: { Authorization: `Bearer ${token()}` } });
  const body = await resp.json();
  if (!resp.ok) return askToken(body.error);
  render(body);
}

function render(d) {
  const t = T[lang];
  document.title = `${d.community.name} · ${t.title}`;
  document.getElementById("title").textContent = d.community.name;
  document.getElementById("sub").textContent =
    `${t.company}: ${d.company ? d.company.name : t.none} · ${d.street_office || ""}`;
  const devices = el("ul", { id: "devices" });
  for (const v of d.devices) {
    const s = v.state || {};
    const active = s.active || [];
    const tag = active.length ? el("span", { class: "tag bad" }, active.join(" ")) :
      el("span", { class: "tag ok" }, "OK");
    devices.append(el("li", {}, `${t.kind[v.kind] || v.kind} ${v.name}`, tag));
  }
  const alerts = el("ul", { id: "alerts" });
  for (const a of d.alerts) {
    const steps = a.timeline.map((s) => `${when(s.t)} ${t.state[s.to] || s.to} ${s.by}`).join(" → ");
    const cls = ["open", "acknowledged", "on_site"].includes(a.state) ? "tag bad" : "tag ok";
    alerts.append(el("li", {}, `${a.rule} · ${a.device}`, el("span", { class: cls },
      t.state[a.state] || a.state), el("div", { class: "muted" }, steps)));
  }
  if (!d.alerts.length) alerts.append(el("li", { class: "muted" }, t.noneYet));
  const maint = el("ul", {});
  for (const v of d.devices.filter((x) => x.kind === "elevator")) {
    const over = v.inspection_overdue ? el("span", { class: "tag bad" }, t.overdue) : "";
    maint.append(el("li", {}, v.name, el("div", { class: "muted" },
      `${t.lastMaint} ${v.last_maintained || "—"} · ${t.nextInsp} ${v.next_inspection || "—"}`), over));
  }
  const scores = el("ul", { id: "scores" });
  for (const s of d.scores) scores.append(el("li", {}, `${s.period} ${s.score} ${s.grade}`,
    el("span", { class: "muted" }, ` #${s.rank} · ${s.state}`)));
  if (!d.scores.length) scores.append(el("li", { class: "muted" }, t.noneYet));
  const findings = el("ul", { id: "findings" });
  for (const f of d.findings) findings.append(el("li", {}, `${f.day} ${f.item} −${f.points}`,
    el("div", { class: "muted" }, `${f.note} · ${f.by}`)));
  const item = el("select", { id: "item", name: "item" });
  for (const i of d.items) item.append(el("option", { value: i.id }, `${i.name} (≤${i.max})`));
  const form = el("form", { id: "finding" },
    el("label", { for: "item" }, t.item), item,
    el("label", { for: "points" }, t.points),
    el("input", { id: "points", name: "points", type: "number", step: "0.5", min: "0.5", required: "" }),
    el("label", { for: "note" }, t.note), el("textarea", { id: "note", name: "note", rows: "3" }),
    el("label", { for: "photo" }, t.photo),
    el("input", { id: "photo", name: "photo", type: "file", accept: "image/*", capture: "environment" }),
    el("button", { class: "primary", type: "submit" }, t.save), el("p", { id: "message" }));
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    data.append("community", community);
    if (!form.photo.files.length) data.delete("photo");
    const resp = await fetch("/api/compliance/findings",
      { method: "POST", body: data, headers: { Authorization: `Bearer ${token()}` } });
    const body = await resp.json();
    document.getElementById("message").textContent = resp.ok ? t.saved : body.error;
    if (resp.ok) load();
  };
  document.getElementById("main").replaceChildren(
    el("section", {}, el("h2", {}, t.devices), devices),
    el("section", {}, el("h2", {}, t.alerts), alerts),
    el("section", {}, el("h2", {}, t.maint), maint),
    el("section", {}, el("h2", {}, t.scores), scores),
    el("section", {}, el("h2", {}, t.findings), findings),
    el("section", {}, el("h2", {}, t.record), form));
}

document.getElementById("lang").onclick = () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("linli.lang", lang);
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  load();
};
load();
