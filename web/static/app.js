// paas dashboard: live state and actions. Plain JavaScript, no build step. Every change goes
// through the /v1 API with the session cookie and the page's CSRF token.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

function toast(msg) {
  const t = document.getElementById("toast");
  if (!t) return;
  t.textContent = msg;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ""; }, 6000);
}

// The app page's space (`ORG/SPACE`): app names are unique per space, so its calls name it.
const pageSpace = () => document.getElementById("app")?.dataset.space || "";

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf() } };
  if (pageSpace()) opts.headers["X-Paas-Space"] = pageSpace();
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  if (!res.ok) {
    let msg = res.status + " " + res.statusText;
    try { const e = await res.json(); msg = e.message + " (" + e.code + ")"; } catch (_) {}
    throw new Error(msg);
  }
  return res.status === 204 ? null : res.json();
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function ago(iso) {
  if (!iso) return "-";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}

// Deploy by upload, with progress.
function setupDeploy() {
  const form = document.getElementById("deploy");
  if (!form) return;
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = form.elements.name.value.trim();
    const file = form.elements.archive.files[0];
    const status = document.getElementById("deploy-status");
    const bar = document.getElementById("deploy-progress");
    const data = new FormData();
    data.append("archive", file, file.name);
    if (form.elements.instances.value) data.append("instances", form.elements.instances.value);
    if (form.elements.memory.value) data.append("memory", form.elements.memory.value);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/apps/" + encodeURIComponent(name) + "/push");
    xhr.setRequestHeader("X-CSRF-Token", csrf());
    bar.hidden = false;
    bar.value = 0;
    status.textContent = "Uploading " + file.name + " …";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = Math.round(100 * e.loaded / e.total); };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        bar.value = 100;
        status.textContent = "Deployed; starting instances …";
        location.href = "/apps/" + encodeURIComponent(name);
      } else {
        let msg = "Upload failed (" + xhr.status + ")";
        try { const e = JSON.parse(xhr.responseText); msg = e.message + " (" + e.code + ")"; } catch (_) {}
        status.textContent = msg;
        bar.hidden = true;
      }
    };
    xhr.onerror = () => { status.textContent = "Upload failed: the controller could not be reached."; bar.hidden = true; };
    xhr.send(data);
  });
}

// A small inline SVG line of the last samples (0..max), for CPU and memory.
function spark(values, max, label) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", "60");
  svg.setAttribute("height", "16");
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const top = Math.max(max, ...values);
  const pts = values.map((v, i) => (values.length < 2 ? 0 : (i * 60) / (values.length - 1)).toFixed(1) + "," + (15 - (v / top) * 14).toFixed(1));
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.append(line);
  return svg;
}
const history = {};

