import { describe, expect, it } from 'vitest';
import { childArgs } from './child-args.js';

describe("a child's arguments", () => {
  it("drop --devices, --device and --http-port in both forms and add the child's own, before any operands", () => {
    const user = ['--log-level', 'info', 'worker', '--devices', 'cuda:0,cuda:1', '--queue', 'q', '--device=cuda:7', '--http-port', '9000', '--devices=all', '--http-port=1', '--models', 'a,b'];
    expect(childArgs(user, 'cuda:1', 9002)).toEqual(['--log-level', 'info', 'worker', '--queue', 'q', '--models', 'a,b', '--device', 'cuda:1', '--http-port', '9002']);
    expect(childArgs(['worker', '--devices', 'all', '--', '--devices'], 'cuda:0', 0)).toEqual(['worker', '--device', 'cuda:0', '--http-port', '0', '--', '--devices']);
  });
});
