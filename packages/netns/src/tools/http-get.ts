// qn-http-get URL [--timeout MS] [--json]
// GET over plain HTTP. Prints the body (or with --json one line {"status","body","headers",
// "remote"}); exit 0 on 2xx, 1 on another status, 3 on a connection error or timeout.
import { request } from 'node:http';
import { intOption, parseArgs, usageExit } from './args.js';

const USAGE = 'qn-http-get URL [--timeout MS] [--json]';
let url: URL, timeoutMs: number, json: boolean;
try {
  const args = parseArgs(process.argv.slice(2), ['--timeout'], ['--json']);
  if (args.positional.length !== 1) throw new Error('one URL expected');
  url = new URL(args.positional[0]!);
  if (url.protocol !== 'http:') throw new Error('only http:// URLs');
  timeoutMs = intOption(args, '--timeout', 3000);
  json = args.flags.has('--json');
} catch (err) {
  usageExit('qn-http-get', USAGE, err);
}

const fail = (error: string) => {
  if (json) process.stdout.write(JSON.stringify({ status: 0, error }) + '\n');
  else process.stderr.write(`qn-http-get: ${error}\n`);
  process.exit(3);
};
const timer = setTimeout(() => fail(`timeout after ${timeoutMs} ms`), timeoutMs);
const req = request(url, { method: 'GET', agent: false, headers: { connection: 'close' } }, (res) => {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('end', () => {
    clearTimeout(timer);
    const body = Buffer.concat(chunks).toString('utf8');
    const status = res.statusCode ?? 0;
    if (json) process.stdout.write(JSON.stringify({ status, body, headers: res.headers, remote: res.socket?.remoteAddress }) + '\n');
    else process.stdout.write(body);
    process.exit(status >= 200 && status < 300 ? 0 : 1);
  });
  res.on('error', (e) => fail(e.message));
});
req.on('error', (e) => fail(e.message));
req.end();