// App page: instances and logs refresh without reloading.
function setupApp() {
  const root = document.getElementById("app");
  if (!root) return;
  const name = root.dataset.app;
  const base = "/v1/apps/" + encodeURIComponent(name);
  const tbody = document.querySelector("#instances tbody");
  const logs = document.getElementById("logs");
  const source = document.getElementById("log-source");

  // Charts: the server draws them; every 10 s (the metrics' resolution) the fragment is fetched
  // again and swapped in.
  const charts = document.getElementById("charts");
  async function refreshCharts() {
    if (!charts) return;
    try {
      const url = "/apps/" + encodeURIComponent(name) + "/charts?space=" +
        encodeURIComponent(pageSpace()) + "&window=" + encodeURIComponent(charts.dataset.window || "1h");
      const res = await fetch(url, { credentials: "same-origin" });
      if (res.ok) charts.innerHTML = await res.text();
    } catch (_) {}
  }
  if (charts) setInterval(refreshCharts, 10000);

  async function refreshApp() {
    try {
      const a = await api("GET", base);
      document.getElementById("app-state").textContent = a.state;
      document.getElementById("app-state").className = "state state-" + a.state;
      const runningOf = (t) => a.instances.filter((i) => (i.process_type || "web") === t && i.state === "running").length;
      document.getElementById("app-instances").textContent = runningOf("web") + "/" + a.desired_instances + " running";
      const procs = document.querySelector("#processes tbody");
      if (procs && a.processes) {
        const stopped = a.state === "stopped";
        procs.replaceChildren(...a.processes.map((p) => {
          const tr = el("tr");
          tr.dataset.process = p.type;
          const cmd = el("td");
          cmd.append(el("code", p.command));
          tr.append(el("td", p.type), cmd, el("td", runningOf(p.type) + "/" + (stopped ? 0 : p.instances) + " running"),
            el("td", p.memory_mb + "M"), el("td", p.health_check));
          return tr;
        }));
      }
      if (a.revision) document.getElementById("app-revision").textContent = a.revision.number;
      showDeployment(a);
      tbody.replaceChildren(...a.instances.map((i) => {
        const tr = el("tr");
        tr.append(el("td", i.process_type || "web"), el("td", i.index));
        const st = el("td");
        st.append(el("span", i.state, "state state-" + i.state));
        const key = (i.process_type || "web") + i.index + "@" + (i.node || "");
        const u = i.usage;
        const h = history[key] || (history[key] = { cpu: [], mem: [] });
        if (u) {
          h.cpu.push(u.cpu_percent);
          h.mem.push(u.memory_limit_bytes ? 100 * u.memory_bytes / u.memory_limit_bytes : 0);
          if (h.cpu.length > 30) { h.cpu.shift(); h.mem.shift(); }
        }
        const cpu = el("td", u ? u.cpu_percent.toFixed(1) + "% " : "-");
        const mem = el("td", u ? Math.round(u.memory_bytes / 1048576) + "M / " + Math.round(u.memory_limit_bytes / 1048576) + "M " : "-");
        if (u) { cpu.append(spark(h.cpu, 100, "CPU history")); mem.append(spark(h.mem, 100, "memory history")); }
        tr.append(st, el("td", i.node || "-"), el("td", i.address || "-"), cpu, mem, el("td", i.restarts),
          el("td", ago(i.since)), el("td", i.last_exit || i.placement_error || ""));
        return tr;
      }));
    } catch (e) {
      toast("Could not refresh: " + e.message);
    }
  }

  function applyFilter() {
    const want = source.value;
    for (const line of logs.children) {
      line.hidden = want !== "" && !line.dataset.source.startsWith(want);
    }
  }

  async function refreshLogs() {
    try {
      const list = await api("GET", base + "/logs?recent=true&limit=200");
      const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 8;
      logs.replaceChildren(...list.lines.map((l) => {
        const s = el("span", l.timestamp.substring(11, 23) + " [" + l.source + "] " + l.message + "\n", "log");
        s.dataset.source = l.source;
        return s;
      }));
      applyFilter();
      if (atBottom) logs.scrollTop = logs.scrollHeight;
    } catch (_) { /* the app refresh reports errors */ }
  }

  source.addEventListener("change", applyFilter);
  setupLogSearch(base, logs, applyFilter);
  logs.scrollTop = logs.scrollHeight;
  refreshApp();
  setInterval(refreshApp, 2000);
  followLogs(base, logs, applyFilter, refreshLogs);
  setupAppActions(name, base, refreshApp);
  setupTimeline(base);

  const del = document.getElementById("delete");
  if (del) {
    del.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (document.getElementById("delete-confirm").value !== name) {
        toast("Type the app's name to confirm.");
        return;
      }
      try {
        await api("DELETE", base);
        location.href = "/";
      } catch (e) {
        toast("Delete failed: " + e.message);
      }
    });
  }
}

