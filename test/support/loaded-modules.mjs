// `node --import ./test/support/loaded-modules.mjs …`: at exit, writes every module the process
// loaded (ES modules as resolved URLs, CommonJS ones as paths from require.cache), one per line,
// to the file named by LOADED_MODULES_OUT. Lets a test check what start-up does not load.
import { createRequire, register } from 'node:module';
import { writeFileSync } from 'node:fs';
import { MessageChannel } from 'node:worker_threads';

const seen = new Set();
const { port1, port2 } = new MessageChannel();
port1.on('message', (url) => seen.add(url));
port1.unref();
register('./loaded-modules-hooks.mjs', import.meta.url, { data: { port: port2 }, transferList: [port2] });
const require = createRequire(import.meta.url);
process.on('exit', () => {
  for (const path of Object.keys(require.cache)) seen.add(path);
  writeFileSync(process.env.LOADED_MODULES_OUT, [...seen].join('\n'));
});
