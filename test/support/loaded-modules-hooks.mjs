// Module hooks (node:module register) that report every URL the ES module loader resolves to the
// thread that registered them. Used by loaded-modules.mjs.
let port;
export function initialize(data) {
  port = data.port;
}
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  port.postMessage(r.url);
  return r;
}
