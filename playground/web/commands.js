// Reading what is typed in the command box against the commands the bot registered,
// and what to suggest next: commands, subcommands, options, choices.
// Syntax, as in Discord: /name [group] [subcommand] option: value other: value
"use strict";

const Commands = (() => {
  const SUB_COMMAND = 1;
  const SUB_COMMAND_GROUP = 2;
  const TYPE_NAMES = {
    3: "text", 4: "whole number", 5: "true/false", 6: "user", 7: "channel", 8: "role", 9: "user or role", 10: "number", 11: "file",
  };

  // Split "/story prompt: a fox length: 40" into the command, its subcommand path, and options.
  function parse(text, commands) {
    const result = { command: null, path: [], leafOptions: [], options: {}, focused: null, stage: "command", word: "" };
    if (!text.startsWith("/")) return result;
    const words = text.slice(1).split(/\s+/);
    const name = words[0] || "";
    result.word = name;
    if (words.length === 1) return result;
    result.command = commands.find((c) => c.name === name) || null;
    if (!result.command) return result;

    let options = result.command.options || [];
    let rest = text.slice(1 + name.length);
    while (options.some((o) => o.type === SUB_COMMAND || o.type === SUB_COMMAND_GROUP)) {
      const match = rest.match(/^\s+(\S*)(\s?)/);
      const word = match ? match[1] : "";
      const branch = options.find((o) => o.name === word);
      if (!branch || !match[2]) {
        result.stage = "subcommand";
        result.word = word;
        result.choices = options;
        return result;
      }
      result.path.push(word);
      options = branch.options || [];
      rest = rest.slice(match[0].length - 1);
    }
    result.leafOptions = options;
    parseOptions(rest, options, result);
    return result;
  }

  // Find "name:" markers of known options; each value runs to the next marker.
  // The last option named is the focused one: its value is what is being typed.
  function parseOptions(rest, options, result) {
    result.stage = "option";
    result.word = rest.trim();
    if (!options.length) return;
    const names = options.map((o) => o.name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const marker = new RegExp(`(?:^|\\s)(${names.join("|")}):\\s?`, "g");
    const found = [];
    let match;
    while ((match = marker.exec(rest)) !== null) found.push({ name: match[1], start: match.index, valueStart: marker.lastIndex });
    found.forEach((item, i) => {
      const end = i + 1 < found.length ? found[i + 1].start : rest.length;
      result.options[item.name] = rest.slice(item.valueStart, end).trim();
    });
    const last = found[found.length - 1];
    if (last) {
      result.stage = "value";
      result.focused = last.name;
      result.word = rest.slice(last.valueStart);
    }
  }

  function describeOption(option) {
    const parts = [TYPE_NAMES[option.type] || "value"];
    if (option.min_value !== undefined || option.max_value !== undefined) {
      parts.push(`${option.min_value ?? "…"} to ${option.max_value ?? "…"}`);
    }
    if (option.min_length !== undefined || option.max_length !== undefined) {
      parts.push(`${option.min_length ?? 0}–${option.max_length ?? "…"} characters`);
    }
    if (option.autocomplete) parts.push("suggestions from the bot");
    return `${option.required ? "required" : "optional"} · ${parts.join(", ")}${option.description ? " — " + option.description : ""}`;
  }

  // What to offer for the parsed input: [{label, hint, insert}] where insert replaces the input text.
  function suggest(text, parsed, commands) {
    if (!text.startsWith("/")) return [];
    if (parsed.stage === "command") {
      return commands
        .filter((c) => c.name.startsWith(parsed.word))
        .map((c) => ({ label: `/${c.name}`, hint: c.description, insert: `/${c.name} ` }));
    }
    if (parsed.stage === "subcommand") {
      const base = text.slice(0, text.length - parsed.word.length);
      return parsed.choices
        .filter((o) => o.name.startsWith(parsed.word))
        .map((o) => ({ label: o.name, hint: o.description, insert: `${base}${o.name} ` }));
    }
    const given = new Set(Object.keys(parsed.options));
    const remaining = parsed.leafOptions.filter((o) => !given.has(o.name));
    if (parsed.stage === "value") {
      const option = parsed.leafOptions.find((o) => o.name === parsed.focused);
      const base = text.slice(0, text.length - parsed.word.length);
      const typed = parsed.word.trim().toLowerCase();
      let values = [{ label: option.name, hint: describeOption(option), insert: null }];
      if (option.choices && option.choices.length) {
        values = option.choices
          .filter((c) => c.name.toLowerCase().includes(typed))
          .map((c) => ({ label: c.name, hint: String(c.value), insert: `${base}${c.value} ` }));
      } else if (option.type === 5) {
        values = ["true", "false"].map((v) => ({ label: v, hint: "", insert: `${base}${v} ` }));
      }
      const more = remaining.map((o) => ({ label: `${o.name}:`, hint: describeOption(o), insert: `${text.trimEnd()} ${o.name}: ` }));
      return values.concat(more);
    }
    if (parsed.stage === "option") {
      const partial = parsed.word.split(/\s+/).pop() || "";
      const base = text.slice(0, text.length - partial.length).replace(/\s*$/, " ");
      return remaining
        .filter((o) => o.name.startsWith(partial))
        .map((o) => ({ label: `${o.name}:`, hint: describeOption(o), insert: `${base}${o.name}: ` }));
    }
    return [];
  }

  return { parse, suggest, describeOption };
})();
