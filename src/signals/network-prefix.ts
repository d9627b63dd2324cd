import { isIPv4, isIPv6 } from 'node:net';

const MAPPED_V4 = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i;

/**
 * The client network of an address, as the `new_network` signal compares it: the /24 of an IPv4
 * address (`10.1.2.0/24`), the /64 of an IPv6 address (`2001:db8:0:1::/64`); an IPv4-mapped IPv6
 * address (`::ffff:10.1.2.3`, what a dual-stack socket reports) counts as its IPv4 address.
 * Undefined for anything that is not an IP address (a missing or unparsable client address).
 */
export function networkOf(address: string | undefined): string | undefined {
  if (!address) return undefined;
  const known = cache.get(address);
  if (known !== undefined) return known || undefined;
  const net = parse(address);
  // Bounded: clients come from a limited set of addresses; forgetting them all costs a re-parse.
  if (cache.size >= CACHE_MAX) cache.clear();
  cache.set(address, net ?? '');
  return net;
}

const CACHE_MAX = 10_000;
const cache = new Map<string, string>();

function parse(address: string): string | undefined {
  const mapped = MAPPED_V4.exec(address);
  const a = mapped ? mapped[1]! : address;
  if (isIPv4(a)) return `${a.split('.').slice(0, 3).join('.')}.0/24`;
  // Zone ids (fe80::1%eth0) are local to the host: the network is the address's.
  const bare = a.split('%')[0]!;
  if (!isIPv6(bare)) return undefined;
  const groups = expandIPv6(bare);
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address, lower-case hex (an embedded IPv4 tail converted). */
function expandIPv6(address: string): string[] {
  let text = address.toLowerCase();
  const v4 = /(\d{1,3}(?:\.\d{1,3}){3})$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4[1]!.split('.').map(Number) as [number, number, number, number];
    text = `${text.slice(0, -v4[1]!.length)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const zeros = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...zeros, ...right];
}
