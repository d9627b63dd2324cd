/**
 * Raw jose rates in this process (one thread): ES256 SignJWT and jwtVerify with a local key,
 * ~3 s each (BENCH_JOSE_SECONDS). The per-tool-call exchange does at least one verify (the agent
 * token) and one sign (the access token), so 1 / (1/sign + 1/verify) is the crypto-only ceiling
 * of one core.
 *
 *   node --import tsx bench/jose-raw.ts
 */
import { pathToFileURL } from 'node:url';
import { generateKeyPair, jwtVerify, SignJWT, type CryptoKey } from 'jose';

export interface JoseRates {
  signPerSec: number;
  verifyPerSec: number;
  /** Sign + verify pairs per second on one core. */
  signVerifyPerSec: number;
}

/** Operations per second of `op` over `seconds`, after a short warm-up; a promise it returns is awaited, a plain value is not. */
export async function timed(seconds: number, op: () => unknown): Promise<number> {
  // Short warm-up so the JIT and WebCrypto paths are hot.
  for (let i = 0; i < 200; i++) {
    const r = op();
    if (r instanceof Promise) await r;
  }
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  let n = 0;
  while (performance.now() < end) {
    // Batches keep the clock reads off the hot path.
    for (let i = 0; i < 50; i++) {
      const r = op();
      if (r instanceof Promise) await r;
    }
    n += 50;
  }
  return n / ((performance.now() - t0) / 1000);
}

function claims(i: number) {
  return {
    sub: 'dev://bench-agent',
    aud: 'billing-api',
    scope: 'invoices:read',
    task_id: 'tsk_0123456789abcdef',
    jti: `j${i}`,
  };
}

export async function measureJose(seconds = Number(process.env.BENCH_JOSE_SECONDS ?? 3)): Promise<JoseRates> {
  const { privateKey, publicKey } = (await generateKeyPair('ES256')) as { privateKey: CryptoKey; publicKey: CryptoKey };
  let i = 0;
  const sign = () =>
    new SignJWT(claims(i++))
      .setProtectedHeader({ alg: 'ES256', kid: 'bench', typ: 'at+jwt' })
      .setIssuer('https://agent-sts.bench.invalid')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(privateKey);
  const token = await sign();
  const verify = () => jwtVerify(token, publicKey, { issuer: 'https://agent-sts.bench.invalid', audience: 'billing-api', algorithms: ['ES256'] });
  const signPerSec = await timed(seconds, sign);
  const verifyPerSec = await timed(seconds, verify);
  return { signPerSec, verifyPerSec, signVerifyPerSec: 1 / (1 / signPerSec + 1 / verifyPerSec) };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await measureJose();
  console.log(`jose ES256 sign   ${Math.round(r.signPerSec)} ops/s`);
  console.log(`jose ES256 verify ${Math.round(r.verifyPerSec)} ops/s`);
  console.log(`sign+verify       ${Math.round(r.signVerifyPerSec)} pairs/s (one core)`);
}
