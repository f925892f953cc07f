/** Waiting with a deadline: every wait on a shutdown path is bounded by one. */

/** Resolves 'done' when `p` settles, or 'deadline' at `deadline` (epoch ms), whichever comes first; never rejects. */
export async function deadlineRace(p: Promise<unknown>, deadline: number): Promise<'done' | 'deadline'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'deadline'>((resolve) => (timer = setTimeout(() => resolve('deadline'), Math.max(0, deadline - Date.now()))));
  try {
    return await Promise.race([p.then(() => 'done' as const, () => 'done' as const), late]);
  } finally {
    clearTimeout(timer);
  }
}
