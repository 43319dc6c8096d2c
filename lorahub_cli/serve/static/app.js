// lora serve: copy buttons and the edit form. Loaded from /static (the page allows no inline script).
"use strict";

function say(id, text, ok) {
  const el = document.getElementById(id);
  if (el) { el.textContent = text; el.className = ok ? "ok" : "error"; }
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  try {
    await navigator.clipboard.writeText(button.dataset.copy);
    say("copy-status", "copied: " + button.dataset.copy, true);
  } catch (err) {
    say("copy-status", "could not copy (" + err + "): select the text instead", false);
  }
});

function list(value) {
  return value.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
}

async function post(name, what, token, body) {
  const response = await fetch("/api/adapters/" + encodeURIComponent(name) + "/" + what, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Lora-Token": token },
    body: JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw data.error || { code: "error", message: response.statusText };
  return data;
}

const form = document.getElementById("edit-form");
if (form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = form.dataset.name;
    const token = document.getElementById("edit-token").value;
    const add = list(document.getElementById("edit-add").value);
    const remove = list(document.getElementById("edit-remove").value);
    const triggers = document.getElementById("edit-triggers").value;
    const weight = document.getElementById("edit-weight").value.trim();
    try {
      if (add.length || remove.length) await post(name, "tags", token, { add: add, remove: remove });
      if (triggers.trim()) await post(name, "triggers", token, { trigger_words: list(triggers) });
      // not a number: sent as typed, so the server refuses it (Number("abc") would become null, a reset)
      if (weight) await post(name, "weight", token, { preferred_weight: Number.isFinite(Number(weight)) ? Number(weight) : weight });
      say("edit-status", "saved", true);
      window.location.reload();
    } catch (err) {
      say("edit-status", "refused [" + err.code + "]: " + err.message, false);
    }
  });
}
