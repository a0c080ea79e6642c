// The Sluice dashboard: a page of the server's own, using only the public
// API with the token the user signs in with (kept in this tab's session
// storage). Views: jobs, a job, modules, quota.
"use strict";

const state = { token: sessionStorage.getItem("sluice-token"), tenant: sessionStorage.getItem("sluice-tenant"), timer: null, history: {} };
const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${state.token}` } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let data;
  try { data = JSON.parse(text); } catch { data = text; }
  if (!r.ok) throw new Error(data && data.detail ? data.detail : `HTTP ${r.status}`);
  return data;
}
const t = (path) => `/v1/tenants/${encodeURIComponent(state.tenant)}${path}`;

function fmt(n) {
  if (n === null || n === undefined) return "–";
  if (n >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return String(Math.round(n * 10) / 10);
}
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${Math.round(n * 10) / 10} ${units[i]}`;
}
function age(ms) {
  if (!ms) return "–";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  return s < 60 ? `${s.toFixed(1)} s` : s < 3600 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`;
}
const badge = (s) => `<span class="badge ${esc(s)}">${esc(s)}</span>`;

// Records per second from successive samples of a job's counter.
function sample(id, records) {
  const h = (state.history[id] ||= { points: [], last: null });
  const now = Date.now();
  if (h.last && now > h.last.at) {
    const rate = Math.max(0, (records - h.last.records) / ((now - h.last.at) / 1000));
    h.points.push(rate);
    if (h.points.length > 120) h.points.shift();
  }
  h.last = { at: now, records };
  return h.points.length ? h.points[h.points.length - 1] : 0;
}

function chart(canvas, points, color) {
  const ctx = canvas.getContext("2d");
  const w = (canvas.width = canvas.clientWidth * devicePixelRatio);
  const h = (canvas.height = canvas.clientHeight * devicePixelRatio);
  ctx.clearRect(0, 0, w, h);
  if (points.length < 2) return;
  const max = Math.max(1, ...points) * 1.15;
  ctx.beginPath();
  points.forEach((p, i) => {
    const x = (i / (points.length - 1)) * w;
    const y = h - (p / max) * h;
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.strokeStyle = color;
  ctx.lineWidth = 2 * devicePixelRatio;
  ctx.stroke();
  ctx.lineTo(w, h);
  ctx.lineTo(0, h);
  ctx.closePath();
  ctx.fillStyle = color + "22";
  ctx.fill();
}

function every(ms, f) {
  clearInterval(state.timer);
  f();
  state.timer = setInterval(f, ms);
}

async function jobsView() {
  $("#view").innerHTML = `<div class="card"><div class="row"><h1>Jobs</h1><span class="spacer"></span><span class="muted" id="jobs-count"></span></div>
    <table><thead><tr><th>Name</th><th>State</th><th class="num">Records/s</th><th>Throughput</th><th class="num">Records in</th><th class="num">Lines out</th><th class="num">Restarts</th><th class="num">Checkpoint age</th></tr></thead>
    <tbody id="jobs"></tbody></table></div>`;
  every(1000, async () => {
    const page = await api("GET", t("/jobs?limit=100"));
    $("#jobs-count").textContent = `${page.jobs.length} job(s)`;
    const rows = page.jobs.map((j) => {
      const m = j.metrics || {};
      const rate = sample(j.id, m.records_in || 0);
      return `<tr class="link" data-job="${esc(j.id)}"><td><b>${esc(j.name)}</b><div class="muted mono">${esc(j.id)}</div></td><td>${badge(j.state)}</td>
        <td class="num">${fmt(rate)}</td><td><canvas class="spark" data-spark="${esc(j.id)}"></canvas></td>
        <td class="num">${fmt(m.records_in)}</td><td class="num">${fmt(m.lines_out)}</td><td class="num">${fmt(m.restarts)}</td>
        <td class="num">${age(m.last_checkpoint && m.last_checkpoint.created_at_ms)}</td></tr>`;
    });
    $("#jobs").innerHTML = rows.join("") || `<tr><td colspan="8" class="muted">No jobs yet: submit one with <span class="mono">host submit</span>.</td></tr>`;
    document.querySelectorAll("tr[data-job]").forEach((tr) => (tr.onclick = () => (location.hash = `#/jobs/${tr.dataset.job}`)));
    document.querySelectorAll("canvas[data-spark]").forEach((c) => chart(c, (state.history[c.dataset.spark] || { points: [] }).points, "#2f6fde"));
  });
}

function stat(id, label) {
  return `<div class="stat"><div class="label">${label}</div><div class="value" id="${id}">–</div></div>`;
}

