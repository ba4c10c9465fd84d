// The playground page: state from /_playground, live updates by server-sent events,
// slash commands typed in the box, buttons and modals sent back as interactions.
"use strict";

const API = "/_playground";
const page = {
  me: null,
  channel: null,
  state: null,
  users: {},
  messages: new Map(),
  breaches: [],
  suggestions: [],
  active: -1,
  autocomplete: { key: "", items: [] },
};

const $ = (id) => document.getElementById(id);

async function call(method, path, body) {
  const response = await fetch(API + path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = response.status === 204 ? {} : await response.json();
  if (!response.ok) throw new Error(data.error || `${response.status}`);
  return data;
}

// ---- loading and live updates ----

async function loadState() {
  page.state = await call("GET", "/state");
  page.users = Object.fromEntries(page.state.users.map((u) => [u.id, u]));
  $("guild-name").textContent = page.state.guild.name;
  setBotStatus(page.state.bot.connected);
  renderUserSwitcher();
  renderChannels();
}

async function loadMessages() {
  const data = await call("GET", `/channels/${page.channel.id}/messages`);
  page.messages = new Map(data.messages.map((m) => [m.id, m]));
  renderMessages();
}

function listen(after) {
  const source = new EventSource(`${API}/events/stream?after=${after}`);
  const onMessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.channel_id !== page.channel.id) return;
    if (event.type === "message_delete") page.messages.delete(msg.id);
    else page.messages.set(msg.id, msg);
    renderMessage(msg, event.type === "message_create");
  };
  for (const kind of ["message_create", "message_update", "message_delete"]) source.addEventListener(kind, onMessage);
  source.addEventListener("breach", (event) => addBreach(JSON.parse(event.data)));
  source.addEventListener("modal_open", (event) => {
    const data = JSON.parse(event.data);
    if (data.user_id === page.me.id) openModal(data.modal);
  });
  source.addEventListener("interaction_update", (event) => {
    const data = JSON.parse(event.data);
    if (data.status === "missed" && data.user_id === page.me.id) noteFailure(data);
  });
  source.addEventListener("commands_update", () => loadState());
  source.addEventListener("thread_create", () => loadState());
  source.addEventListener("gateway", (event) => {
    const state = JSON.parse(event.data).state;
    setBotStatus(state === "ready" || state === "resumed");
  });
}

// ---- rendering ----

function setBotStatus(online) {
  const node = $("bot-status");
  node.className = `bot-status ${online ? "online" : "offline"}`;
  node.textContent = online ? "bot online" : "bot offline";
}

function renderUserSwitcher() {
  const select = $("user-switcher");
  select.replaceChildren(...page.state.users.map((u) => new Option(u.display_name, u.id)));
  const saved = localStorage.getItem("playground-user");
  page.me = page.state.users.find((u) => u.id === (page.me ? page.me.id : saved)) || page.state.users[0];
  select.value = page.me.id;
  const mark = (has, name) => (has ? `✔ ${name}` : `✘ no ${name}`);
  $("me-permissions").textContent =
    `${mark(page.me.manage_guild, "Manage Server")} · ${mark(page.me.manage_messages, "Manage Messages")}`;
}

function renderChannels() {
  page.channel = page.channel || page.state.channels[0];
  // Threads (type 11) are listed under their parent channel, as Discord's sidebar shows them.
  const threadsOf = (parent) => page.state.channels.filter((c) => c.type === 11 && c.parent_id === parent.id);
  const channelButton = (channel, thread) => {
    const active = channel.id === page.channel.id ? "active" : "";
    const button = Render.el("button", thread ? `thread ${active}` : active, thread ? `🧵 ${channel.name}` : `# ${channel.name}`);
    button.type = "button";
    button.addEventListener("click", () => switchChannel(channel));
    return button;
  };
  const buttons = page.state.channels
    .filter((channel) => channel.type !== 11)
    .flatMap((channel) => [channelButton(channel, false), ...threadsOf(channel).map((t) => channelButton(t, true))]);
  $("channels").replaceChildren(...buttons);
  $("channel-name").textContent = page.channel.name;
  const parent = page.state.channels.find((c) => c.id === page.channel.parent_id);
  $("channel-topic").textContent = parent ? `a thread in #${parent.name}: /tale add writes the story on` : page.channel.topic;
}

function visible(msg) {
  return !msg.deleted && (!msg.visible_to || msg.visible_to === page.me.id);
}

