/** Opening a bare RESP2 socket to the server an ioredis client of the same URL talks to. */
import { isIP, connect as netConnect } from 'node:net';
import type { OnReadOpts, Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { ConnectionOptions } from 'node:tls';
import { DataIOError } from '@inferq/shared';

/** Where to connect: the fields of an ioredis client's parsed `options` that matter here. */
export interface RespEndpoint {
  readonly host?: string | undefined;
  readonly port?: number | undefined;
  /** A unix socket, instead of host and port. */
  readonly path?: string | undefined;
  readonly username?: string | null | undefined;
  readonly password?: string | null | undefined;
  readonly db?: number | null | undefined;
  /** ioredis leaves `true` here for a rediss:// URL. */
  readonly tls?: ConnectionOptions | boolean | undefined;
}

/** host:port (IPv6 in brackets) or the unix socket path, for messages. */
export function endpointName(endpoint: RespEndpoint): string {
  const host = endpoint.host ?? '127.0.0.1';
  return endpoint.path ?? `${host.includes(':') ? `[${host}]` : host}:${endpoint.port ?? 6379}`;
}

/**
 * Connects (TCP, unix socket or TLS) within `timeoutMs`. `onread` (plain sockets only: TLS
 * sockets ignore it) reads into one buffer of the caller's instead of a new one per read.
 */
export async function openRespSocket(endpoint: RespEndpoint, timeoutMs: number, onread?: OnReadOpts): Promise<Socket> {
  const host = endpoint.host ?? '127.0.0.1';
  const port = endpoint.port ?? 6379;
  const where = endpointName(endpoint);
  return new Promise<Socket>((resolve, reject) => {
    const tls = endpoint.tls === true ? {} : endpoint.tls === false ? undefined : endpoint.tls;
    const s =
      tls !== undefined
        ? tlsConnect({ ...tls, ...(endpoint.path === undefined ? { host, port } : { path: endpoint.path }), ...(tls.servername === undefined && isIP(host) === 0 ? { servername: host } : {}) })
        : endpoint.path !== undefined
          ? netConnect({ path: endpoint.path, ...(onread === undefined ? {} : { onread }) })
          : netConnect({ host, port, ...(onread === undefined ? {} : { onread }) });
    const ready = tls !== undefined ? 'secureConnect' : 'connect';
    const fail = (err: Error): void => {
      clearTimeout(timer);
      reject(new DataIOError(`redis ${where}: ${err.message}`, { retriable: true, cause: err }));
    };
    const timer = setTimeout(() => {
      s.off('error', fail);
      s.destroy();
      reject(new DataIOError(`redis ${where}: no connection within ${timeoutMs} ms`, { retriable: true }));
    }, timeoutMs);
    s.once('error', fail);
    s.once(ready, () => {
      clearTimeout(timer);
      s.off('error', fail);
      s.setNoDelay(true);
      // A peer that vanishes without a reset is noticed, so a waiting command fails instead of hanging.
      s.setKeepAlive(true, 30_000);
      resolve(s);
    });
  });
}

/** The commands that log a new connection in: AUTH when there is a password, SELECT for a database other than 0. */
export function loginCommands(endpoint: RespEndpoint): string[][] {
  const commands: string[][] = [];
  const user = endpoint.username ?? '';
  const password = endpoint.password ?? '';
  if (password !== '') commands.push(['AUTH', ...(user === '' ? [] : [user]), password]);
  const db = endpoint.db ?? 0;
  if (db !== 0) commands.push(['SELECT', String(db)]);
  return commands;
}

/** One command as RESP2 bytes. */
export function encodeCommand(args: readonly string[]): Buffer {
  let text = `*${args.length}\r\n`;
  for (const a of args) text += `$${Buffer.byteLength(a)}\r\n${a}\r\n`;
  return Buffer.from(text);
}
