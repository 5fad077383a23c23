"""Long short-term memory over batch-first sequences, with backpropagation through time."""

from __future__ import annotations

import numpy as np

from .recurrent import Recurrent, gate_saturation


# Backward transposes da (T, 4H, N) a block of steps at a time, about this many bytes: in cache.
BLOCK_BYTES = 1 << 19


class LSTM(Recurrent):
    """x: (N, T, D) -> (N, H), the last step, or (N, T, H) with return_sequences.

    As torch.nn.LSTM(D, H, batch_first=True) from a zero state. The gates i, f, g, o are the
    four H-row blocks of weight_ih_l0 (4H, D), weight_hh_l0 (4H, H), bias_ih_l0, bias_hh_l0:

        [i, f, g, o] = x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh, then sigmoid, sigmoid, tanh, sigmoid
        c_t = f * c_{t-1} + i * g
        h_t = o * tanh(c_t)
    """

    GATES = 4

    # Inside, the gates are in the order o, i, f, g (torch's rows rolled by H) and every step is
    # transposed: a step's state is states[t] = [o; i; f; g; c_{t-1}], (5H, N). Then the three
    # sigmoid gates are one block, [i; f] * [g; c_{t-1}] is one product (c_t the sum of its halves,
    # written into states[t + 1]), backward scales the i, f, g blocks by dc_t at once and the o
    # block by dh_t, and each block is contiguous: the per-step products run on whole blocks,
    # twice as fast as on the (N, H) column slices of an (N, 4H) array, and W_hh @ h_{t-1}.T is
    # the faster shape of the product.

    def _inside(self, a: np.ndarray) -> np.ndarray:
        """Return torch's (4H, ...) rows i, f, g, o in the inside order o, i, f, g."""
        return np.roll(a, self.hidden_size, axis=0)

    def forward(self, x, train, rng):
        p, hidden = self.params, self.hidden_size
        n, t, d = x.shape
        # sigmoid(a) = 0.5 * tanh(a / 2) + 0.5, which cannot overflow: with the o, i, f rows of the
        # weights halved, one tanh over all 4H pre-activations gives every gate (then * 0.5 + 0.5).
        scale = np.full((4 * hidden, 1), 0.5, x.dtype)
        scale[3 * hidden:] = 1
        # One product per step gives all 4H pre-activations: [W_hh, W_ih, b_ih + b_hh] against the
        # step's rows inputs[:, t] = [h_{t-1}; x_t; 1], (H + D + 1, N); h_t is written into inputs[:, t + 1].
        # Kept (H + D + 1, T + 1, N), so that backward's one product over all steps reads it as it is.
        weights = np.concatenate([self._inside(p["weight_hh_l0"]), self._inside(p["weight_ih_l0"]),
                                  self._inside(p["bias_ih_l0"] + p["bias_hh_l0"])[:, None]], axis=1)
        weights *= scale
        inputs = np.empty((hidden + d + 1, t + 1, n), x.dtype)
        inputs[:hidden, 0] = 0
        inputs[hidden:-1, :t] = x.transpose(2, 1, 0)
        inputs[-1, :t] = 1
        states = np.empty((t + 1, 5 * hidden, n), x.dtype)
        states[0, 4 * hidden:] = 0  # c_{-1}
        tanh_cs = np.empty((t, hidden, n), x.dtype)
        products = np.empty((2 * hidden, n), x.dtype)  # every step writes into slices: no temporaries
        for step in range(t):
            state = states[step]
            a = np.matmul(weights, inputs[:, step], out=state[:4 * hidden])
            np.tanh(a, out=a)
            sigmoids = state[:3 * hidden]  # o, i and f
            sigmoids *= 0.5
            sigmoids += 0.5
            np.multiply(state[hidden:3 * hidden], state[3 * hidden:], out=products)  # i g, f c_{t-1}
            c = np.add(products[:hidden], products[hidden:], out=states[step + 1, 4 * hidden:])
            np.multiply(state[:hidden], np.tanh(c, out=tanh_cs[step]), out=inputs[:hidden, step + 1])
        hs = inputs[:hidden, 1:]  # (H, T, N)
        y = hs.transpose(2, 1, 0) if self.return_sequences else hs[:, -1].T
        return y, (inputs, states, tanh_cs)

    def backward(self, dy, cache):
        dx = self._backprop_through_time(dy, cache, input_grad=True)  # (D, T N)
        n, t = dy.shape[0], cache[2].shape[0]
        return dx.reshape(-1, t, n).transpose(2, 1, 0)

    def backward_params(self, dy, cache):
        self._backprop_through_time(dy, cache, input_grad=False)

    def _backprop_through_time(self, dy, cache, input_grad: bool):
        """Add the parameter gradients; return the input gradient, (D, T N), if `input_grad`."""
        inputs, states, tanh_cs = cache
        hidden = self.hidden_size
        w_hh_t = np.ascontiguousarray(self._inside(self.params["weight_hh_l0"]).T)  # the faster layout
        t, _, n = tanh_cs.shape
        gates = states[:t, :4 * hidden]
        sigmoids, g = gates[:, :3 * hidden], gates[:, 3 * hidden:]
        o, i, f = (states[:t, k * hidden:(k + 1) * hidden] for k in range(3))
        # da starts as each gate's derivative w.r.t. its pre-activation times what the gate multiplies
        # (tanh(c_t) for o, g and c_{t-1} for i and f, i for g), for every step at once and in place;
        # the loop then scales the o block by dh_t and the i, f, g blocks by dc_t.
        da = np.empty_like(gates)
        da_sigmoids, da_g = da[:, :3 * hidden], da[:, 3 * hidden:]
        np.subtract(1, sigmoids, out=da_sigmoids)
        da_sigmoids *= sigmoids
        np.multiply(g, g, out=da_g)
        np.subtract(1, da_g, out=da_g)
        da[:, :hidden] *= tanh_cs
        da[:, hidden:3 * hidden] *= states[:t, 3 * hidden:]
        da_g *= i
        dc_from_h = tanh_cs * tanh_cs  # dh_t adds dh_t * o (1 - tanh(c_t)^2) to dc_t
        np.subtract(1, dc_from_h, out=dc_from_h)
        dc_from_h *= o
        if self.return_sequences:
            dh, dys = np.zeros((hidden, n), dy.dtype), dy.transpose(1, 2, 0)
        else:
            dh, dys = dy.T.copy(), None
        dc, from_h = np.zeros_like(dh), np.empty_like(dh)
        for step in range(t - 1, -1, -1):
            if dys is not None:
                dh += dys[step]
            dc += np.multiply(dh, dc_from_h[step], out=from_h)
            da[step, :hidden] *= dh
            da_ifg = da[step, hidden:].reshape(3, hidden, n)
            np.multiply(da_ifg, dc, out=da_ifg)
            if step > 0:  # h_{-1} is no parameter's input: no gradient for it
                dc *= f[step]
                np.matmul(w_hh_t, da[step], out=dh)
        # All four parameter gradients from products over the columns (t, n): da against the rows
        # [h_{t-1}; x_t; 1] of the forward's products (h_0 = 0; the ones give the biases'). Those
        # need da as (4H, t n): it is transposed a few steps at a time into a buffer that stays in
        # the cache, each block's products added up (one transpose of the whole da cost a fifth more).
        w_ih_t = self._inside(self.params["weight_ih_l0"]).T if input_grad else None
        dx = np.empty((w_ih_t.shape[0], t * n), da.dtype) if input_grad else None
        steps = max(1, BLOCK_BYTES // da[0].nbytes)
        block = np.empty((4 * hidden, min(steps, t), n), da.dtype)
        grads = None
        for start in range(0, t, steps):
            stop = min(t, start + steps)
            columns = block[:, :stop - start]
            np.copyto(columns, da[start:stop].transpose(1, 0, 2))
            columns = columns.reshape(4 * hidden, -1)
            product = columns @ inputs[:, start:stop].reshape(-1, (stop - start) * n).T
            grads = product if grads is None else np.add(grads, product, out=grads)
            if input_grad:
                np.matmul(w_ih_t, columns, out=dx[:, start * n:stop * n])
        grads = np.roll(grads, -hidden, axis=0)  # rows back in torch's order
        self._add("weight_hh_l0", grads[:, :hidden])
        self._add("weight_ih_l0", grads[:, hidden:-1])
        self._add("bias_ih_l0", grads[:, -1])
        self._add("bias_hh_l0", grads[:, -1])
        return dx

    def activation_stats(self, cache):
        """Return the saturated fraction of all gates together and of each gate (i, f, g, o)."""
        stats = gate_saturation(cache[1][:-1, :4 * self.hidden_size], "oifg", axis=1)  # g: the tanh gate
        stats["gates"] = {name: stats["gates"][name] for name in "ifgo"}
        return stats