function messageNode(msg) {
  const node = Render.message(msg, { users: page.users, onComponent: (customId, values, node) => press(msg, customId, values, node) });
  if (msg.thread) {
    // A message with a thread links to it, as in Discord.
    const link = Render.el("button", "thread-link", `🧵 ${msg.thread.name} — open thread`);
    link.type = "button";
    link.addEventListener("click", () => {
      const thread = page.state.channels.find((c) => c.id === msg.thread.id);
      if (thread) switchChannel(thread);
    });
    node.append(link);
  }
  return node;
}

function renderMessages() {
  const list = $("messages");
  const shown = [...page.messages.values()].filter(visible).sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
  list.replaceChildren(...shown.map(messageNode));
  list.scrollTop = list.scrollHeight;
}

function renderMessage(msg, isNew) {
  const list = $("messages");
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const old = list.querySelector(`[data-id="${msg.id}"]`);
  if (!visible(msg)) {
    if (old) old.remove();
    return;
  }
  const node = messageNode(msg);
  if (old) old.replaceWith(node);
  else if (isNew || !old) list.append(node);
  if (nearBottom || isNew) list.scrollTop = list.scrollHeight;
}

function noteFailure(interaction) {
  const note = Render.el("div", "system-note", `⚠ ${page.state.bot.name} did not respond in time: "This interaction failed".`);
  $("messages").append(note);
}

function addBreach(breach) {
  page.breaches.push(breach);
  $("breaches").hidden = false;
  $("breaches-toggle").textContent =
    `⚠ ${page.breaches.length} Discord rule${page.breaches.length === 1 ? "" : "s"} broken by the bot (click for details)`;
  const item = Render.el("li");
  item.append(Render.el("strong", null, breach.rule), " — ", breach.detail, " ", Render.el("code", null, breach.route));
  $("breach-list").append(item);
}

// ---- acting as a user ----

async function press(msg, customId, values, node) {
  node.classList.add("busy");
  try {
    await call("POST", "/interactions", { type: "component", user: page.me.id, message_id: msg.id, custom_id: customId, values });
  } catch (error) {
    showError(error.message);
  } finally {
    node.classList.remove("busy");
  }
}

async function runCommand(text) {
  const parsed = Commands.parse(text.trim() + " ", myCommands());
  if (!parsed.command) throw new Error(text.startsWith("/") ? `No command ${text.split(/\s/)[0]}` : "Type / to use a command.");
  const command = [parsed.command.name, ...parsed.path].join(" ");
  await call("POST", "/interactions", {
    type: "command", user: page.me.id, channel: page.channel.id, command, options: parsed.options,
  });
}

function showError(message) {
  const box = $("composer-error");
  box.textContent = message || "";
  box.hidden = !message;
}

// ---- the command box ----

// Discord lists only the commands whose default_member_permissions the member holds.
function myCommands() {
  const held = BigInt(page.me.permissions);
  const ADMINISTRATOR = 1n << 3n;
  return page.state.commands.filter((command) => {
    if (command.default_member_permissions === null || command.default_member_permissions === undefined) return true;
    const needed = BigInt(command.default_member_permissions);
    return (held & ADMINISTRATOR) !== 0n || (needed !== 0n && (held & needed) === needed);
  });
}

function refreshSuggestions() {
  const text = $("command-input").value;
  const commands = myCommands();
  const parsed = Commands.parse(text, commands);
  let items = Commands.suggest(text, parsed, commands);
  const option = parsed.focused && parsed.leafOptions.find((o) => o.name === parsed.focused);
  if (option && option.autocomplete) {
    items = autocompleteItems(text, parsed).concat(items.slice(1));
    requestAutocomplete(text, parsed);
  }
  page.suggestions = items;
  page.active = items.findIndex((item) => item.insert !== null);
  renderSuggestions();
}

function autocompleteItems(text, parsed) {
  const base = text.slice(0, text.length - parsed.word.length);
  return page.autocomplete.items.map((c) => ({ label: c.name, hint: String(c.value), insert: `${base}${c.value} ` }));
}

let autocompleteTimer = null;
function requestAutocomplete(text, parsed) {
  const key = `${parsed.command.name}|${parsed.path.join(" ")}|${parsed.focused}|${parsed.word}`;
  if (key === page.autocomplete.key) return;
  clearTimeout(autocompleteTimer);
  autocompleteTimer = setTimeout(async () => {
    try {
      const data = await call("POST", "/interactions", {
        type: "autocomplete", user: page.me.id, channel: page.channel.id,
        command: [parsed.command.name, ...parsed.path].join(" "), options: parsed.options, focused: parsed.focused,
      });
      page.autocomplete = { key, items: data.interaction.choices || [] };
      if ($("command-input").value === text) refreshSuggestions();
    } catch (error) {
      page.autocomplete = { key, items: [] };
    }
  }, 200);
}

