/**
 * Synthetic booking data from a known logistic ground truth (documented in
 * examples/README.md). One row = one (user, context, item) candidate:
 *
 *   user    u ∈ R^8  ~ N(0, I)            latent taste vector
 *   item    v ∈ R^8  ~ N(0, I)            latent item vector; v2 = popularity
 *   context c ∈ R^4: c0 weekend ∈ {0,1} (p = 2/7), c1 lead time ∈ U[0,1) (share of 90 days),
 *                    c2 mobile ∈ {0,1} (p = 0.6), c3 season ∈ [-1,1] (cos of the day of year)
 *
 *   logit = -1.5 + 1.5·(u·v)/√8 + 0.8·c0·v0 − 1.0·c1 − 0.4·c2 + 0.6·c3·v1 + 0.5·v2
 *   truth_prob = sigmoid(logit);  booked ~ Bernoulli(truth_prob)
 */
import { createRng } from './rng.js';

export const USER_DIM = 8;
export const CONTEXT_DIM = 4;
export const ITEM_DIM = 8;

export interface Bookings {
  rows: number;
  user: Float32Array;
  context: Float32Array;
  item: Float32Array;
  /** Ground-truth booking probability. */
  truthProb: Float32Array;
  /** 0/1 outcome drawn from truthProb: what a model would be trained on. */
  booked: Float32Array;
}

/** The ground-truth logit for one candidate (see the module comment). */
export function bookingLogit(u: ArrayLike<number>, c: ArrayLike<number>, v: ArrayLike<number>): number {
  let affinity = 0;
  for (let k = 0; k < USER_DIM; k++) affinity += (u[k] as number) * (v[k] as number);
  const [c0, c1, c2, c3] = [c[0] as number, c[1] as number, c[2] as number, c[3] as number];
  const [v0, v1, v2] = [v[0] as number, v[1] as number, v[2] as number];
  return -1.5 + (1.5 * affinity) / Math.sqrt(USER_DIM) + 0.8 * c0 * v0 - 1.0 * c1 - 0.4 * c2 + 0.6 * c3 * v1 + 0.5 * v2;
}

export function generateBookings(rows: number, seed: number): Bookings {
  const rng = createRng(seed);
  const out: Bookings = {
    rows,
    user: new Float32Array(rows * USER_DIM),
    context: new Float32Array(rows * CONTEXT_DIM),
    item: new Float32Array(rows * ITEM_DIM),
    truthProb: new Float32Array(rows),
    booked: new Float32Array(rows),
  };
  for (let r = 0; r < rows; r++) {
    const u = out.user.subarray(r * USER_DIM, (r + 1) * USER_DIM);
    const c = out.context.subarray(r * CONTEXT_DIM, (r + 1) * CONTEXT_DIM);
    const v = out.item.subarray(r * ITEM_DIM, (r + 1) * ITEM_DIM);
    for (let k = 0; k < USER_DIM; k++) u[k] = rng.normal();
    for (let k = 0; k < ITEM_DIM; k++) v[k] = rng.normal();
    c[0] = rng.next() < 2 / 7 ? 1 : 0;
    c[1] = rng.next();
    c[2] = rng.next() < 0.6 ? 1 : 0;
    c[3] = Math.cos((2 * Math.PI * rng.int(365)) / 365);
    // The truth is computed from the stored float32 values, so a checker can recompute it.
    const p = 1 / (1 + Math.exp(-bookingLogit(u, c, v)));
    out.truthProb[r] = p;
    out.booked[r] = rng.next() < p ? 1 : 0;
  }
  return out;
}
