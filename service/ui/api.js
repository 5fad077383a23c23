// The /v1 API as the dashboard reads it: JSON over fetch, with the API key (when the server
// wants one) kept in sessionStorage and sent only as an `Authorization: Bearer` header,
// never in a URL. A 401 asks for the key again.

const KEY = "gradserve.apiKey";
const wanted = document.querySelector('meta[name="gradserve-api-keys"]')?.content === "required";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let asking = null; // the pending key prompt, shared by every request waiting for it

/** Gives the JSON body of GET `path`, or throws ApiError (status, code, the server's message). */
export async function getJSON(path) {
  for (;;) {
    if (wanted && !sessionStorage.getItem(KEY)) await askForKey();
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY);
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 401) {
      sessionStorage.removeItem(KEY);
      await askForKey(key ? "The server refused that key: try another." : "This server wants an API key.");
      continue;
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, body?.code, message(body) || response.statusText);
    return body;
  }
}

function message(body) {
  const detail = body?.detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg ?? JSON.stringify(d)).join("; ");
  return typeof detail === "string" ? detail : "";
}

/** Gives a promise that resolves once the user has entered a key (one form, however many wait). */
function askForKey(reason = "This server wants an API key.") {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const form = document.createElement("form");
    form.id = "key-form";
    form.className = "key-form";
    form.autocomplete = "off";
    // The input has no name: even a submit that escaped preventDefault puts nothing in a URL.
    const label = document.createElement("label");
    label.textContent = `${reason} Key: `;
    const input = document.createElement("input");
    input.type = "password";
    input.id = "api-key";
    input.required = true;
    input.placeholder = "one of GRADSERVE_API_KEYS";
    label.append(input);
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Use key";
    const note = document.createElement("p");
    note.className = "note";
    note.textContent = "Kept in this tab's sessionStorage only, and sent as an Authorization: Bearer header.";
    form.append(label, button, note);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY, key);
      form.remove();
      asking = null;
      resolve();
    });
    document.querySelector("main").prepend(form);
    input.focus();
    const status = document.getElementById("status");
    if (status) status.textContent = "Waiting for an API key…";
  });
  return asking;
}
