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

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf() } };
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

// App page: instances and logs refresh without reloading.
function setupApp() {
  const root = document.getElementById("app");
  if (!root) return;
  const name = root.dataset.app;
  const base = "/v1/apps/" + encodeURIComponent(name);
  const tbody = document.querySelector("#instances tbody");
  const logs = document.getElementById("logs");
  const source = document.getElementById("log-source");

  async function refreshApp() {
    try {
      const a = await api("GET", base);
      document.getElementById("app-state").textContent = a.state;
      document.getElementById("app-state").className = "state state-" + a.state;
      const running = a.instances.filter((i) => i.state === "running").length;
      document.getElementById("app-instances").textContent = running + "/" + a.desired_instances + " running";
      if (a.revision) document.getElementById("app-revision").textContent = a.revision.number;
      tbody.replaceChildren(...a.instances.map((i) => {
        const tr = el("tr");
        tr.append(el("td", i.index));
        const st = el("td");
        st.append(el("span", i.state, "state state-" + i.state));
        tr.append(st, el("td", i.node || "-"), el("td", i.address || "-"), el("td", i.restarts),
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
  logs.scrollTop = logs.scrollHeight;
  setInterval(refreshApp, 2000);
  setInterval(refreshLogs, 2000);

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

document.addEventListener("DOMContentLoaded", () => {
  setupDeploy();
  setupApp();
  setupTokens();
});
