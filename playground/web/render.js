// Turning Discord message objects into DOM: content, embeds, attachments, components.
// Pure builders: they take data and callbacks, and touch no global state.
"use strict";

const Render = (() => {
  const EPHEMERAL = 1 << 6;
  const LOADING = 1 << 7;
  const BUTTON_STYLES = { 1: "primary", 2: "secondary", 3: "success", 4: "danger", 5: "link" };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  // The few Markdown forms Discord users meet most: code blocks, inline code, bold, italic, underline.
  function markdown(text) {
    const blocks = [];
    let html = escapeHtml(text).replace(/```(?:\w+\n)?([\s\S]*?)```/g, (_, code) => {
      blocks.push(`<pre>${code}</pre>`);
      return `\u0000${blocks.length - 1}\u0000`;
    });
    html = html
      .replace(/`([^`]+)`/g, "<code>$1</code>")
      .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
      .replace(/__([^_]+)__/g, "<u>$1</u>")
      .replace(/(^|[^*])\*([^*\n]+)\*/g, "$1<em>$2</em>")
      .replace(/(^|\W)_([^_\n]+)_(?=\W|$)/g, "$1<em>$2</em>");
    return html.replace(/\u0000(\d+)\u0000/g, (_, i) => blocks[Number(i)]);
  }

  function richText(className, text) {
    const node = el("div", className);
    node.innerHTML = markdown(text);
    return node;
  }

  function time(iso) {
    return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function colour(value) {
    return value === undefined || value === null ? "#1e1f22" : `#${value.toString(16).padStart(6, "0")}`;
  }

  // An embed image may name an attachment of the same message as attachment://file.png.
  function resolveUrl(url, attachments) {
    if (!url || !url.startsWith("attachment://")) return url;
    const name = url.slice("attachment://".length);
    const match = attachments.find((a) => a.filename === name);
    return match ? match.url : url;
  }

  function embed(data, attachments) {
    const box = el("div", "embed");
    box.style.borderLeftColor = colour(data.color);
    if (data.author && data.author.name) box.append(el("div", "embed-author", data.author.name));
    if (data.title) {
      const title = el("div", "embed-title");
      if (data.url) {
        const link = el("a", null, data.title);
        link.href = data.url;
        link.target = "_blank";
        title.append(link);
      } else {
        title.textContent = data.title;
      }
      box.append(title);
    }
    if (data.description) box.append(richText("embed-description", data.description));
    if (data.fields && data.fields.length) {
      const grid = el("div", "embed-fields");
      for (const field of data.fields) {
        const cell = el("div", field.inline ? "embed-field inline" : "embed-field");
        cell.append(el("div", "embed-field-name", field.name), richText("embed-field-value", field.value));
        grid.append(cell);
      }
      box.append(grid);
    }
    for (const key of ["image", "thumbnail"]) {
      if (data[key] && data[key].url) {
        const img = el("img", "embed-image");
        img.src = resolveUrl(data[key].url, attachments);
        img.alt = key;
        box.append(img);
      }
    }
    if (data.footer && data.footer.text) box.append(el("div", "embed-footer", data.footer.text));
    return box;
  }

  // Discord shows a file that an embed names as attachment://file only inside the embed.
  function embeddedFilenames(embeds) {
    const names = new Set();
    for (const item of embeds) {
      for (const key of ["image", "thumbnail"]) {
        const url = item[key] && item[key].url;
        if (url && url.startsWith("attachment://")) names.add(url.slice("attachment://".length));
      }
    }
    return names;
  }

  function attachment(data) {
    if ((data.content_type || "").startsWith("image/")) {
      const img = el("img", "attachment-image");
      img.src = data.url;
      img.alt = data.description || data.filename;
      return img;
    }
    const link = el("a", "attachment-file", `📄 ${data.filename} (${data.size} bytes)`);
    link.href = data.url;
    link.target = "_blank";
    return link;
  }

  // Buttons' emoji as text symbols that every font has: a machine without an emoji font would
  // show empty boxes. An emoji not listed here is left out (the label says what the button does).
  const BUTTON_SYMBOLS = { "➕": "+", "🔄": "↻", "⏹️": "■", "⏹": "■", "◀️": "◀", "▶️": "▶", "❓": "?", "🧵": "#" };

  function buttonSymbol(emoji) {
    if (!emoji || !emoji.name) return "";
    const symbol = BUTTON_SYMBOLS[emoji.name];
    return symbol ? symbol + " " : "";
  }

  function button(data, onComponent) {
    const style = BUTTON_STYLES[data.style] || "secondary";
    const label = `${buttonSymbol(data.emoji)}${data.label || ""}`.trim();
    if (style === "link") {
      const link = el("a", "button secondary", `${label} ↗`);
      link.href = data.url;
      link.target = "_blank";
      return link;
    }
    const node = el("button", `button ${style}`, label || "\u00a0");
    node.type = "button";
    node.disabled = Boolean(data.disabled);
    node.title = data.custom_id;
    node.addEventListener("click", () => onComponent(data.custom_id, [], node));
    return node;
  }

  function select(data, onComponent) {
    const node = el("select", "select");
    node.multiple = (data.max_values || 1) > 1;
    node.disabled = Boolean(data.disabled);
    const placeholder = el("option", null, data.placeholder || "Make a selection");
    placeholder.value = "";
    placeholder.disabled = true;
    placeholder.selected = true;
    node.append(placeholder);
    for (const option of data.options || []) {
      const item = el("option", null, option.label);
      item.value = option.value;
      item.title = option.description || "";
      node.append(item);
    }
    node.addEventListener("change", () => {
      const values = Array.from(node.selectedOptions).map((o) => o.value).filter(Boolean);
      onComponent(data.custom_id, values, node);
    });
    return node;
  }

  function components(rows, onComponent) {
    const out = [];
    for (const row of rows || []) {
      if (row.type !== 1) continue;
      const line = el("div", "action-row");
      for (const item of row.components || []) {
        if (item.type === 2) line.append(button(item, onComponent));
        else if (item.type === 3) line.append(select(item, onComponent));
      }
      out.push(line);
    }
    return out;
  }

  // One message. `onComponent(customId, values, node)` is called for clicks and selections.
  function message(msg, { onComponent, users }) {
    const row = el("article", "message");
    row.dataset.id = msg.id;
    const author = msg.author.global_name || msg.author.username;
    row.append(el("div", "avatar", author.slice(0, 1).toUpperCase()));
    const body = el("div", "body");
    if (msg.interaction_metadata) {
      const meta = msg.interaction_metadata;
      const who = users[meta.user.id] ? users[meta.user.id].display_name : meta.user.username;
      const reply = el("div", "reply-to");
      reply.append("↱ ", el("b", null, who), meta.name ? ` used /${meta.name}` : " pressed a button");
      body.append(reply);
    }
    const header = el("div");
    header.append(el("span", "author", author));
    if (msg.author.bot) header.append(el("span", "bot-tag", "BOT"));
    header.append(el("span", "time", time(msg.timestamp)));
    body.append(header);
    if (msg.flags & LOADING) {
      body.append(el("div", "thinking", `${author} is thinking`));
    } else if (msg.content) {
      body.append(richText("content", msg.content));
    }
    if (msg.edited_timestamp && !(msg.flags & LOADING)) header.append(el("span", "edited", "(edited)"));
    for (const item of msg.embeds || []) body.append(embed(item, msg.attachments || []));
    const inEmbeds = embeddedFilenames(msg.embeds || []);
    for (const item of msg.attachments || []) if (!inEmbeds.has(item.filename)) body.append(attachment(item));
    body.append(...components(msg.components, onComponent));
    if (msg.flags & EPHEMERAL) body.append(el("div", "ephemeral-note", "👁 Only you can see this"));
    row.append(body);
    return row;
  }

  return { el, message, markdown };
})();