async function operate(job, op) {
  const status = $("#op-status");
  status.textContent = `${op}…`;
  try {
    let o = await api("POST", t(`/jobs/${job}/${op}`));
    while (o.status === "running") {
      await new Promise((r) => setTimeout(r, 250));
      o = await api("GET", t(`/operations/${o.id}`));
    }
    status.textContent = o.status === "succeeded" ? `${op} done (savepoint ${o.savepoint})` : `${op} failed: ${o.error}`;
  } catch (e) {
    status.textContent = `${op}: ${e.message}`;
  }
}

async function jobView(id) {
  $("#view").innerHTML = `<div class="card"><div class="row"><h1 id="job-name">Job</h1><span id="job-state"></span><span class="spacer"></span>
      <button id="savepoint-button" class="secondary">Savepoint</button><button id="stop-button">Stop with savepoint</button>
      <button id="start-button" class="secondary">Start</button><button id="cancel-button" class="danger">Cancel</button></div>
      <p class="muted mono" id="job-id">${esc(id)}</p><p class="muted" id="op-status"></p>
      <div class="grid">${stat("records-in", "Records in")}${stat("lines-out", "Lines out")}${stat("rate", "Records/s")}${stat("restarts", "Restarts")}${stat("failures", "Failures")}${stat("ckpt-age", "Checkpoint age")}</div></div>
    <div class="card"><h2>Throughput (records/s)</h2><canvas id="rate-chart"></canvas></div>
    <div class="two"><div class="card"><h2>Checkpoints</h2><table><thead><tr><th>Id</th><th class="num">Keys</th><th class="num">Records</th><th>Taken</th></tr></thead><tbody id="checkpoints"></tbody></table>
      <h2 class="gap">Savepoints</h2><table><tbody id="savepoints"></tbody></table></div>
      <div class="card"><h2>Output</h2><pre class="tail" id="output"></pre></div></div>
    <div class="two"><div class="card"><h2>Exceptions</h2><table><thead><tr><th>Record</th><th>Input</th><th>Message</th></tr></thead><tbody id="exceptions"></tbody></table></div>
      <div class="card"><h2>Events</h2><table><tbody id="events"></tbody></table></div></div>`;
  $("#stop-button").onclick = () => operate(id, "stop");
  $("#savepoint-button").onclick = () => operate(id, "savepoint");
  $("#cancel-button").onclick = () => api("POST", t(`/jobs/${id}/cancel`)).catch((e) => ($("#op-status").textContent = e.message));
  $("#start-button").onclick = () => api("POST", t(`/jobs/${id}/start`), {}).catch((e) => ($("#op-status").textContent = e.message));
  let round = 0;
  every(1000, async () => {
    const j = await api("GET", t(`/jobs/${id}`));
    const m = j.metrics || {};
    $("#job-name").textContent = j.name;
    $("#job-state").innerHTML = badge(j.state);
    $("#records-in").textContent = fmt(m.records_in);
    $("#lines-out").textContent = fmt(m.lines_out);
    $("#rate").textContent = fmt(sample(id, m.records_in || 0));
    $("#restarts").textContent = fmt(m.restarts);
    $("#failures").textContent = fmt(m.failures);
    $("#ckpt-age").textContent = age(m.last_checkpoint && m.last_checkpoint.created_at_ms);
    const running = !["STOPPED", "CANCELED", "FINISHED", "FAILED"].includes(j.state);
    $("#stop-button").disabled = $("#savepoint-button").disabled = $("#cancel-button").disabled = !running;
    $("#start-button").disabled = running;
    chart($("#rate-chart"), state.history[id].points, "#1f9d63");
    if (round++ % 3) return;
    const [ckpts, sps, exc, out, ev] = await Promise.all([
      api("GET", t(`/jobs/${id}/checkpoints`)), api("GET", t(`/jobs/${id}/savepoints`)), api("GET", t(`/jobs/${id}/exceptions?lines=20`)),
      api("GET", t(`/jobs/${id}/output?lines=50`)), api("GET", t(`/jobs/${id}/events`)),
    ]);
    $("#checkpoints").innerHTML = ckpts.map((c) => `<tr><td>chk-${c.id}</td><td class="num">${fmt(c.keys)}</td><td class="num">${fmt(c.records)}</td><td>${age(c["created-ms"])} ago</td></tr>`).join("") || `<tr><td class="muted">none retained</td></tr>`;
    $("#savepoints").innerHTML = sps.map((s) => `<tr><td class="mono">${esc(s.id)}</td><td>chk-${s.checkpoint}</td><td>${age(s["created-ms"])} ago</td></tr>`).join("") || `<tr><td class="muted">none</td></tr>`;
    $("#exceptions").innerHTML = exc.map((e) => `<tr><td>${esc(e.record)}</td><td class="mono">${esc(e.input)}</td><td>${esc(e.message)}</td></tr>`).join("") || `<tr><td colspan="3" class="muted">none</td></tr>`;
    $("#output").textContent = out.join("\n") || "(no printed output)";
    $("#events").innerHTML = ev.slice(-12).reverse().map((e) => `<tr><td class="muted">${new Date(e["time-ms"]).toLocaleTimeString()}</td><td>${e.state ? badge(e.state) : esc(e.kind)}</td><td>${esc(e.message)}</td></tr>`).join("");
  });
}

