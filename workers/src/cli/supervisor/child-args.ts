/**
 * The command line of one child worker: the supervisor's own (same Node flags, same script,
 * same arguments) less `--devices`, `--device` and `--http-port`, plus the child's own
 * `--device` and `--http-port`.
 */

/** Options whose value the supervisor sets per child (each takes one value). */
const REPLACED = ['--devices', '--device', '--http-port'];

export interface ChildCommand {
  readonly file: string;
  readonly args: readonly string[];
}

/** `argv` is the user's arguments (process.argv after the script). */
export function childArgs(argv: readonly string[], device: string, httpPort: number): string[] {
  const out: string[] = [];
  let rest: readonly string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      rest = argv.slice(i); // operands: the child's options go before them
      break;
    }
    if (REPLACED.includes(arg)) {
      i++; // and its value
      continue;
    }
    if (REPLACED.some((name) => arg.startsWith(`${name}=`))) continue;
    out.push(arg);
  }
  return [...out, '--device', device, '--http-port', String(httpPort), ...rest];
}

/** Re-runs this CLI (the Node binary, its flags such as a loader, the script) with `args`. */
export function selfCommand(args: readonly string[]): ChildCommand {
  const script = process.argv[1];
  return { file: process.execPath, args: [...process.execArgv, ...(script === undefined ? [] : [script]), ...args] };
}
