"""Long short-term memory over batch-first sequences, with backpropagation through time."""

from __future__ import annotations

import numpy as np

from .recurrent import Recurrent, gate_saturation


class LSTM(Recurrent):
    """x: (N, T, D) -> (N, H), the last step, or (N, T, H) with return_sequences.

    As torch.nn.LSTM(D, H, batch_first=True) from a zero state. The gates i, f, g, o are the
    four H-row blocks of weight_ih_l0 (4H, D), weight_hh_l0 (4H, H), bias_ih_l0, bias_hh_l0:

        [i, f, g, o] = x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh, then sigmoid, sigmoid, tanh, sigmoid
        c_t = f * c_{t-1} + i * g
        h_t = o * tanh(c_t)
    """

    GATES = 4

    # Inside, every step is kept transposed, gates (4H, N) and states (H, N): each gate's block is
    # then contiguous (the per-step products run on whole blocks, twice as fast as on the (N, H)
    # column slices of an (N, 4H) array) and W_hh @ h_{t-1}.T is the faster shape of the product.

    def forward(self, x, train, rng):
        p, hidden = self.params, self.hidden_size
        # sigmoid(a) = 0.5 * tanh(a / 2) + 0.5, which cannot overflow: with the i, f, o rows of the
        # weights halved, one tanh over all 4H pre-activations gives every gate (then * 0.5 + 0.5).
        scale = np.full((4 * hidden, 1), 0.5, x.dtype)
        scale[2 * hidden:3 * hidden] = 1
        w_hh = p["weight_hh_l0"] * scale
        n, t, d = x.shape
        xt = np.ascontiguousarray(x.transpose(2, 1, 0)).reshape(d, t * n)  # (D, T N), columns step-major
        # Every step's input projection W_ih x_t.T + both biases, (T, 4H, N), in one stacked matmul.
        gates = np.matmul(p["weight_ih_l0"] * scale, xt.reshape(d, t, n).transpose(1, 0, 2))
        gates += (p["bias_ih_l0"] + p["bias_hh_l0"])[:, None] * scale
        i, f, g, o = self._split(gates)
        cs = np.empty((t, hidden, n), x.dtype)
        tanh_cs, hs = np.empty_like(cs), np.empty_like(cs)
        # Every step writes into these and into slices of the arrays above: no temporaries in the loop.
        recurrent, carried = np.empty((4 * hidden, n), x.dtype), np.empty((hidden, n), x.dtype)
        for step in range(t):
            a = gates[step]
            if step > 0:
                a += np.matmul(w_hh, hs[step - 1], out=recurrent)
            np.tanh(a, out=a)
            for sigmoid in (a[:2 * hidden], a[3 * hidden:]):  # i, f and o
                sigmoid *= 0.5
                sigmoid += 0.5
            c = np.multiply(i[step], g[step], out=cs[step])
            if step > 0:
                c += np.multiply(f[step], cs[step - 1], out=carried)
            np.multiply(o[step], np.tanh(c, out=tanh_cs[step]), out=hs[step])
        y = hs.transpose(2, 0, 1) if self.return_sequences else hs[-1].T
        return y, (xt, gates, cs, tanh_cs, hs)

    def _split(self, a: np.ndarray) -> tuple[np.ndarray, ...]:
        """Return the i, f, g, o views of (T, 4H, ...)."""
        hidden = self.hidden_size
        return tuple(a[:, k * hidden:(k + 1) * hidden] for k in range(4))

    def backward(self, dy, cache):
        da = self._backward_through_time(dy, cache)
        n, t = dy.shape[0], cache[1].shape[0]
        dx = self.params["weight_ih_l0"].T @ da  # (D, T N)
        return dx.reshape(-1, t, n).transpose(2, 1, 0)

    def _backward_through_time(self, dy, cache):
        """Add the parameter gradients; return the gradients of the gates' pre-activations, (4H, T N)."""
        xt, gates, cs, tanh_cs, hs = cache
        hidden = self.hidden_size
        w_hh_t = np.ascontiguousarray(self.params["weight_hh_l0"].T)  # the faster layout for the per-step product
        t, _, n = gates.shape
        i, f, g, o = self._split(gates)
        # da starts as each gate's derivative w.r.t. its pre-activation, for every step at once
        # (written in place: no (T, 4H, N) temporaries).
        da = np.subtract(1, gates)
        da *= gates
        da_g = np.multiply(g, g, out=da[:, 2 * hidden:3 * hidden])
        np.subtract(1, da_g, out=da_g)
        dc_from_h = tanh_cs * tanh_cs  # dh_t adds dh_t * o (1 - tanh(c_t)^2) to dc_t
        np.subtract(1, dc_from_h, out=dc_from_h)
        dc_from_h *= o
        if self.return_sequences:
            dh, dys = np.zeros((hidden, n), dy.dtype), dy.transpose(1, 2, 0)
        else:
            dh, dys = dy.T.copy(), None
        local = np.empty((1, 4 * hidden, n), gates.dtype)
        di, df, dg, do = (part[0] for part in self._split(local))
        dc, from_h = np.zeros_like(dh), np.empty_like(dh)
        for step in range(t - 1, -1, -1):
            if dys is not None:
                dh += dys[step]
            dc += np.multiply(dh, dc_from_h[step], out=from_h)
            np.multiply(dc, g[step], out=di)
            if step > 0:
                np.multiply(dc, cs[step - 1], out=df)
            else:
                df.fill(0)
            np.multiply(dc, i[step], out=dg)
            np.multiply(dh, tanh_cs[step], out=do)
            da[step] *= local[0]
            dc *= f[step]
            np.matmul(w_hh_t, da[step], out=dh)
        # All four parameter gradients in one matmul over the columns (t, n): da against the rows
        # [x_t; h_{t-1}; 1] (h_0 = 0; the ones give the biases').
        d = xt.shape[0]
        da = np.ascontiguousarray(da.transpose(1, 0, 2)).reshape(4 * hidden, t * n)
        inputs = np.empty((d + hidden + 1, t, n), da.dtype)
        inputs[:d] = xt.reshape(d, t, n)
        inputs[d:-1, 0] = 0
        inputs[d:-1, 1:] = hs[:-1].transpose(1, 0, 2)
        inputs[-1] = 1
        grads = da @ inputs.reshape(-1, t * n).T
        self._add("weight_ih_l0", grads[:, :d])
        self._add("weight_hh_l0", grads[:, d:-1])
        self._add("bias_ih_l0", grads[:, -1])
        self._add("bias_hh_l0", grads[:, -1])
        return da

    def activation_stats(self, cache):
        """Return the saturated fraction of all gates together and of each gate (i, f, g, o)."""
        return gate_saturation(cache[1].transpose(0, 2, 1), "ifgo", tanh_gates="g")