async function modulesView() {
  clearInterval(state.timer);
  const list = await api("GET", t("/modules"));
  $("#view").innerHTML = `<div class="card"><h1>Modules</h1><table><thead><tr><th>Digest</th><th class="num">Size</th><th>WIT</th><th>Needs</th><th class="num">Compile</th></tr></thead><tbody>
    ${list.map((m) => `<tr><td class="mono">${esc(m.digest.slice(0, 16))}…</td><td class="num">${bytes(m.size)}</td><td>${esc(m.wit)}</td><td>${esc(m.needs.join(", ") || "no grants")}</td><td class="num">${m["compile-ms"]} ms</td></tr>`).join("") || `<tr><td colspan="5" class="muted">No modules: push one with <span class="mono">host push</span>.</td></tr>`}
    </tbody></table></div>`;
}

async function quotaView() {
  const names = { "running-jobs": "Running jobs", parallelism: "Guest instances", memory: "Guest memory", "state-memory": "Keyed state", storage: "Storage", modules: "Modules" };
  const sized = ["memory", "state-memory", "storage"];
  $("#view").innerHTML = `<div class="card"><h1>Quota</h1><table><tbody id="quota"></tbody></table></div><div class="card"><h2>CPU</h2><div class="grid">${stat("cpu-share", "Share (cores)")}${stat("cpu-used", "CPU used")}${stat("cpu-throttled", "Time throttled")}</div></div>`;
  every(2000, async () => {
    const q = await api("GET", t("/quota"));
    $("#quota").innerHTML = Object.entries(names).map(([k, label]) => {
      const limit = q.quota[k], use = q.usage[k] || 0, pct = Math.min(100, limit ? (100 * use) / limit : 0);
      const show = (v) => (sized.includes(k) ? bytes(v) : fmt(v));
      return `<tr><td class="label-cell">${label}</td><td><div class="bar ${pct >= 100 ? "full" : pct > 80 ? "high" : ""}"><div data-pct="${pct}"></div></div></td><td class="num use-cell">${show(use)} / ${show(limit)}</td></tr>`;
    }).join("");
    // Inline styles are not allowed by the page's policy: widths are set here.
    document.querySelectorAll("[data-pct]").forEach((d) => (d.style.width = `${d.dataset.pct}%`));
    $("#cpu-share").textContent = q.quota.cpu;
    $("#cpu-used").textContent = `${fmt(q.usage["cpu-seconds"])} s`;
    $("#cpu-throttled").textContent = `${fmt(q.usage["cpu-throttled-seconds"])} s`;
  });
}

async function route() {
  if (!state.token || !state.tenant) {
    clearInterval(state.timer);
    $("#signin").hidden = false;
    $("#nav").hidden = true;
    $("#view").innerHTML = "";
    $("#who").textContent = "";
    return;
  }
  $("#signin").hidden = true;
  $("#nav").hidden = false;
  $("#who").innerHTML = `tenant <b>${esc(state.tenant)}</b> <button class="secondary" id="signout">Sign out</button>`;
  $("#signout").onclick = () => { sessionStorage.clear(); state.token = state.tenant = null; route(); };
  const [, view, id] = (location.hash || "#/jobs").split("/");
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  try {
    if (view === "jobs" && id) await jobView(decodeURIComponent(id));
    else if (view === "modules") await modulesView();
    else if (view === "quota") await quotaView();
    else await jobsView();
  } catch (e) {
    $("#view").innerHTML = `<div class="card error">${esc(e.message)}</div>`;
  }
}

$("#signin-form").onsubmit = async (ev) => {
  ev.preventDefault();
  state.token = $("#token").value.trim();
  try {
    const me = await api("GET", "/v1/whoami");
    state.tenant = $("#tenant").value.trim() || me.tenant;
    if (!state.tenant) throw new Error("the admin's token needs a tenant name");
    sessionStorage.setItem("sluice-token", state.token);
    sessionStorage.setItem("sluice-tenant", state.tenant);
    $("#signin-error").textContent = "";
    location.hash = "#/jobs";
    route();
  } catch (e) {
    state.token = null;
    $("#signin-error").textContent = e.message;
  }
};
window.addEventListener("hashchange", route);
route();
