// gradserve client for Node 18+ (built-in fetch), no dependencies, binary tensor form.
//
//   import { Client, tensor } from "./gradserve.mjs";
//   const client = new Client("http://127.0.0.1:8000");
//   const model = await client.createModel({ layers: [...], loss: { type: "mse" } });
//   const { loss } = await model.trainStep(tensor(new Float32Array([...]), [N, D]), targets);
//
// A tensor is { shape: [..], data: TypedArray }: Float32Array (FP32), Float64Array (FP64),
// Int32Array (INT32) or BigInt64Array (INT64). Requests carry tensors in the binary form of
// DESIGN.md section 3 (JSON part, then each tensor's little-endian bytes in the order the
// tensor objects appear in the JSON text) and ask for answers in the same form.

const JSON_LENGTH_HEADER = "Inference-Header-Content-Length";

const DATATYPES = {
  FP32: Float32Array,
  FP64: Float64Array,
  INT32: Int32Array,
  INT64: BigInt64Array,
};

// Typed arrays use the host's byte order; the wire is little-endian.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("gradserve.mjs needs a little-endian host");
}

/** Returns a tensor: `data` (a TypedArray) viewed with `shape` (row-major). */
export function tensor(data, shape = [data.length]) {
  const size = shape.reduce((a, b) => a * b, 1);
  if (size !== data.length) {
    throw new Error(`shape [${shape}] needs ${size} values, got ${data.length}`);
  }
  return { shape, data };
}