// The current deployment: old instances (retiring, or of an earlier revision) against new ones
// (the current revision), each by state, and the step reached. A rolling restart keeps the
// revision, so "retiring" is what marks its old instances.
function showDeployment(a) {
  const step = document.getElementById("deploy-step");
  if (!step) return;
  const current = a.revision ? a.revision.number : null;
  const isOld = (i) => i.retiring || (current !== null && i.revision != null && i.revision !== current);
  const old = a.instances.filter(isOld);
  const fresh = a.instances.filter((i) => !isOld(i));
  const desired = a.state === "stopped" ? 0
    : (a.processes && a.processes.length ? a.processes.reduce((n, p) => n + p.instances, 0) : a.desired_instances);
  const byState = (list) => {
    const n = {};
    for (const i of list) n[i.state] = (n[i.state] || 0) + 1;
    return Object.entries(n).map(([k, v]) => v + " " + k).join(", ");
  };
  const show = (id, list) => {
    const dd = document.getElementById(id);
    dd.dataset.count = list.length;
    dd.textContent = list.length + (list.length ? " (" + byState(list) + ")" : "");
  };
  show("deploy-old", old);
  show("deploy-new", fresh);
  const running = fresh.filter((i) => i.state === "running").length;
  const bar = document.getElementById("deploy-bar");
  bar.max = Math.max(desired, 1);
  bar.value = Math.min(running, desired);
  const rev = current === null ? "-" : current;
  const crashed = fresh.filter((i) => i.state === "crashed").length;
  let text;
  if (old.length === 0 && running >= desired) {
    text = "Up to date: " + running + "/" + desired + " instance(s) run revision " + rev + ".";
    step.dataset.phase = "done";
  } else {
    text = "Deploying revision " + rev + ": step " + Math.min(running + 1, Math.max(desired, 1)) + " of " +
      Math.max(desired, 1) + " (" + running + " new running, " + old.length + " old left)";
    if (crashed) text += "; " + crashed + " new instance(s) crashed";
    text += ".";
    step.dataset.phase = crashed ? "failing" : "rolling";
  }
  if (step.textContent !== text) step.textContent = text;
}

// Timeline entries of earlier revisions roll back to them.
function setupTimeline(base) {
  for (const b of document.querySelectorAll("#timeline button.rollback")) {
    b.addEventListener("click", async () => {
      try {
        await api("POST", base + "/rollback", { to: parseInt(b.dataset.revision, 10) });
        toast("Rolling back to revision " + b.dataset.revision + " …");
        setTimeout(() => location.reload(), 500);
      } catch (e) { toast("Rollback failed: " + e.message); }
    });
  }
}

function appendLog(logs, l) {
  if (logs.dataset.searching) return el("span");
  const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 8;
  const s = el("span", l.timestamp.substring(11, 23) + " [" + l.source + "] " + l.message + "\n", "log");
  s.dataset.source = l.source;
  logs.append(s);
  while (logs.children.length > 1000) logs.firstElementChild.remove();
  if (atBottom) logs.scrollTop = logs.scrollHeight;
  return s;
}

// Live logs over Server-Sent Events; falls back to polling where the stream is unavailable.
function followLogs(base, logs, applyFilter, refreshLogs) {
  const live = document.getElementById("log-live");
  if (!window.EventSource) {
    setInterval(refreshLogs, 2000);
    return;
  }
  let opened = false;
  const es = new EventSource(base + "/logs/stream?recent=false&space=" + encodeURIComponent(pageSpace()));
  es.onopen = () => { opened = true; live.textContent = "live"; };
  es.onmessage = (ev) => {
    try {
      const span = appendLog(logs, JSON.parse(ev.data));
      const want = document.getElementById("log-source").value;
      span.hidden = want !== "" && !span.dataset.source.startsWith(want);
    } catch (_) {}
  };
  es.addEventListener("dropped", (ev) => {
    try { toast(JSON.parse(ev.data).dropped + " log lines were skipped to keep up."); } catch (_) {}
  });
  es.onerror = () => {
    if (!opened) {
      es.close();
      setInterval(refreshLogs, 2000);
    } else {
      live.textContent = "reconnecting …";
    }
  };
}

function parseMemoryMb(s) {
  const m = /^\s*(\d+)\s*(m|mb|g|gb)?\s*$/i.exec(s);
  if (!m) return null;
  const n = parseInt(m[1], 10);
  return m[2] && m[2].toLowerCase().startsWith("g") ? n * 1024 : n;
}

