// Trains a small network to fit y = sin(x) on a gradserve server, printing the loss as it falls.
//
//   node clients/js/example.mjs [BASE_URL]      (default $GRADSERVE_BASE_URL, then http://127.0.0.1:8000)
//
// STEPS (env, default 120) sets the number of training steps; GRADSERVE_API_KEY the key.
import { Client, tensor } from "./gradserve.mjs";

const client = new Client(process.argv[2] ?? process.env.GRADSERVE_BASE_URL ?? "http://127.0.0.1:8000");
const steps = Number(process.env.STEPS ?? 120);

// 64 points of sin(x) on [-3, 3]: x (N, 1) and y (N, 1), float32 as the model.
const N = 64;
const x = new Float32Array(N);
const y = new Float32Array(N);
for (let i = 0; i < N; i++) {
  x[i] = -3 + (6 * i) / (N - 1);
  y[i] = Math.sin(x[i]);
}

const model = await client.createModel({
  layers: [
    { type: "linear", in_features: 1, out_features: 32 },
    { type: "tanh" },
    { type: "linear", out_features: 1 },
  ],
  loss: { type: "mse" },
  optimizer: { type: "adam", lr: 0.02 },
  seed: 0,
});
console.log(`model ${model.id} created at ${client.baseUrl}`);

try {
  for (let step = 1; step <= steps; step++) {
    const { loss } = await model.trainStep(tensor(x, [N, 1]), tensor(y, [N, 1]));
    if (step === 1 || step % 20 === 0 || step === steps) {
      console.log(`step ${step} loss ${Number(loss).toFixed(6)}`);
    }
  }
  const { outputs } = await model.forward(tensor(x, [N, 1]));
  console.log(`sin(${x[48].toFixed(3)}) = ${y[48].toFixed(3)}, model says ${outputs.data[48].toFixed(3)}`);
} finally {
  await model.delete();
}
