// The dashboard's behaviour. Tasks change only when the server says so: one Server-Sent Events stream
// (/v1/stream) carries every state change of the tasks in flight; nothing is re-fetched on a timer.
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("config").textContent);
  const models = new Map(config.models.map((model) => [model.name, model]));
  const TERMINAL = new Set(["ready", "failed", "canceled", "expired"]);
  const RANK = { queued: 0, submitted: 1, downloading: 2, ready: 3, failed: 3, canceled: 3, expired: 3 };
  const STEPS = ["queued", "submitted", "downloading", "ready"];
  const EVENTS = ["queued", "submitted", "downloading", "ready", "failed", "canceled", "expired", "progress"];
  const LIST_LIMIT = 50;
  const TOKEN_KEY = "wanhook.token";
  const STREAM_RETRY_SECONDS = 15; // after a refused stream (about the servers' Retry-After)

  const $ = (id) => document.getElementById(id);
  const list = $("tasks");
  const tasks = new Map(); // id -> latest task JSON
  const cards = new Map(); // id -> its <li>
  const reached = new Map(); // id -> {status: ISO time the page learnt of it}
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let source = null;
  let followed = new Set();
  let statsPending = null;
  let statsStale = false; // asked for while a request was on its way, which may have read too early

  // --- talking to the API ---------------------------------------------------------------------

  class Unauthorized extends Error {}

  async function api(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, { ...options, headers });
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    if (response.status === 401) throw new Unauthorized();
    if (!response.ok) {
      const error = (body && body.error) || {};
      const failure = new Error(error.message || `HTTP ${response.status}`);
      failure.field = error.field;
      throw failure;
    }
    return body;
  }

  // EventSource and <video> cannot send a header: the API takes the token from the query for reads.
  function withToken(path) {
    if (!token) return path;
    return `${path}${path.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(token)}`;
  }

  // --- formatting -----------------------------------------------------------------------------

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  function bytes(count) {
    if (count === null || count === undefined) return "?";
    if (count < 1024) return `${count} B`;
    if (count < 1024 * 1024) return `${(count / 1024).toFixed(1)} KB`;
    return `${(count / 1024 / 1024).toFixed(2)} MB`;
  }

  function clock(iso) {
    if (!iso) return "";
    const when = new Date(iso);
    return Number.isNaN(when.getTime()) ? "" : when.toLocaleTimeString([], { hour12: false });
  }

  function sizeLabel(size, tier) {
    if (!size.includes("*")) return size; // an image task's tier: its size follows the image
    const [width, height] = size.split("*").map(Number);
    const shape = width > height ? "landscape" : width < height ? "portrait" : "square";
    return `${width}×${height} · ${shape}${tier ? ` · ${tier}` : ""}`;
  }

  function announce(text) {
    $("announce").textContent = text;
  }

  // --- the form: only what the chosen model accepts can be picked ----------------------------------

  const form = $("compose");
  const fields = $("compose-fields");
  const modelSelect = $("model");
  const sizeSelect = $("size");
  const durationSelect = $("duration");
  const prompt = $("prompt");
  const callback = $("callback");
  const composeError = $("compose-error");
  const kindSelect = $("kind");
  const resolutionSelect = $("resolution");
  const imageInputs = { img_url: $("image"), first_frame_url: $("first-frame"), last_frame_url: $("last-frame") };
  const KIND_IMAGES = { t2v: [], i2v: ["img_url"], kf2v: ["first_frame_url", "last_frame_url"] };
  const DEFAULT_MODELS = config.default_models;

  // Choosing a kind shows only its fields and its models.
  function fillKind() {
    const kind = kindSelect.value;
    for (const part of document.querySelectorAll("#compose [data-kinds]")) part.hidden = !part.dataset.kinds.split(" ").includes(kind);
    for (const option of modelSelect.options) option.hidden = option.dataset.kind !== kind;
    if (modelSelect.selectedOptions[0].dataset.kind !== kind) modelSelect.value = DEFAULT_MODELS[kind];
    fillModel();
  }

  function readImage(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error(`${file.name} could not be read`));
      reader.readAsDataURL(file);
    });
  }

  function fillModel() {
    const model = models.get(modelSelect.value);
    const previousResolution = resolutionSelect.value;
    resolutionSelect.replaceChildren(...model.resolutions.map((tier) => el("option", { value: tier, text: tier })));
    if (model.resolutions.length) {
      // The smallest, quickest tier unless the one chosen before is offered.
      resolutionSelect.value = model.resolutions.includes(previousResolution) ? previousResolution : model.resolutions[0];
    }
    const previousSize = sizeSelect.value;
    sizeSelect.replaceChildren();
    for (const [tier, sizes] of Object.entries(model.tiers)) {
      const group = el("optgroup", { label: tier });
      for (const size of sizes) group.append(el("option", { value: size, text: sizeLabel(size) }));
      sizeSelect.append(group);
    }
    const sizes = Object.values(model.tiers).flat();
    // Keep the size across models when the new one offers it; otherwise the smallest, quickest one.
    if (sizes.length) sizeSelect.value = sizes.includes(previousSize) ? previousSize : sizes[0];
    const previousDuration = Number(durationSelect.value);
    durationSelect.replaceChildren(...model.durations.map((seconds) => el("option", { value: seconds, text: `${seconds}\u00a0s` })));
    durationSelect.value = model.durations.includes(previousDuration) ? previousDuration : model.default_duration;
    prompt.maxLength = model.prompt_max;
    countPrompt();
  }

  function countPrompt() {
    const model = models.get(modelSelect.value);
    $("prompt-count").textContent = `${prompt.value.length} / ${model.prompt_max} characters`;
  }

  function showFormError(message, field) {
    composeError.textContent = message || "";
    for (const input of [prompt, sizeSelect, durationSelect, modelSelect, callback, resolutionSelect, ...Object.values(imageInputs)]) {
      input.removeAttribute("aria-invalid");
    }
    const input = { prompt, size: sizeSelect, duration: durationSelect, model: modelSelect, callback, "callback.url": callback,
                    resolution: resolutionSelect, ...imageInputs }[field];
    if (input) {
      input.setAttribute("aria-invalid", "true");
      if (input === callback) callback.closest("details").open = true;
      input.focus();
    }
  }

  async function submit(event) {
    event.preventDefault();
    const kind = kindSelect.value;
    const model = models.get(modelSelect.value);
    if (!prompt.value.trim() && model.prompt_required) {
      showFormError("Write a prompt first.", "prompt");
      return;
    }
    const body = { prompt: prompt.value.trim(), model: modelSelect.value, duration: Number(durationSelect.value) };
    if (kind === "t2v") body.size = sizeSelect.value;
    else {
      body.kind = kind;
      body.resolution = resolutionSelect.value;
      for (const field of KIND_IMAGES[kind]) {
        const file = imageInputs[field].files[0];
        if (!file) {
          showFormError("Choose an image first.", field);
          return;
        }
        try {
          body[field] = await readImage(file);
        } catch (error) {
          showFormError(error.message, field);
          return;
        }
      }
    }
    if (callback.value.trim()) body.callback = { url: callback.value.trim() };
    const button = $("submit");
    button.disabled = true;
    showFormError("");
    try {
      const task = await api("/v1/tasks", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      prompt.value = "";
      for (const input of Object.values(imageInputs)) input.value = "";
      countPrompt();
      show(task);
      follow();
      refreshStats();
      announce(`Task created: ${task.prompt}. It is ${task.status}.`);
      prompt.focus();
    } catch (error) {
      if (error instanceof Unauthorized) askForToken("The token was refused.");
      else showFormError(error.message, error.field);
    } finally {
      button.disabled = false;
    }
  }

  // --- one task card ------------------------------------------------------------------------------

  function card(task) {
    let item = cards.get(task.id);
    if (item) return item;
    const model = task.model || "";
    const size = (task.parameters && (task.parameters.size || task.parameters.resolution)) || "";
    const duration = task.parameters && task.parameters.duration;
    item = el("li", { class: "task", id: `task-${task.id}`, "data-id": task.id });
    const heading = el("h3", { class: "prompt", id: `prompt-${task.id}`, text: task.prompt || "" });
    const meta = el("p", { class: "meta" },
      [model, size && sizeLabel(size), duration ? `${duration}\u00a0s` : "", `created ${clock(task.created_at)}`]
        .filter(Boolean).join(" · "), " · ", el("code", { title: task.id, text: task.id.slice(0, 8) }));
    const steps = el("ol", { class: "steps", "aria-label": "States" },
      ...STEPS.map((step) => el("li", { "data-step": step }, step, el("time"))));
    item.append(el("article", { "aria-labelledby": `prompt-${task.id}` },
      el("header", { class: "task-head" }, el("span", { class: "badge" }), heading),
      meta, steps, el("div", { class: "state" }), el("section", { class: "callbacks", hidden: true })));
    cards.set(task.id, item);
    // Newest first: a card goes before the first older one.
    const later = [...list.children].find((other) => {
      const known = tasks.get(other.dataset.id);
      return known && known.created_at < task.created_at;
    });
    list.insertBefore(item, later || null);
    return item;
  }

  function show(task, eventName) {
    const known = tasks.get(task.id);
    // States only move forward; an older snapshot (a reconnection overlapping a change) is dropped.
    if (known && RANK[task.status] < RANK[known.status]) return;
    if (known && eventName === "task.progress" && known.status !== "downloading") return;
    const changed = !known || known.status !== task.status;
    if (known && !task.callbacks && !task.deliveries) {
      task.callbacks = known.callbacks || known.deliveries;
    }
    tasks.set(task.id, task);
    list.querySelector(".placeholder")?.remove();
    const item = card(task);
    item.dataset.status = task.status;
    item.querySelector(".badge").textContent = task.status;
    const times = reached.get(task.id) || {};
    if (!times[task.status]) times[task.status] = task.updated_at;
    reached.set(task.id, times);
    renderSteps(item, task, times);
    if (changed) renderState(item, task);
    else if (task.status === "downloading") renderProgress(item, task);
    renderCallbacks(item, task);
  }

  // Which states a task went through, from what it carries: a DashScope task id means it was
  // submitted, DashScope's SUCCEEDED that its video was downloaded (or tried).
  function passed(task, step) {
    const ds = task.dashscope || {};
    if (step === "queued") return true;
    if (step === "submitted") return Boolean(ds.task_id) || ["submitted", "downloading", "ready"].includes(task.status);
    if (step === "downloading") return ds.status === "SUCCEEDED" || ["downloading", "ready"].includes(task.status);
    return TERMINAL.has(task.status);
  }

  function renderSteps(item, task, times) {
    if (!times.queued) times.queued = task.created_at;
    for (const step of item.querySelectorAll(".steps li")) {
      const name = step.dataset.step === "ready" && TERMINAL.has(task.status) ? task.status : step.dataset.step;
      const done = passed(task, step.dataset.step);
      // The last step names how the task ended.
      step.firstChild.textContent = name;
      step.classList.toggle("done", done);
      step.classList.toggle("current", name === task.status);
      step.querySelector("time").textContent = done ? clock(times[name]) : "";
    }
  }

  function cancelButton(task) {
    const button = el("button", { type: "button", class: "secondary", text: "Cancel" });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        show(await api(`/v1/tasks/${task.id}/cancel`, { method: "POST" }));
        refreshStats();
      } catch (error) {
        if (error instanceof Unauthorized) askForToken("The token was refused.");
        else button.replaceWith(el("span", { class: "hint", text: error.message }));
      }
    });
    return button;
  }

  // An ended task can be deleted with its video (DELETE /v1/tasks/{id}); its card goes with it.
  function deleteButton(task, item) {
    const button = el("button", { type: "button", class: "secondary", text: "Delete" });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api(`/v1/tasks/${task.id}`, { method: "DELETE" });
        tasks.delete(task.id);
        reached.delete(task.id);
        item.remove();
        announce(`Task “${task.prompt}” was deleted.`);
        refreshStats();
      } catch (error) {
        if (error instanceof Unauthorized) askForToken("The token was refused.");
        else button.replaceWith(el("span", { class: "hint", text: error.message }));
      }
    });
    return button;
  }

  function renderState(item, task) {
    const state = item.querySelector(".state");
    const ds = (task.dashscope && task.dashscope.task_id) || "";
    switch (task.status) {
      case "queued": {
        const model = task.model || "";
        state.replaceChildren(el("div", { class: "actions" },
          el("p", { text: `Waiting for a free ${model} slot at DashScope.` }), cancelButton(task)));
        break;
      }
      case "submitted":
        state.replaceChildren(el("div", { class: "actions" },
          el("p", {}, "Rendering at DashScope", ds ? " as " : "", ds ? el("code", { text: ds }) : "",
            ". Waiting for the completion event."), cancelButton(task)));
        break;
      case "downloading": {
        const label = el("p", { class: "progress-label", id: `progress-${task.id}` });
        state.replaceChildren(label, el("progress", { max: 1, "aria-labelledby": `progress-${task.id}` }));
        renderProgress(item, task);
        break;
      }
      case "ready":
        state.replaceChildren(...readyView(task));
        break;
      case "failed":
      case "expired": {
        const error = task.error || {};
        state.replaceChildren(el("p", { class: "error", role: "note" },
          el("strong", { class: "error-code", text: error.code || task.status }),
          el("span", { class: "error-message", text: error.message || "" })));
        break;
      }
      case "canceled":
        state.replaceChildren(el("p", { text: "Canceled." }));
        break;
      default:
        state.replaceChildren();
    }
    if (TERMINAL.has(task.status)) {
      state.append(el("div", { class: "actions" }, deleteButton(task, item)));
      announce(`Task “${task.prompt}” is ${task.status}.`);
    }
  }

  function renderProgress(item, task) {
    const bar = item.querySelector(".state progress");
    const label = item.querySelector(".state .progress-label");
    if (!bar || !label) return;
    const progress = task.progress;
    if (!progress) {
      bar.removeAttribute("value");
      label.textContent = "Downloading the video from DashScope's storage…";
      return;
    }
    if (progress.total) {
      bar.max = progress.total;
      bar.value = progress.bytes;
      const percent = Math.floor((100 * progress.bytes) / progress.total);
      label.textContent = `Downloading: ${bytes(progress.bytes)} of ${bytes(progress.total)} (${percent}%)`;
    } else {
      bar.removeAttribute("value");
      label.textContent = `Downloading: ${bytes(progress.bytes)}`;
    }
  }

  function readyView(task) {
    if (!task.video && task.video_removed) {
      return [el("p", { class: "hint", text: `Video removed: ${task.video_removed.message || task.video_removed.reason}` })];
    }
    const video = task.video || {};
    const url = withToken(video.url || `/v1/tasks/${task.id}/video`);
    const player = el("video", {
      controls: true, preload: "metadata", playsinline: true, src: url, "aria-label": `Video: ${task.prompt}`,
    });
    const size = (task.parameters && task.parameters.size) || "";
    if (size) {
      const [width, height] = size.split("*");
      player.width = Number(width);
      player.height = Number(height);
    }
    const duration = el("span", { class: "duration", text: "duration …" });
    player.addEventListener("loadedmetadata", () => {
      duration.textContent = `${player.duration.toFixed(1)}\u00a0s`;
      player.dataset.duration = String(player.duration);
    });
    player.addEventListener("error", () => { duration.textContent = "the video could not be loaded"; });
    const details = el("p", { class: "meta" }, duration, ` · ${bytes(video.bytes)}`,
      video.sha256 ? " · sha256 " : "", video.sha256 ? el("code", { title: video.sha256, text: `${video.sha256.slice(0, 12)}…` }) : "",
      " · ", el("a", { href: url, download: `${task.id}.mp4`, text: "Download" }));
    return [player, details];
  }

  function renderCallbacks(item, task) {
    const section = item.querySelector(".callbacks");
    if (!task.callback || !task.callback.url) {
      section.hidden = true;
      return;
    }
    section.hidden = false;
    const refresh = el("button", { type: "button", class: "secondary", text: "Refresh" });
    refresh.addEventListener("click", () => details(task.id));
    const heading = el("h4", {}, "Callbacks to ", el("code", { text: task.callback.url }), refresh);
    const deliveries = task.callbacks || task.deliveries;
    if (!Array.isArray(deliveries)) {
      const events = (task.callback.events || ["task.ready", "task.failed", "task.canceled", "task.expired"]).join(", ");
      section.replaceChildren(heading, el("p", { class: "hint", text: `On ${events}.` }));
      return;
    }
    const rows = deliveries.length
      ? deliveries.map((delivery) => el("li", { class: "delivery" },
        el("span", { text: delivery.event || "" }),
        el("span", { class: "delivery-status", "data-status": delivery.status, text: delivery.status || "" }),
        el("span", { text: `${delivery.attempts ?? 0} attempt${delivery.attempts === 1 ? "" : "s"}` }),
        delivery.last_outcome ? el("span", { class: "hint", text: delivery.last_outcome }) : null,
        delivery.next_attempt_at ? el("span", { class: "hint", text: `next at ${clock(delivery.next_attempt_at)}` }) : null))
      : [el("li", { class: "hint", text: "No delivery yet." })];
    section.replaceChildren(heading, el("ul", { "aria-label": "Deliveries" }, ...rows));
  }

  // The list and the stream leave out the deliveries; the task itself has them.
  async function details(id) {
    try {
      show(await api(`/v1/tasks/${id}`));
    } catch (error) {
      if (error instanceof Unauthorized) askForToken("The token was refused.");
    }
  }

  // --- live: one stream for every task in flight ---------------------------------------------------

  function setConnection(state, text) {
    const node = $("connection");
    node.dataset.state = state;
    node.textContent = text;
  }

  function follow() {
    const live = [...tasks.values()].filter((task) => !TERMINAL.has(task.status)).map((task) => task.id);
    if (!live.length) {
      if (source) source.close();
      source = null;
      followed = new Set();
      setConnection("idle", "Live · no task in flight");
      return;
    }
    // The stream (open, or ended by the server) already covers every task in flight.
    if (live.every((id) => followed.has(id))) return;
    if (source) source.close();
    followed = new Set(live);
    source = new EventSource(withToken(`/v1/stream?tasks=${live.map(encodeURIComponent).join(",")}`));
    const current = source;
    for (const name of EVENTS) current.addEventListener(`task.${name}`, onEvent);
    current.addEventListener("end", () => {
      current.close();
      if (current === source) source = null;
      setConnection("idle", "Live · no task in flight");
    });
    current.addEventListener("open", () => setConnection("live", `Live · following ${followed.size} task${followed.size === 1 ? "" : "s"}`));
    current.addEventListener("error", () => {
      if (current !== source) return;
      if (current.readyState !== EventSource.CLOSED) {
        setConnection("reconnecting", "Reconnecting…");
        return;
      }
      // Refused (the server's or this token's streams are at their cap: 503 or 429), and EventSource
      // does not retry an HTTP error by itself: try again a little later.
      setConnection("closed", `Stream closed · retrying in ${STREAM_RETRY_SECONDS} s`);
      setTimeout(() => {
        if (current !== source) return;
        source = null;
        followed = new Set();
        follow();
      }, STREAM_RETRY_SECONDS * 1000);
    });
  }

  function onEvent(event) {
    const task = JSON.parse(event.data);
    const before = tasks.get(task.id);
    show(task, event.type);
    if (event.type === "task.progress") return;
    if (!before || before.status !== task.status) {
      refreshStats();
      if (task.callback) details(task.id);
    }
    if (TERMINAL.has(task.status)) {
      followed.delete(task.id);
      if (!followed.size) follow();
    }
  }

  // --- counters ----------------------------------------------------------------------------------

  // Several events in a burst make at most two requests: the one on its way, and one after it.
  function refreshStats() {
    if (statsPending) {
      statsStale = true;
      return;
    }
    statsPending = Promise.resolve().then(async () => {
      try {
        renderStats(await api("/v1/stats"));
      } catch (error) {
        if (error instanceof Unauthorized) askForToken("The token was refused.");
      } finally {
        statsPending = null;
        if (statsStale) {
          statsStale = false;
          refreshStats();
        }
      }
    });
  }

  function renderStats(stats) {
    const counts = stats.tasks || {};
    for (const status of ["queued", "submitted", "downloading", "ready"]) $(`count-${status}`).textContent = counts[status] ?? 0;
    $("count-failed").textContent = (counts.failed ?? 0) + (counts.expired ?? 0);
    const running = Object.entries(stats.models || {});
    const selected = modelSelect.value;
    // The chosen model always, and any other with a task at DashScope.
    const shown = running.filter(([name, model]) => name === selected || model.running > 0);
    $("quota").replaceChildren(...shown.map(([name, model]) =>
      el("span", { class: "quota-line", text: `${name}: ${model.running} of ${model.limit}` })));
  }

  // --- token --------------------------------------------------------------------------------------

  function askForToken(message) {
    if (source) source.close();
    source = null;
    followed = new Set();
    $("signin").hidden = false;
    form.hidden = true;
    $("signin-error").textContent = message || "";
    if (message) $("token").setAttribute("aria-invalid", "true");
    else $("token").removeAttribute("aria-invalid");
    $("signout").hidden = true;
    setConnection("closed", "Token needed");
    $("token").focus();
  }

  $("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    load();
  });

  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    token = "";
    tasks.clear();
    cards.clear();
    list.replaceChildren();
    askForToken("");
  });

  // --- start ---------------------------------------------------------------------------------------

  async function load() {
    if (config.auth && !token) {
      askForToken("");
      return;
    }
    let page;
    try {
      page = await api(`/v1/tasks?limit=${LIST_LIMIT}`);
    } catch (error) {
      if (error instanceof Unauthorized) askForToken(token ? "That token was refused." : "");
      else setConnection("closed", `Cannot load the tasks: ${error.message}`);
      return;
    }
    $("signin").hidden = true;
    form.hidden = false;
    $("signout").hidden = !token;
    $("counters-note").hidden = !config.auth;
    fields.hidden = false;
    tasks.clear();
    cards.clear();
    list.replaceChildren();
    for (const task of page.tasks) show(task);
    if (!page.tasks.length) list.append(el("li", { class: "placeholder", text: "No tasks yet. Write a prompt to create one." }));
    follow();
    refreshStats();
    for (const task of page.tasks) if (task.callback) details(task.id);
  }

  modelSelect.addEventListener("change", () => { fillModel(); refreshStats(); });
  kindSelect.addEventListener("change", () => { fillKind(); refreshStats(); });
  prompt.addEventListener("input", countPrompt);
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  form.addEventListener("submit", submit);
  // A page kept in the back-forward cache would otherwise hold its stream open on the server.
  window.addEventListener("pagehide", () => {
    if (source) source.close();
    source = null;
    followed = new Set();
  });
  window.addEventListener("pageshow", (event) => { if (event.persisted) load(); });
  fillKind();
  setConnection("idle", "Connecting…");
  load();
})();