function setupAppActions(name, base, refreshApp) {
  const scale = document.getElementById("scale");
  if (scale) {
    scale.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const memory = parseMemoryMb(document.getElementById("scale-memory").value);
      if (memory === null) { toast("Memory must be like 256M or 1G."); return; }
      try {
        await api("PATCH", base, { instances: parseInt(document.getElementById("scale-instances").value, 10), memory_mb: memory });
        toast("Scaling " + name + " …");
        refreshApp();
      } catch (e) { toast("Scale failed: " + e.message); }
    });
  }
  const lifecycle = (id, path, msg) => {
    const b = document.getElementById(id);
    if (!b) return;
    b.addEventListener("click", async () => {
      try {
        await api("POST", base + path, {});
        toast(msg);
        if (id !== "restart") setTimeout(() => location.reload(), 300);
      } catch (e) { toast(id + " failed: " + e.message); }
    });
  };
  lifecycle("restart", "/restart", "Restarting " + name + " one instance at a time …");
  lifecycle("stop", "/stop", "Stopping " + name + " …");
  lifecycle("start", "/start", "Starting " + name + " …");

  // Revisions with one-click rollback.
  (async () => {
    try {
      const list = await api("GET", base + "/revisions");
      const tbody = document.querySelector("#revisions tbody");
      tbody.replaceChildren(...list.revisions.map((r) => {
        const tr = el("tr");
        tr.dataset.revision = r.number;
        tr.append(el("td", r.number + (r.current ? " (current)" : "")), el("td", r.description), el("td", r.created_by),
          el("td", r.env_keys.join(", ")));
        const td = el("td");
        if (!r.current && r.droplet_available && document.getElementById("scale")) {
          const b = el("button", "Roll back to " + r.number, "small rollback");
          b.type = "button";
          b.addEventListener("click", async () => {
            try {
              await api("POST", base + "/rollback", { to: r.number });
              toast("Rolling back to revision " + r.number + " …");
              setTimeout(() => location.reload(), 500);
            } catch (e) { toast("Rollback failed: " + e.message); }
          });
          td.append(b);
        }
        tr.append(td);
        return tr;
      }));
      document.getElementById("revisions-section").hidden = false;
    } catch (_) { /* no revisions API on this controller */ }
  })();

  // Environment; values are shown masked until asked for.
  (async () => {
    try {
      const env = await api("GET", base + "/env");
      const tbody = document.querySelector("#env tbody");
      tbody.replaceChildren(...Object.entries(env.env).map(([k, v]) => {
        const tr = el("tr");
        const val = el("td", "•••••");
        const show = el("button", "Show", "small");
        show.type = "button";
        show.addEventListener("click", () => { val.textContent = v; show.remove(); });
        val.append(" ", show);
        tr.append(el("td", k), val);
        const td = el("td");
        if (document.getElementById("env-set")) {
          const b = el("button", "Unset", "small danger");
          b.type = "button";
          b.addEventListener("click", async () => {
            try { await api("PATCH", base + "/env", { unset: [k] }); location.reload(); } catch (e) { toast("Unset failed: " + e.message); }
          });
          td.append(b);
        }
        tr.append(td);
        return tr;
      }));
      document.getElementById("env-section").hidden = false;
    } catch (_) { /* no env API on this controller */ }
  })();
  const envSet = document.getElementById("env-set");
  if (envSet) {
    envSet.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const set = {};
      set[document.getElementById("env-key").value.trim()] = document.getElementById("env-value").value;
      try { await api("PATCH", base + "/env", { set }); location.reload(); } catch (e) { toast("Set failed: " + e.message); }
    });
  }

  // Routes.
  (async () => {
    try {
      const list = await api("GET", base + "/routes");
      const ul = document.getElementById("routes");
      ul.replaceChildren(...list.routes.map((r) => {
        const li = el("li", r.host + (r.path || "") + (r.default ? " (default)" : ""));
        if (!r.default && document.getElementById("route-map")) {
          const b = el("button", "Unmap", "small danger");
          b.type = "button";
          b.addEventListener("click", async () => {
            try {
              await api("DELETE", base + "/routes?route=" + encodeURIComponent(r.host + (r.path || "")));
              location.reload();
            } catch (e) { toast("Unmap failed: " + e.message); }
          });
          li.append(" ", b);
        }
        return li;
      }));
      document.getElementById("routes-section").hidden = false;
    } catch (_) { /* no routes API on this controller */ }
  })();
  const routeMap = document.getElementById("route-map");
  if (routeMap) {
    routeMap.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("POST", base + "/routes", { route: document.getElementById("route-value").value.trim() });
        location.reload();
      } catch (e) { toast("Map failed: " + e.message); }
    });
  }
}