function renderSuggestions() {
  const list = $("suggestions");
  list.hidden = page.suggestions.length === 0;
  list.replaceChildren(...page.suggestions.map((item, i) => {
    const li = Render.el("li", `${i === page.active ? "active" : ""} ${item.insert === null ? "heading" : ""}`);
    li.append(Render.el("span", "name", item.label), Render.el("span", "hint", item.hint));
    if (item.insert !== null) li.addEventListener("mousedown", (event) => { event.preventDefault(); pick(i); });
    return li;
  }));
}

function pick(index) {
  const item = page.suggestions[index];
  if (!item || item.insert === null) return;
  $("command-input").value = item.insert;
  refreshSuggestions();
}

function moveActive(step) {
  const choices = page.suggestions.map((item, i) => (item.insert !== null ? i : -1)).filter((i) => i >= 0);
  if (!choices.length) return;
  const at = choices.indexOf(page.active);
  page.active = choices[(at + step + choices.length) % choices.length];
  renderSuggestions();
}

// ---- modals ----

function modalInputs(components) {
  const inputs = [];
  for (const component of components) {
    if (component.type === 1) for (const child of component.components || []) inputs.push({ input: child, label: child.label });
    else if (component.type === 18 && component.component) {
      inputs.push({ input: component.component, label: component.label, description: component.description });
    }
  }
  return inputs.filter((item) => item.input.type === 4);
}

function openModal(modal) {
  const dialog = $("modal");
  $("modal-title").textContent = modal.title;
  const fields = modalInputs(modal.components || []).map(({ input, label, description }) => {
    const wrap = Render.el("div");
    const id = `modal-${input.custom_id}`;
    const title = Render.el("label", null, label || input.custom_id);
    title.htmlFor = id;
    const field = Render.el(input.style === 2 ? "textarea" : "input");
    Object.assign(field, { id, name: input.custom_id, placeholder: input.placeholder || "", value: input.value || "" });
    field.required = input.required !== false;
    if (input.min_length) field.minLength = input.min_length;
    if (input.max_length) field.maxLength = input.max_length;
    wrap.append(title);
    if (description) wrap.append(Render.el("div", "description", description));
    wrap.append(field);
    return wrap;
  });
  $("modal-fields").replaceChildren(...fields);
  dialog.dataset.customId = modal.custom_id;
  dialog.showModal();
}

async function submitModal(event) {
  event.preventDefault();
  const dialog = $("modal");
  const values = Object.fromEntries(new FormData($("modal-form")).entries());
  dialog.close();
  try {
    await call("POST", "/interactions", { type: "modal", user: page.me.id, custom_id: dialog.dataset.customId, values });
  } catch (error) {
    showError(error.message);
  }
}

// ---- wiring ----

async function switchChannel(channel) {
  page.channel = channel;
  renderChannels();
  await loadMessages();
}

function wire() {
  const input = $("command-input");
  input.addEventListener("input", () => { showError(""); refreshSuggestions(); });
  input.addEventListener("focus", refreshSuggestions);
  input.addEventListener("blur", () => { $("suggestions").hidden = true; });
  input.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      moveActive(event.key === "ArrowDown" ? 1 : -1);
    } else if (event.key === "Tab" && page.active >= 0) {
      event.preventDefault();
      pick(page.active);
    }
  });
  $("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("suggestions").hidden = true;
    try {
      await runCommand(input.value);
      input.value = "";
    } catch (error) {
      showError(error.message);
    }
  });
  $("user-switcher").addEventListener("change", (event) => {
    page.me = page.state.users.find((u) => u.id === event.target.value);
    localStorage.setItem("playground-user", page.me.id);
    renderUserSwitcher();
    renderMessages();
  });
  $("breaches-toggle").addEventListener("click", () => { $("breach-list").hidden = !$("breach-list").hidden; });
  $("modal-form").addEventListener("submit", submitModal);
  $("modal-cancel").addEventListener("click", () => $("modal").close());
}

async function main() {
  wire();
  await loadState();
  await loadMessages();
  const breaches = await call("GET", "/breaches");
  breaches.breaches.forEach(addBreach);
  listen(page.state.last_event_seq);
}

main().catch((error) => showError(error.message));
