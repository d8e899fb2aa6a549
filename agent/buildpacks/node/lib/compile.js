// The Node buildpack's compile step (issue 19): engines.node against the stack's node, the
// dependencies installed with npm (ci with a lockfile) or restored from the dependency cache,
// scripts.build run, dev dependencies pruned, and the start command (the Procfile wins).
"use strict";
const fs = require("fs");
const path = require("path");
const { spawnSync } = require("child_process");

const [app, cache] = process.argv.slice(2);
const cached = path.join(cache, "node", "node_modules");
const modules = path.join(app, "node_modules");
const say = (m) => console.log("       " + m);
const fail = (m) => {
  console.log(m);
  process.exit(1);
};
const has = (f) => fs.existsSync(path.join(app, f));

let pkg;
try {
  pkg = JSON.parse(fs.readFileSync(path.join(app, "package.json"), "utf8"));
} catch (e) {
  fail("package.json: " + e.message);
}
const scripts = pkg.scripts || {};
const version = process.versions.node;
say(`Using node ${version} (stack ${process.env.PAAS_STACK || "?"})`);

// engines.node: the forms apps write (>=18, ^20, 20.x, ~20.1, 20, ranges joined by spaces or ||).
function satisfies(range, v) {
  const [maj, min, pat] = v.split(".").map(Number);
  const cmp = (a, b) => {
    for (let i = 0; i < 3; i++) if ((a[i] || 0) !== (b[i] || 0)) return (a[i] || 0) - (b[i] || 0);
    return 0;
  };
  const have = [maj, min, pat];
  const one = (c) => {
    const m = c.match(/^(>=|<=|>|<|=|\^|~)?v?(\d+|x|\*)(?:\.(\d+|x|\*))?(?:\.(\d+|x|\*))?$/);
    if (!m) return null;
    const op = m[1] || "";
    const want = [m[2], m[3], m[4]].map((p) => (p === undefined || p === "x" || p === "*" ? undefined : Number(p)));
    if (want[0] === undefined) return true;
    const w = want.map((p) => p || 0);
    const given = want.filter((p) => p !== undefined).length;
    switch (op) {
      case ">=": return cmp(have, w) >= 0;
      case ">": return cmp(have, w) > 0;
      case "<=": return cmp(have, w) <= 0;
      case "<": return cmp(have, w) < 0;
      case "^": return maj === w[0] && cmp(have, w) >= 0;
      case "~": return maj === w[0] && (given < 2 || min === w[1]) && cmp(have, w) >= 0;
      default:
        return want.every((p, i) => p === undefined || p === have[i]);
    }
  };
  return range.split("||").some((alt) => {
    const parts = alt.trim().replace(/\s*-\s*/, " - ").split(/\s+/).filter(Boolean);
    if (parts.length === 3 && parts[1] === "-") return one(">=" + parts[0]) && one("<=" + parts[2]);
    return parts.every((c) => {
      const r = one(c);
      if (r === null) throw new Error(c);
      return r;
    });
  });
}
const wanted = pkg.engines && pkg.engines.node;
if (wanted) {
  let ok;
  try {
    ok = satisfies(String(wanted), version);
  } catch (e) {
    say(`engines.node ${JSON.stringify(wanted)} is not a range this platform reads; using node ${version}`);
    ok = true;
  }
  if (!ok) {
    fail(`package.json engines.node asks for ${wanted} but stack ${process.env.PAAS_STACK} has node ${version} (trixie has node 20, bookworm node 18): change engines.node or push with --stack`);
  }
}

function npm(args) {
  say("npm " + args.join(" "));
  const r = spawnSync("npm", args, { cwd: app, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const out = (r.stdout || "") + (r.stderr || "");
  const lines = out.split("\n").filter((l) => l.trim());
  for (const l of lines.slice(-12)) say(l);
  if (r.status !== 0) {
    // npm's own reason: its error lines without the code/syscall/log boilerplate.
    const errs = lines
      .filter((l) => /^npm (error|ERR!)/.test(l))
      .map((l) => l.replace(/^npm (error|ERR!) ?/, "").trim());
    const code = (errs.find((l) => l.startsWith("code ")) || "").slice(5);
    const why = errs.filter(
      (l) => l && !/^(code|syscall|errno) /.test(l) && !/complete log|^\//.test(l) &&
        !(l.startsWith("network ") && !l.startsWith("network request to")),
    );
    const reason = why.slice(0, 2).map((l) => l.replace(/^network /, "")).join("; ");
    fail(`npm ${args[0]} failed${code ? " (" + code + ")" : ""}: ` + (reason || `exit ${r.status}`));
  }
}

const lock = has("package-lock.json") || has("npm-shrinkwrap.json");
const build = !!scripts.build;
const deps = Object.keys(pkg.dependencies || {}).length + Object.keys(pkg.devDependencies || {}).length;
if (deps > 0) {
  if (fs.existsSync(path.join(cached, ".complete"))) {
    fs.rmSync(modules, { recursive: true, force: true });
    // This build's own copy of the entry: moved, not copied, and not stored again.
    try {
      fs.renameSync(cached, modules);
    } catch (e) {
      fs.cpSync(cached, modules, { recursive: true, verbatimSymlinks: true });
    }
    fs.rmSync(path.join(modules, ".complete"));
    say("Restored node_modules from the cache");
  } else {
    // With a build step the dev dependencies are needed until it ran; pruned below.
    const omit = build ? [] : ["--omit=dev"];
    npm(lock ? ["ci", ...omit] : ["install", ...omit]);
    if (fs.existsSync(cache)) {
      fs.rmSync(cached, { recursive: true, force: true });
      fs.cpSync(modules, cached, { recursive: true, verbatimSymlinks: true });
      fs.writeFileSync(path.join(cached, ".complete"), "");
    }
  }
} else if (!lock) {
  say("No dependencies in package.json");
}
if (build) {
  npm(["run", "build"]);
  if (deps > 0) npm(["prune", "--omit=dev"]);
}

const procfileWeb = has("Procfile") && /^web:/m.test(fs.readFileSync(path.join(app, "Procfile"), "utf8"));
const start = scripts.start || (has("server.js") ? "node server.js" : "");
if (!start && !procfileWeb) {
  fail("package.json has no scripts.start, there is no server.js and no Procfile with a web: command: nothing to run");
}
fs.mkdirSync(path.join(app, ".paas"), { recursive: true });
fs.writeFileSync(path.join(app, ".paas/node-start"), start + "\n");
if (start) say("Start command: " + start);
// Additive (issue 24): with no build step, no install script of the app's own and no local
// dependency, what this step added depends only on package.json, the lockfile and the app's
// paths, so the node may reuse it when only the code changes.
const own = ["preinstall", "install", "postinstall", "prepare", "prepublish"].some((s) => scripts[s]);
const local = Object.values({ ...(pkg.dependencies || {}), ...(pkg.devDependencies || {}) }).some(
  (v) => typeof v !== "string" || /^(file:|link:|\.|\/|~)/.test(v)
);
if (!build && !own && !local) fs.writeFileSync(path.join(app, ".paas/additive"), "");