/** An error answer from the server: `status`, `code` and `detail` as in DESIGN.md section 6. */
export class GradserveError extends Error {
  constructor(status, code, detail) {
    super(`${status} ${code ?? "error"}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    this.name = "GradserveError";
    Object.assign(this, { status, code, detail });
  }
}

function datatypeOf(data) {
  for (const [name, Type] of Object.entries(DATATYPES)) {
    if (data instanceof Type) return name;
  }
  throw new TypeError(`unsupported tensor data: ${data?.constructor?.name}`);
}

function isTensor(value) {
  return value !== null && typeof value === "object" && Array.isArray(value.shape) && ArrayBuffer.isView(value.data);
}

// Returns the JSON part (tensors as binary tensor objects) and fills `buffers` in text order.
function toWire(value, buffers) {
  if (isTensor(value)) {
    const bytes = new Uint8Array(value.data.buffer, value.data.byteOffset, value.data.byteLength);
    buffers.push(bytes);
    return {
      shape: value.shape,
      datatype: datatypeOf(value.data),
      parameters: { binary_data_size: bytes.byteLength },
    };
  }
  if (Array.isArray(value)) return value.map((v) => toWire(v, buffers));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toWire(v, buffers)]));
  }
  return value;
}

/** Returns the request body and headers for a payload whose tensors go in binary form. */
export function encode(payload) {
  const buffers = [];
  const document = toWire(payload, buffers);
  if (buffers.length === 0) {
    return { body: JSON.stringify(document), headers: { "Content-Type": "application/json" } };
  }
  document.binary_data_output = true;
  const head = new TextEncoder().encode(JSON.stringify(document));
  const body = new Uint8Array(head.byteLength + buffers.reduce((n, b) => n + b.byteLength, 0));
  let offset = 0;
  for (const part of [head, ...buffers]) {
    body.set(part, offset);
    offset += part.byteLength;
  }
  const headers = { "Content-Type": "application/octet-stream", [JSON_LENGTH_HEADER]: String(head.byteLength) };
  return { body, headers };
}

// Object keys that look like integers come first in JS's key order, unlike JSON text order;
// tensors only sit under named keys (outputs, input_grad, "0.weight", ...), so the walk holds.
function fromWire(value, binary) {
  if (Array.isArray(value)) return value.map((v) => fromWire(v, binary));
  if (value === null || typeof value !== "object") return value;
  if ("datatype" in value && "shape" in value && ("data" in value || "parameters" in value)) {
    const Type = DATATYPES[value.datatype];
    const size = value.parameters?.binary_data_size;
    if (size !== undefined) {
      const bytes = binary.bytes.slice(binary.offset, binary.offset + size); // copy: aligned
      binary.offset += size;
      return tensor(new Type(bytes.buffer), value.shape);
    }
    const flat = value.data.flat(Infinity);
    const data = Type === BigInt64Array ? BigInt64Array.from(flat, BigInt) : Type.from(flat, Number);
    return tensor(data, value.shape); // Number("NaN"), Number("Infinity") decode the named values
  }
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fromWire(v, binary)]));
}

/** Returns the decoded body of a response: JSON, with every tensor object as a tensor. */
export async function decode(response) {
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (bytes.byteLength === 0) return null;
  const length = response.headers.get(JSON_LENGTH_HEADER);
  const n = length === null ? bytes.byteLength : Number(length);
  const document = JSON.parse(new TextDecoder().decode(bytes.subarray(0, n)));
  const binary = { bytes: bytes.subarray(n), offset: 0 };
  const decoded = fromWire(document, binary);
  if (binary.offset !== binary.bytes.byteLength) throw new Error("binary part does not match its tensors");
  return decoded;
}

export class Client {
  /** `baseUrl` defaults to $GRADSERVE_BASE_URL, `apiKey` to $GRADSERVE_API_KEY. */
  constructor(baseUrl = process.env.GRADSERVE_BASE_URL ?? "http://127.0.0.1:8000", options = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.apiKey = options.apiKey ?? process.env.GRADSERVE_API_KEY;
    this.timeoutMs = options.timeoutMs ?? 60_000;
  }

  /** Returns the decoded answer to METHOD path (payload: JSON-able, tensors anywhere). */
  async request(method, path, payload) {
    const { body, headers } = payload === undefined ? { body: undefined, headers: {} } : encode(payload);
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    const response = await fetch(this.baseUrl + path, {
      method,
      headers,
      body,
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    if (!response.ok) {
      const text = await response.text();
      let answer;
      try {
        answer = JSON.parse(text);
      } catch {
        answer = { detail: text };
      }
      throw new GradserveError(response.status, answer.code, answer.detail);
    }
    return decode(response);
  }

  /** Returns a new RemoteModel built from `spec` (DESIGN.md section 4). */
  async createModel(spec) {
    return new RemoteModel(this, await this.request("POST", "/v1/models", spec));
  }

  /** Returns the existing model `id`. */
  async model(id) {
    return new RemoteModel(this, await this.request("GET", `/v1/models/${encodeURIComponent(id)}`));
  }

  /** Returns every model visible to this client's key. */
  async listModels() {
    const { models } = await this.request("GET", "/v1/models");
    return models.map((info) => new RemoteModel(this, info));
  }
}

export class RemoteModel {
  constructor(client, info) {
    this.client = client;
    this.info = info;
    this.id = info.id;
  }

  #call(method, suffix, payload) {
    return this.client.request(method, `/v1/models/${encodeURIComponent(this.id)}${suffix}`, payload);
  }

  /** Returns { outputs, tape_id? }; keepTape stores the tape for backward. */
  forward(inputs, { train = false, keepTape = false } = {}) {
    return this.#call("POST", "/forward", { inputs, train, keep_tape: keepTape });
  }

  /** Returns { loss?, grad_norm, accumulated, input_grad? }; pass targets or gradOutput. */
  backward(tapeId, { targets, gradOutput, returnInputGrad = false } = {}) {
    return this.#call("POST", "/backward", {
      tape_id: tapeId, ...objective(targets, gradOutput), return_input_grad: returnInputGrad,
    });
  }

  /** Returns { loss, grad_norm, accumulated, outputs?, input_grad? }; gradients accumulate. */
  forwardBackward(inputs, { targets, gradOutput, returnOutputs = false, returnInputGrad = false } = {}) {
    return this.#call("POST", "/forward_backward", {
      inputs, ...objective(targets, gradOutput), return_outputs: returnOutputs, return_input_grad: returnInputGrad,
    });
  }

  /** Returns { step, lr, grad_norm, update_norm } after applying the accumulated gradients. */
  step({ lr } = {}) {
    return this.#call("POST", "/step", lr === undefined ? {} : { lr });
  }

  /** Clears the accumulated gradients. */
  zeroGrad() {
    return this.#call("POST", "/zero_grad", {});
  }

  /** Returns { loss, step, lr, grad_norm, update_norm }: forward_backward + step in one round trip. */
  trainStep(inputs, targets) {
    return this.#call("POST", "/train_step", { inputs, targets });
  }

  /** Returns { name: tensor } of the parameters. */
  async parameters() {
    return (await this.#call("GET", "/parameters?binary_data_output=true")).parameters;
  }

  /** Replaces the parameters ({ name: tensor }, shapes as the model's); returns the model info. */
  loadParameters(parameters) {
    return this.#call("PUT", "/parameters", { parameters });
  }

  /** Returns { name: tensor } of the accumulated gradients. */
  async gradients() {
    return (await this.#call("GET", "/gradients?binary_data_output=true")).gradients;
  }

  /** Deletes the model on the server. */
  delete() {
    return this.#call("DELETE", "");
  }
}

function objective(targets, gradOutput) {
  if ((targets === undefined) === (gradOutput === undefined)) {
    throw new TypeError("pass exactly one of targets and gradOutput");
  }
  return targets !== undefined ? { targets } : { grad_output: gradOutput };
}
