// o16n's web page: sign in, browse the services, try one, watch its batches, read /status.
// Plain JavaScript, no build step. Everything a user published (names, descriptions, output
// names, console output, error messages) reaches the page as text nodes, never as HTML: `el`
// below is the only way this file makes elements, and it has no HTML path. The CSP's Trusted
// Types rule makes any innerHTML assignment throw besides.
// The token lives in sessionStorage (this tab only) and in memory; never in a cookie or a URL
// (signing out sends the refresh token in a DELETE body, not ML Server's query parameter).
"use strict";

(function () {
  const SESSION_KEY = "o16n.session";
  const COMPOSITE = new Set(["vector", "matrix", "data.frame"]);
  const EXAMPLES = { vector: "[1, 2, 3]", matrix: "[[1, 2], [3, 4]]", "data.frame": '{"x": [1, 2], "y": ["a", "b"]}' };

  // generation: counts sign-outs, so an answer to a call made before one is dropped, not shown
  const state = { session: null, entra: null, msal: null, services: [], selected: null, objectUrls: [], generation: 0 };
  let renewing = null;

  // ---- DOM helpers: text only -------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on") || key === "innerHTML" || key === "outerHTML" || key === "srcdoc") {
        throw new Error("el() does not set " + key);
      }
      if (key === "className") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function say(node, text, kind) {
    node.textContent = text || "";
    node.className = kind || "";
    show(node, Boolean(text));
  }

  // ---- the session ------------------------------------------------------------------------

  function loadSession() {
    try {
      const raw = sessionStorage.getItem(SESSION_KEY);
      return raw ? JSON.parse(raw) : null;
    } catch (e) {
      return null;
    }
  }

  function saveSession(session) {
    state.session = session;
    if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    else sessionStorage.removeItem(SESSION_KEY);
  }

  function fromTokenPair(user, pair) {
    return {
      kind: "local", user: user, accessToken: pair.access_token, refreshToken: pair.refresh_token,
      expiresOn: Number(pair.expires_on) || 0,
    };
  }

  class SignedOut extends Error {}

  async function readError(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    const message = body && typeof body.message === "string" ? body.message : "";
    return message || ("the server answered " + response.status + " " + (response.statusText || ""));
  }

  function send(method, path, body, session) {
    const headers = { Accept: "application/json" };
    if (session && session.accessToken) headers.Authorization = "Bearer " + session.accessToken;
    const init = { method: method, headers: headers, credentials: "omit", cache: "no-store", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init);
  }

  // Every call of the API: with the token, renewed once on a 401; a second 401 ends the session.
  async function api(method, path, body) {
    if (!state.session) throw new SignedOut("sign in first");
    const generation = state.generation;
    const current = () => {
      if (generation !== state.generation || !state.session) throw new SignedOut("signed out meanwhile");
    };
    const sent = state.session.accessToken;
    let response = await send(method, path, body, state.session);
    current();
    if (response.status === 401) {
      // Renewed meanwhile by another call: retry with that token. Renewing again would spend the
      // new refresh token and sign out the calls still using the new access token.
      if (state.session.accessToken !== sent || (await renew())) {
        current();
        response = await send(method, path, body, state.session);
        current();
      }
    }
    if (response.status === 401) {
      const why = await readError(response);
      endSession("Your sign-in has ended (" + why + "). Sign in again.");
      throw new SignedOut(why);
    }
    return response;
  }

  async function apiJson(method, path, body) {
    const generation = state.generation;
    const response = await api(method, path, body);
    if (!response.ok) throw new Error(await readError(response));
    const value = await response.json();
    if (generation !== state.generation) throw new SignedOut("signed out meanwhile");
    return value;
  }

  // One renewal at a time, whoever asks.
  function renew() {
    if (!renewing) {
      renewing = (state.session && state.session.kind === "entra" ? renewEntra() : renewLocal())
        .catch(() => false)
        .finally(() => { renewing = null; });
    }
    return renewing;
  }

  async function renewLocal() {
    const session = state.session;
    const generation = state.generation;
    if (!session || !session.refreshToken) return false;
    const response = await send("POST", "/login/refreshToken", { refreshToken: session.refreshToken });
    if (!response.ok) return false;
    const pair = await response.json();
    if (generation !== state.generation) return false; // signed out meanwhile: keep nothing
    saveSession(fromTokenPair(session.user, pair));
    return true;
  }

  async function signInLocal(username, password) {
    const response = await send("POST", "/login", { username: username, password: password });
    if (!response.ok) throw new Error(await readError(response));
    saveSession(fromTokenPair(username, await response.json()));
  }

  async function signOut() {
    const session = state.session;
    endSession("You are signed out.", "muted");
    if (!session) return;
    if (session.kind === "local" && session.refreshToken) {
      // In the body, not ML Server's query parameter: URLs end up in request logs. keepalive: the
      // revoke still goes out if the tab is closed right after.
      let revoked = false;
      try {
        const response = await fetch("/login/refreshToken", {
          method: "DELETE", credentials: "omit", cache: "no-store", redirect: "error", keepalive: true,
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ refreshToken: session.refreshToken }),
        });
        revoked = response.ok || response.status === 401; // 401: already ended; a 400 means it never arrived
      } catch (e) {
        revoked = false;
      }
      if (!revoked) {
        say($("sign-in-message"), "You are signed out here, but the server could not be told: that sign-in " +
            "stays valid until it lapses. Sign in and out again to end it.", "error");
      }
    } else if (session.kind === "entra" && state.msal) {
      try {
        await state.msal.clearCache();
      } catch (e) {
        /* nothing more to forget */
      }
    }
  }

  // Forget everything the signed-in view showed, and ask for a sign-in.
  function endSession(message, kind) {
    state.generation += 1;
    saveSession(null);
    state.services = [];
    state.selected = null;
    releaseObjectUrls();
    for (const id of ["services", "health-components", "try-fields", "try-answer", "batch-list"]) clear($(id));
    for (const id of ["health-summary", "catalog-message", "batches-message", "try-about"]) $(id).textContent = "";
    show($("try"), false);
    show($("batches"), false);
    show($("app"), false);
    show($("who"), false);
    $("who-name").textContent = "";
    // nothing one person typed is left for the next one at this tab
    for (const form of document.querySelectorAll("form")) form.reset();
    for (const field of document.querySelectorAll("input, textarea")) field.value = field.defaultValue;
    $("password").value = "";
    show($("sign-in"), true);
    say($("sign-in-message"), message, kind || "error");
    $("username").focus();
  }

  // ---- Entra ID through MSAL.js (only when the server says it is configured) ---------------

  async function setUpEntra() {
    let config = null;
    try {
      const response = await fetch("/ui/config.json", { credentials: "omit", cache: "no-store" });
      config = response.ok ? (await response.json()).entra : null;
    } catch (e) {
      config = null;
    }
    if (!config || !window.msal) return;
    state.entra = config;
    try {
      state.msal = new window.msal.PublicClientApplication({
        auth: { clientId: config.clientId, authority: config.authority, redirectUri: window.location.origin + "/" },
        cache: { cacheLocation: "sessionStorage" },
      });
      await state.msal.initialize();
      const result = await state.msal.handleRedirectPromise();
      if (result && result.accessToken) saveEntra(result);
      show($("entra"), true);
    } catch (e) {
      state.msal = null;
      say($("sign-in-message"), "Entra ID sign-in is not available: " + (e && e.message ? e.message : e), "error");
    }
  }

  function saveEntra(result) {
    saveSession({
      kind: "entra", user: result.account ? result.account.username : "Entra ID user",
      account: result.account ? result.account.homeAccountId : "", accessToken: result.accessToken,
      expiresOn: result.expiresOn ? Math.floor(new Date(result.expiresOn).getTime() / 1000) : 0,
    });
  }

  async function renewEntra() {
    const session = state.session;
    if (!state.msal || !session) return false;
    const account = state.msal.getAccount({ homeAccountId: session.account });
    if (!account) return false;
    const result = await state.msal.acquireTokenSilent({ account: account, scopes: state.entra.scopes });
    saveEntra(result);
    return true;
  }

  function signInEntra() {
    if (!state.msal) return;
    state.msal.loginRedirect({ scopes: state.entra.scopes }).catch((e) => {
      say($("sign-in-message"), "Entra ID sign-in failed: " + (e && e.message ? e.message : e), "error");
    });
  }

  // ---- health -----------------------------------------------------------------------------

  async function loadHealth() {
    const summary = $("health-summary");
    const list = clear($("health-components"));
    let doc;
    try {
      const generation = state.generation;
      const response = await api("GET", "/status");
      doc = await response.json().catch(() => null);
      if (generation !== state.generation) return;
      if (!doc || typeof doc !== "object") throw new Error(await readError(response));
      if (!response.ok && !doc.statusCode) throw new Error(doc.message || "the server answered " + response.status);
    } catch (e) {
      if (e instanceof SignedOut) return;
      say(summary, "Health unknown: " + e.message, "fail");
      return;
    }
    const overall = String(doc.statusCode || "unknown");
    summary.className = "";
    summary.textContent = "Server: " + overall + (doc.details && doc.details.version ? " (" + doc.details.version + ")" : "");
    for (const [name, component] of Object.entries(doc.components || {})) {
      const status = String((component && component.statusCode) || "unknown");
      const details = component && component.details ? component.details : {};
      const detail = details.error || details.type || "";
      list.appendChild(el("li", { className: "chip " + status, title: String(detail) }, name + ": " + status));
    }
  }

  // ---- the catalog ------------------------------------------------------------------------

  async function loadCatalog() {
    const message = $("catalog-message");
    message.textContent = "Loading the services...";
    try {
      const list = await apiJson("GET", "/services");
      state.services = Array.isArray(list) ? list : [];
    } catch (e) {
      if (e instanceof SignedOut) return;
      message.textContent = "The services could not be listed: " + e.message;
      return;
    }
    renderCatalog();
  }

  function groupByName(services) {
    const groups = new Map();
    for (const s of services) {
      const name = String(s.name || "");
      if (!groups.has(name)) groups.set(name, []);
      groups.get(name).push(s);
    }
    return groups;
  }

  function matches(service, filter) {
    if (!filter) return true;
    const hay = (String(service.name || "") + " " + String(service.description || "")).toLowerCase();
    return hay.includes(filter);
  }

  function renderCatalog() {
    const list = clear($("services"));
    const filter = $("catalog-filter").value.trim().toLowerCase();
    const groups = groupByName(state.services.filter((s) => matches(s, filter)));
    const total = groupByName(state.services).size;
    $("catalog-message").textContent = total === 0
      ? "No services yet. Publish one with POST /services/{name}/{version}."
      : groups.size + " of " + total + " service" + (total === 1 ? "" : "s");
    for (const [name, versions] of groups) list.appendChild(serviceCard(name, versions));
  }

  function serviceCard(name, versions) {
    const card = el("li", { className: "card" });
    const body = el("div");
    const heading = el("h3", {}, name);
    card.appendChild(heading);
    let current = versions[versions.length - 1];
    if (versions.length > 1) {
      const id = "v-" + Math.random().toString(36).slice(2);
      const select = el("select", { id: id });
      versions.forEach((v, i) => select.appendChild(el("option", { value: String(i), selected: v === current }, String(v.version))));
      select.addEventListener("change", () => {
        current = versions[Number(select.value)];
        renderVersion(body, current);
      });
      card.appendChild(el("label", { for: id }, "Version"));
      card.appendChild(select);
    }
    card.appendChild(body);
    renderVersion(body, current);
    return card;
  }

  function paramList(defs) {
    if (!Array.isArray(defs) || defs.length === 0) return el("p", { className: "muted" }, "none");
    return el("ul", { className: "params" },
      defs.map((d) => el("li", {}, el("code", {}, String(d.name)), " ", el("span", { className: "muted" }, String(d.type)))));
  }

  function renderVersion(body, s) {
    clear(body);
    const realtime = s.runtimeType === "Realtime";
    body.appendChild(el("p", {},
      "Version ", el("strong", {}, String(s.version)),
      el("span", { className: "badge" + (realtime ? " realtime" : "") }, realtime ? "Realtime" : "Standard (" + String(s.runtimeType || "Python") + ")")));
    if (s.description) body.appendChild(el("p", { className: "description" }, String(s.description)));
    body.appendChild(el("dl", { className: "meta" },
      el("dt", {}, "Published by"), el("dd", {}, String(s.versionPublishedBy || "")),
      el("dt", {}, "Your permission"), el("dd", {}, String(s.myPermissionOnService || "")),
      el("dt", {}, "Inputs"), el("dd", {}, paramList(s.inputParameterDefinitions)),
      el("dt", {}, "Outputs"), el("dd", {}, paramList(s.outputParameterDefinitions)),
      Array.isArray(s.outputFileNames) && s.outputFileNames.length
        ? [el("dt", {}, "Output files"), el("dd", {}, s.outputFileNames.map(String).join(", "))] : null));
    const tryIt = el("button", { type: "button", "aria-label": "Try " + s.name + " " + s.version }, "Try it");
    tryIt.addEventListener("click", () => openTry(s));
    const batches = el("button", { type: "button", className: "secondary", "aria-label": "Batches of " + s.name + " " + s.version }, "Batches");
    batches.addEventListener("click", () => openBatches(s));
    body.appendChild(el("div", { className: "actions" }, tryIt, batches));
  }

  function servicePath(s) {
    return "/api/" + encodeURIComponent(s.name) + "/" + encodeURIComponent(s.version);
  }

  // ---- try it -----------------------------------------------------------------------------

  function openTry(s) {
    state.selected = s;
    releaseObjectUrls();
    $("try-title").textContent = "Try " + s.name + " " + s.version;
    $("try-about").textContent = "POST " + servicePath(s) + " with these inputs.";
    const fields = clear($("try-fields"));
    clear($("try-answer"));
    const defs = Array.isArray(s.inputParameterDefinitions) ? s.inputParameterDefinitions : [];
    if (defs.length === 0) fields.appendChild(el("p", { className: "muted" }, "This service takes no inputs."));
    defs.forEach((d, i) => fields.appendChild(inputField(d, i)));
    show($("try"), true);
    $("try-title").focus();
  }

  function inputField(def, i) {
    const type = String(def.type || "character");
    const id = "in-" + i;
    const label = el("label", { for: id }, String(def.name), " ", el("span", { className: "hint" }, hintFor(type)));
    let control;
    if (type === "logical") {
      control = el("select", { id: id }, el("option", { value: "true" }, "true"), el("option", { value: "false" }, "false"));
    } else if (COMPOSITE.has(type)) {
      control = el("textarea", { id: id, rows: 3, spellcheck: "false", placeholder: EXAMPLES[type] });
    } else {
      const numeric = type === "numeric" || type === "integer";
      control = el("input", { id: id, type: "text", inputmode: numeric ? (type === "integer" ? "numeric" : "decimal") : null,
        autocomplete: "off", spellcheck: "false" });
    }
    control.dataset.name = String(def.name);
    control.dataset.type = type;
    return el("div", { className: "field" }, label, control);
  }

  function hintFor(type) {
    if (type === "vector") return "vector: a JSON array, e.g. [7, 3.2, 4.7, 1.4]";
    if (type === "matrix") return "matrix: a JSON array of equal-length arrays";
    if (type === "data.frame") return 'data.frame: JSON {"column": [values]} or an array of row objects';
    if (type === "numeric") return "numeric: a number";
    if (type === "integer") return "integer: a whole number";
    if (type === "logical") return "logical: true or false";
    return type + ": text";
  }

  // The form's values as the service's JSON inputs. Only JSON syntax is checked here: the
  // server checks the types and says what is wrong.
  function readInputs() {
    const inputs = Object.create(null); // an input named __proto__ is an input, not a prototype
    for (const control of $("try-fields").querySelectorAll("[data-name]")) {
      const name = control.dataset.name;
      const type = control.dataset.type;
      const raw = control.value;
      if (type === "logical") inputs[name] = raw === "true";
      else if (COMPOSITE.has(type)) {
        if (!raw.trim()) continue; // missing: the server names it
        try {
          inputs[name] = JSON.parse(raw);
        } catch (e) {
          control.focus();
          throw new Error(name + " is not valid JSON: " + e.message);
        }
      } else if (type === "numeric" || type === "integer") {
        const text = raw.trim();
        if (!text) continue;
        const n = Number(text);
        inputs[name] = text !== "" && Number.isFinite(n) ? n : text; // not a number: sent as is, refused by the server
      } else inputs[name] = raw;
    }
    return inputs;
  }

  async function runTry(event) {
    event.preventDefault();
    const s = state.selected;
    if (!s) return;
    const answer = clear($("try-answer"));
    releaseObjectUrls();
    let inputs;
    try {
      inputs = readInputs();
    } catch (e) {
      answer.appendChild(el("p", { className: "error", role: "alert" }, e.message));
      return;
    }
    const button = $("try-run");
    button.disabled = true;
    answer.appendChild(el("p", { className: "muted" }, "Running..."));
    try {
      const generation = state.generation;
      const response = await api("POST", servicePath(s), inputs);
      const result = response.ok ? await response.json() : await readError(response);
      if (generation !== state.generation) return; // signed out meanwhile: the answer is no one's now
      if (state.selected !== s) return; // another service is shown now: this answer is not its
      clear(answer);
      if (!response.ok) {
        answer.appendChild(el("p", { className: "error", role: "alert" }, "Refused (" + response.status + "): " + result));
        return;
      }
      answer.appendChild(renderResult(result));
    } catch (e) {
      clear(answer);
      if (!(e instanceof SignedOut)) answer.appendChild(el("p", { className: "error", role: "alert" }, "The call failed: " + e.message));
    } finally {
      button.disabled = false;
    }
  }

  function renderResult(result) {
    const box = el("div", { className: "answer" });
    const ok = Boolean(result && result.success);
    box.appendChild(el("p", { className: ok ? "chip pass" : "chip fail" }, ok ? "Succeeded" : "Failed"));
    if (result.errorMessage) {
      box.appendChild(el("h3", {}, "Error message"));
      box.appendChild(el("pre", { className: "error", "data-part": "errorMessage" }, String(result.errorMessage)));
    }
    box.appendChild(el("h3", {}, "Outputs"));
    const outputs = result.outputParameters && typeof result.outputParameters === "object" ? result.outputParameters : {};
    const names = Object.keys(outputs);
    if (names.length === 0) box.appendChild(el("p", { className: "muted" }, "none"));
    const dl = el("dl", { className: "meta outputs" });
    for (const name of names) {
      dl.appendChild(el("dt", {}, el("code", {}, name)));
      dl.appendChild(el("dd", {}, el("pre", { "data-output": name }, asJson(outputs[name]))));
    }
    box.appendChild(dl);
    box.appendChild(el("h3", {}, "Console output"));
    box.appendChild(result.consoleOutput
      ? el("pre", { "data-part": "consoleOutput" }, String(result.consoleOutput))
      : el("p", { className: "muted" }, "none"));
    const files = result.outputFiles && typeof result.outputFiles === "object" ? result.outputFiles : null;
    if (files && Object.keys(files).length) {
      box.appendChild(el("h3", {}, "Output files"));
      const list = el("ul", { className: "files" });
      for (const [name, content] of Object.entries(files)) {
        list.appendChild(el("li", {}, content === null || content === undefined
          ? el("span", { className: "muted" }, name + " (not written)")
          : downloadLink(name, content)));
      }
      box.appendChild(list);
    }
    return box;
  }

  function asJson(value) {
    const flat = JSON.stringify(value);
    return flat !== undefined && flat.length > 60 ? JSON.stringify(value, null, 2) : String(flat);
  }

  // An output file as a download: base64 -> Blob -> an object URL of this origin (no data: URL).
  function downloadLink(name, base64) {
    let bytes;
    try {
      const binary = atob(String(base64));
      bytes = new Uint8Array(binary.length);
      for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    } catch (e) {
      return el("span", { className: "error" }, name + " (could not be decoded)");
    }
    const url = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
    state.objectUrls.push(url);
    const link = el("a", { href: url, rel: "noopener" }, name + " (" + bytes.length + " bytes)");
    link.download = name; // a property: the browser keeps only a safe file name
    return link;
  }

  function releaseObjectUrls() {
    for (const url of state.objectUrls) URL.revokeObjectURL(url);
    state.objectUrls = [];
  }

  // ---- batches ----------------------------------------------------------------------------

  function openBatches(s) {
    state.selected = s;
    $("batches-title").textContent = "Batches of " + s.name + " " + s.version;
    const defs = Array.isArray(s.inputParameterDefinitions) ? s.inputParameterDefinitions : [];
    const example = {};
    for (const d of defs) example[d.name] = d.type === "vector" ? [] : d.type === "data.frame" ? {} : null;
    $("batch-records").placeholder = JSON.stringify([example]);
    show($("batches"), true);
    $("batches-title").focus();
    loadBatches();
  }

  async function loadBatches() {
    const s = state.selected;
    if (!s) return;
    const list = clear($("batch-list"));
    const message = $("batches-message");
    message.textContent = "Loading...";
    let ids;
    try {
      ids = await apiJson("GET", servicePath(s) + "/batch");
    } catch (e) {
      if (!(e instanceof SignedOut) && state.selected === s) message.textContent = "The batches could not be listed: " + e.message;
      return;
    }
    if (state.selected !== s) return; // another service was opened meanwhile: this list is not its
    clear(list); // two refreshes in flight: the last one's list, once
    ids = Array.isArray(ids) ? ids : [];
    message.textContent = ids.length ? ids.length + " batch" + (ids.length === 1 ? "" : "es") + " of yours" : "No batches of yours for this version.";
    for (const id of ids) {
      const item = el("li", {}, el("code", {}, String(id)), el("p", { className: "muted" }, "..."));
      list.appendChild(item);
      batchStatus(s, String(id), item);
    }
  }

  async function batchStatus(s, id, item) {
    let status;
    try {
      status = await apiJson("GET", servicePath(s) + "/batch/" + encodeURIComponent(id));
    } catch (e) {
      if (!(e instanceof SignedOut)) append(clear(item), [el("code", {}, id), el("p", { className: "error" }, e.message)]);
      return;
    }
    const done = Number(status.completedItemCount) || 0;
    const total = Number(status.totalItemCount) || 0;
    const stateName = String(status.state || "unknown");
    const kind = stateName === "Complete" ? "pass" : stateName === "Failed" ? "fail" : "warn";
    append(clear(item), [
      el("code", {}, id),
      el("p", {}, el("span", { className: "chip " + kind }, stateName), " ", done + " / " + total + " records"),
      el("progress", { max: String(Math.max(total, 1)), value: String(done), "aria-label": "Progress of batch " + id }),
    ]);
  }

  async function startBatch(event) {
    event.preventDefault();
    const s = state.selected;
    const message = $("batches-message");
    let records;
    try {
      records = JSON.parse($("batch-records").value);
    } catch (e) {
      message.textContent = "The records are not valid JSON: " + e.message;
      $("batch-records").focus();
      return;
    }
    const parallel = Number($("batch-parallel").value) || 1;
    try {
      const response = await api("POST", servicePath(s) + "/batch?parallelCount=" + encodeURIComponent(parallel), records);
      if (!response.ok) {
        message.textContent = "Refused (" + response.status + "): " + (await readError(response));
        return;
      }
    } catch (e) {
      if (!(e instanceof SignedOut)) message.textContent = "The batch could not start: " + e.message;
      return;
    }
    await loadBatches();
  }

  // ---- start ------------------------------------------------------------------------------

  function enterApp() {
    show($("sign-in"), false);
    say($("sign-in-message"), "", "error");
    $("who-name").textContent = "Signed in as " + state.session.user;
    show($("who"), true);
    show($("app"), true);
    loadHealth();
    loadCatalog();
  }

  async function onLogin(event) {
    event.preventDefault();
    const button = $("sign-in-button");
    const username = $("username").value.trim();
    const password = $("password").value;
    if (!username || !password) {
      say($("sign-in-message"), "Enter your user name and password.", "error");
      return;
    }
    button.disabled = true;
    try {
      await signInLocal(username, password);
      $("password").value = "";
      enterApp();
      $("main").focus();
    } catch (e) {
      say($("sign-in-message"), "Sign-in failed: " + e.message, "error");
      $("password").focus();
    } finally {
      button.disabled = false;
    }
  }

  async function start() {
    $("login-form").addEventListener("submit", onLogin);
    $("sign-out").addEventListener("click", () => { signOut(); });
    $("entra-sign-in").addEventListener("click", signInEntra);
    $("health-refresh").addEventListener("click", loadHealth);
    $("catalog-refresh").addEventListener("click", loadCatalog);
    $("catalog-filter").addEventListener("input", renderCatalog);
    $("try-form").addEventListener("submit", runTry);
    $("batches-refresh").addEventListener("click", loadBatches);
    $("batch-form").addEventListener("submit", startBatch);
    state.session = loadSession();
    await setUpEntra();
    if (state.session && state.session.accessToken) enterApp();
    else show($("sign-in"), true);
  }

  start();
})();