function setupTokens() {
  const form = document.getElementById("new-token");
  if (!form) return;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const app = document.getElementById("token-app").value.trim();
    try {
      const t = await api("POST", "/v1/tokens", {
        name: document.getElementById("token-name").value.trim(),
        scope: document.getElementById("token-scope").value,
        app: app || null,
        expires_in: document.getElementById("token-expires").value.trim() || null,
      });
      document.getElementById("token-value").textContent = t.token;
      document.getElementById("token-created").hidden = false;
      toast("Token " + t.name + " created.");
    } catch (e) {
      toast("Could not create the token: " + e.message);
    }
  });
  for (const b of document.querySelectorAll("button.revoke")) {
    b.addEventListener("click", async () => {
      try {
        await api("DELETE", "/v1/tokens/" + encodeURIComponent(b.dataset.id));
        location.reload();
      } catch (e) {
        toast("Could not revoke: " + e.message);
      }
    });
  }
}

function setupNodes() {
  for (const b of document.querySelectorAll("button.drain")) {
    b.addEventListener("click", async () => {
      try {
        await api("POST", "/v1/nodes/" + encodeURIComponent(b.dataset.node) + "/drain", {});
        toast("Draining " + b.dataset.node + ": its instances move elsewhere first.");
        setTimeout(() => location.reload(), 800);
      } catch (e) { toast("Drain failed: " + e.message); }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setupNodes();
  setupDeploy();
  setupApp();
  setupTokens();
});

// The list's space switcher reloads the list for the chosen space (a plain form without JS).
document.getElementById("space-select")?.addEventListener("change", (e) => e.target.form.submit());

// Log search: the retained history (the API's grep, since and source filters) in place of the
// live view until "Back to live"; Download saves what the filters select as a text file.
function setupLogSearch(base, logs, applyFilter) {
  const form = document.getElementById("log-search");
  if (!form) return;
  const status = document.getElementById("log-search-status");
  const back = document.getElementById("log-back");
  const query = () => {
    const q = new URLSearchParams({ limit: "1000" });
    const grep = document.getElementById("log-grep").value.trim();
    const since = document.getElementById("log-since").value.trim();
    const src = document.getElementById("log-source").value;
    if (grep) q.set("grep", grep);
    if (since) q.set("since", since);
    if (src) q.set("source", src);
    return q;
  };
  const line = (l) => l.timestamp + " [" + l.source + "] " + l.message + "\n";
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const list = await api("GET", base + "/logs?" + query().toString());
      logs.dataset.searching = "1";
      logs.replaceChildren(...list.lines.map((l) => {
        const s = el("span", line(l), "log");
        s.dataset.source = l.source;
        return s;
      }));
      status.textContent = list.lines.length + " line(s) found";
      back.hidden = false;
    } catch (e) {
      status.textContent = "Search failed: " + e.message;
    }
  });
  back.addEventListener("click", () => location.reload());
  document.getElementById("log-download").addEventListener("click", async () => {
    try {
      const list = await api("GET", base + "/logs?" + query().toString());
      const blob = new Blob(list.lines.map(line), { type: "text/plain" });
      const a = el("a");
      a.href = URL.createObjectURL(blob);
      a.download = (document.getElementById("app").dataset.app || "app") + "-logs.txt";
      a.click();
      URL.revokeObjectURL(a.href);
    } catch (e) {
      status.textContent = "Download failed: " + e.message;
    }
  });
}
